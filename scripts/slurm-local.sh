#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for tests/test_slurm.py (the `--executor slurm` path
# run against a real Slurm) and for trying `presa-bench sweep --executor slurm` without a cluster.
#
#   scripts/slurm-local.sh [--install] start   # write the configs, start munged, MariaDB, slurmdbd,
#                                              # slurmctld and slurmd; wait until the node is idle
#   scripts/slurm-local.sh status              # exit 0 when the node answers
#   scripts/slurm-local.sh stop                # stop the daemons this script started
#
# Run as root. Debian packages: slurm-wlm munge slurmdbd mariadb-server (`--install` apt-gets them).
# Idempotent: `start` on a running cluster only checks it. Choices, for containers and CI machines:
# no cgroups (proctrack/linuxproc, task/none: containers often lack cgroup v2 delegation), no
# resource accounting (jobacct_gather/none), select/cons_tres with CR_CPU (one job per CPU, memory
# not scheduled), SlurmUser root. Accounting storage is slurmdbd on a local MariaDB because submitit
# reads job states with `sacct`: without it a cancelled job would look UNKNOWN (not done) forever.
# Everything but /etc/slurm/slurm.conf and /etc/slurm/slurmdbd.conf lives under $PRESA_SLURM_DIR
# (default /var/tmp/presa-slurm); an /etc/slurm/slurm.conf not written by this script is never
# overwritten.
set -euo pipefail

DIR=${PRESA_SLURM_DIR:-/var/tmp/presa-slurm}
CONF=/etc/slurm/slurm.conf
DBDCONF=/etc/slurm/slurmdbd.conf
MARK="# written by presa-bench scripts/slurm-local.sh"
HOST=$(hostname -s)
CLUSTER=presa-local
PARTITION=debug
DB_SOCKET=/run/mysqld/mysqld.sock  # the client library default, where slurmdbd looks

say() { echo "slurm-local: $*"; }
die() { echo "slurm-local: $*" >&2; exit 1; }
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }
node_state() { { timeout 10 sinfo -h -N -n "$HOST" -o %T 2>/dev/null || true; } | head -1 | tr -d '*~#'; }

# Wait up to $2 seconds for the command in $3.. to succeed; $1 names what is awaited.
wait_for() {
    local what=$1 limit=$2; shift 2
    for ((i = 0; i < limit * 2; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "$what did not come up in ${limit}s (logs: $DIR/log/)"
}

install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge slurmdbd mariadb-server
}

write_configs() {
    mkdir -p "$DIR"/{ctld,d,log,run,mysql} /etc/slurm
    if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script: not touching a real cluster's config"
    fi
    # The node line as slurmd itself detects the hardware (CPUs, sockets, cores, RealMemory).
    local node
    node=$(slurmd -C | head -1)
    cat >"$CONF" <<EOF
$MARK: a one-node cluster for tests.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
MinJobAge=300
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    if [[ -f $DBDCONF ]] && ! grep -qF "$MARK" "$DBDCONF"; then
        die "$DBDCONF exists and was not written by this script"
    fi
    cat >"$DBDCONF" <<EOF
$MARK
AuthType=auth/munge
DbdHost=$HOST
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageLoc=slurm_acct_db
StorageUser=root
EOF
    chmod 600 "$DBDCONF"
}

start_munge() {
    if pgrep -x munged >/dev/null && munge -n </dev/null | unmunge >/dev/null 2>&1; then
        return
    fi
    [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged
    wait_for munged 20 bash -c 'munge -n </dev/null | unmunge'
}

start_mariadb() {
    if mysqladmin --socket="$DB_SOCKET" ping >/dev/null 2>&1; then
        return
    fi
    mkdir -p /run/mysqld
    if [[ ! -d $DIR/mysql/data/mysql ]]; then
        mariadb-install-db --user=root --datadir="$DIR/mysql/data" --auth-root-authentication-method=normal \
            >"$DIR/log/mariadb-install.log" 2>&1
    fi
    setsid nohup /usr/sbin/mariadbd --user=root --datadir="$DIR/mysql/data" --socket="$DB_SOCKET" \
        --bind-address=127.0.0.1 --port=3306 --pid-file="$DIR/run/mariadb.pid" \
        --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 --skip-log-bin >"$DIR/log/mariadb.log" 2>&1 </dev/null &
    wait_for MariaDB 60 mysqladmin --socket="$DB_SOCKET" ping
}

start_daemon() {  # name, pid file, command...
    local name=$1 pidfile=$2; shift 2
    alive "$pidfile" && return
    "$@" || die "$name failed to start (log: $DIR/log/$name.log)"
    wait_for "$name" 30 alive "$pidfile"
}

start() {
    [[ $(id -u) == 0 ]] || die "run as root (it starts munged, MariaDB and the Slurm daemons)"
    for bin in slurmctld slurmd slurmdbd munged mariadbd sinfo; do
        command -v "$bin" >/dev/null || [[ -x /usr/sbin/$bin ]] ||
            die "$bin not found: apt-get install slurm-wlm munge slurmdbd mariadb-server (or run with --install)"
    done
    if [[ $(node_state) == idle || $(node_state) == mixed || $(node_state) == allocated ]]; then
        say "already running: node $HOST $(node_state)"
        return
    fi
    write_configs
    start_munge
    start_mariadb
    start_daemon slurmdbd "$DIR/run/slurmdbd.pid" /usr/sbin/slurmdbd
    wait_for "slurmdbd (port 6819)" 30 bash -c 'exec 3<>/dev/tcp/127.0.0.1/6819'
    start_daemon slurmctld "$DIR/run/slurmctld.pid" /usr/sbin/slurmctld
    start_daemon slurmd "$DIR/run/slurmd.pid" /usr/sbin/slurmd
    for ((i = 0; i < 120; i++)); do
        case $(node_state) in
            idle | mixed | allocated) break ;;
            down | drained | draining | fail) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    [[ $(node_state) =~ ^(idle|mixed|allocated)$ ]] || die "node $HOST is '$(node_state)', not idle (logs: $DIR/log/)"
    wait_for "sacct" 30 sacct -n -X -S now
    say "running: partition $PARTITION, node $HOST idle ($(sinfo -h -N -o '%c CPUs, %m MB')); stop with $0 stop"
}

stop() {
    for name in slurmd slurmctld slurmdbd mariadb; do
        local pidfile=$DIR/run/$name.pid
        if alive "$pidfile"; then
            kill "$(cat "$pidfile")"
            for ((i = 0; i < 40; i++)); do alive "$pidfile" || break; sleep 0.25; done
            say "stopped $name"
        fi
    done
    # munged is shared with anything else that uses munge on this machine: left running.
}

status() {
    local state
    state=$(node_state)
    if [[ $state =~ ^(idle|mixed|allocated)$ ]]; then
        say "node $HOST $state"
        timeout 10 squeue -h -o '%i %T %j' || true
        return 0
    fi
    say "not running (node state: '${state:-no answer}'); start it with $0 start"
    return 1
}

INSTALL=0
ACTION=
for arg in "$@"; do
    case $arg in
        --install) INSTALL=1 ;;
        start | stop | status) ACTION=$arg ;;
        *) die "usage: $0 [--install] start|stop|status" ;;
    esac
done
[[ -n $ACTION ]] || die "usage: $0 [--install] start|stop|status"
((INSTALL)) && install
$ACTION
