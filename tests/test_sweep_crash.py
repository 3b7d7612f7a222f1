"""Sweeps that survive: kill -9 of the sweep at chosen and random moments, Ctrl-C, SIGTERM.

Each sweep runs the CLI in a subprocess in its own session (its workers share the session id, even
once reparented to init), on a 4-cell grid of the slow test algorithm (tests/_sim_data.py, a sleep
per step). Moments: random times during training (kill -9 from here, times drawn from a seeded RNG)
and the exact points injected with PRESA_BENCH_CRASH_AT (bench.faults): the final evaluation and the
cell's file write (temp written, not renamed). After every kill no process of the sweep may be left;
after the last, a plain rerun must exit 0 and leave every cell stored exactly once, readable, with
its episode rows, and no temp file anywhere in the store. Assertions go through bench.results, not
the store's directory names.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import _sim_data
from bench import results as store
from bench import sweep as sweeps
from bench.faults import ENV as CRASH_ENV
from bench.profiles import get_profile

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find surviving workers")

TESTS = Path(__file__).resolve().parent
DRIVER = """
import sys
sys.path.insert(0, {tests!r})
import bench, _sim_data
from bench import algorithms
algorithms.REGISTRY.update(_sim_data.TEST_ALGORITHMS)
from bench.cli import main
if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
"""
SLEEP = 0.01  # seconds per step: a smoke cell (300 steps) trains for about 3 s


@pytest.fixture(autouse=True)
def _test_algorithms(monkeypatch):
    _sim_data.register(monkeypatch)


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``: the sweep and its workers, orphaned or not."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, _ppid, _pgrp, session = stat[stat.rindex(")") + 2 :].split()[:4]
        if int(session) == sid and state not in ("Z", "X"):
            alive.append(int(entry))
    return alive


def kill_session(sid: int) -> None:
    for pid in session_processes(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def assert_none_survive(sid: int, what: str) -> None:
    deadline = time.monotonic() + 20  # dying workers need a moment; survivors stay forever
    while session_processes(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = session_processes(sid)
    kill_session(sid)  # a failing test leaves no orphans behind either
    assert not left, f"{what}: processes of the sweep survived it: {left}"


@pytest.fixture
def sessions():
    """Session ids of the sweeps a test starts; whatever is left of them is killed at teardown."""
    started: list[int] = []
    yield started
    for sid in started:
        kill_session(sid)


CHILD = """
import sys, time
from bench.workers import die_with_parent
die_with_parent(int(sys.argv[1]))
print("armed", flush=True)
time.sleep(60)
"""
PARENT = """
import os, signal, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "armed"
print(child.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_die_with_parent_kills_the_child_when_its_parent_is_killed():
    parent = subprocess.run(
        [sys.executable, "-c", PARENT, CHILD], capture_output=True, text=True, timeout=120, start_new_session=True
    )
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    child = int(parent.stdout.split()[0])
    deadline = time.monotonic() + 20
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    survived = _alive(child)
    if survived:
        os.kill(child, signal.SIGKILL)
    assert not survived, "the child outlived its killed parent"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] not in "ZX"


def test_die_with_parent_exits_at_once_if_the_parent_is_already_gone():
    child = subprocess.run(
        [sys.executable, "-c", CHILD, "1"], capture_output=True, text=True, timeout=120  # pid 1 is not its parent
    )
    assert child.returncode == -signal.SIGKILL and "armed" not in child.stdout


def test_cell_lock_names_the_process_holding_it(tmp_path):
    from bench.errors import BenchError
    from bench.runner import _cell_lock

    key = store.CellKey("BallRun", "linear-bc", 20.0, 0, "smoke")
    with _cell_lock(tmp_path, key):
        with pytest.raises(BenchError, match=f"is being run by another process \\(pid {os.getpid()}\\); wait for it"):
            with _cell_lock(tmp_path, key):  # flock: a second open file conflicts, even in one process
                pass
    with _cell_lock(tmp_path, key):  # released
        pass


def test_stale_temp_files_are_removed_anywhere_in_the_store(tmp_path):
    key = store.CellKey("BallRun", "linear-bc", 20.0, 0, "smoke")
    dead = store.checkpoint_dir(tmp_path, key) / ".config_hash.txt.999999999.tmp"
    also_dead = store.cell_path(tmp_path, key).with_name(f".{store.cell_path(tmp_path, key).name}.999999999.tmp")
    live = store.checkpoint_dir(tmp_path, key) / f".model.pt.{os.getppid()}.tmp"  # the test runner's parent: alive
    for path in (dead, also_dead, live):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    assert store.remove_stale_temp_files(tmp_path) == 2
    assert not dead.exists() and not also_dead.exists() and live.exists()


class Sweep:
    def __init__(self, tmp_path: Path, dataset: Path, sessions: list[int]) -> None:
        self.sessions = sessions
        self.results = tmp_path / "results"
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        driver = tmp_path / "driver.py"
        driver.write_text(DRIVER.format(tests=str(TESTS)))
        self.argv = [
            sys.executable, str(driver), "sweep", "--tasks", "BallRun", "--algos", "linear-bc", "--thresholds", "10,20",
            "--seeds", "0,1", "--profile", "smoke", "--dataset", str(dataset), "--results", str(self.results),
            "--workers", "2", "--device", "cpu", "--set", f"sleep={SLEEP}",
        ]
        config = sweeps.SweepConfig(
            tasks=["BallRun"], algorithms=["linear-bc"], thresholds=[10.0, 20.0], seeds=[0, 1], profile="smoke",
            dataset=str(dataset), device="cpu", overrides={"all": {"sleep": SLEEP}},
        )
        self.cells = [p.resolved for p in sweeps.plan(sweeps.expand(config), self.results)]
        self.runs = 0

    def start(self, crash_at: str | None = None) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
        if crash_at:
            env[CRASH_ENV] = crash_at
        self.runs += 1
        out = open(self.logs / f"{self.runs}.out", "w")
        err = open(self.logs / f"{self.runs}.err", "w")
        proc = subprocess.Popen(self.argv, stdout=out, stderr=err, env=env, start_new_session=True)
        self.sessions.append(proc.pid)
        return proc

    def stderr(self) -> str:
        return (self.logs / f"{self.runs}.err").read_text()

    def stored(self) -> int:
        return sum(store.is_done(self.results, c.key, c.config_hash) for c in self.cells)

    def checkpoints(self) -> dict[Path, int]:
        state = {}
        for cell in self.cells:
            for f in store.checkpoint_dir(self.results, cell.key).glob("[!.]*"):  # not the writers' temp files
                try:
                    state[f] = f.stat().st_mtime_ns
                except FileNotFoundError:
                    pass
        return state

    def stored_files(self) -> dict[str, int]:
        """cell id -> mtime of its stored file, for the cells stored so far."""
        return {
            c.key.cell_id: store.cell_path(self.results, c.key).stat().st_mtime_ns
            for c in self.cells if store.is_done(self.results, c.key, c.config_hash)
        }

    def temp_files(self) -> list[Path]:
        return [p for p in self.results.rglob(".*.tmp")] if self.results.is_dir() else []

    def wait_training(self, proc: subprocess.Popen, since: dict[Path, int]) -> None:
        """Until this run has written a checkpoint (a worker is training), given those before it."""
        deadline = time.monotonic() + 180
        while self.checkpoints().items() <= since.items() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"the sweep ended before training: {self.stderr()}"


@pytest.mark.slow
def test_kill_9_at_random_and_injected_moments_then_rerun_stores_every_cell_exactly_once(sim_dataset_path, tmp_path, sessions):
    sweep = Sweep(tmp_path, sim_dataset_path, sessions)
    rng = random.Random(13)
    # random: during training; evaluate:1 / write:1: injected; random+stored: once this run stored a cell
    for moment in ("random", "evaluate:1", "write:1", "random+stored"):
        before = sweep.stored()
        assert before < len(sweep.cells), "the grid finished before every moment was tried"
        if moment.startswith("random"):
            since = sweep.checkpoints()
            proc = sweep.start()
            sweep.wait_training(proc, since)
            deadline = time.monotonic() + 180
            while moment == "random+stored" and sweep.stored() == before and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.5))
            os.kill(proc.pid, signal.SIGKILL)  # the sweep only: its workers must follow by themselves
        else:
            proc = sweep.start(crash_at=moment)  # a worker kills the sweep with SIGKILL at that point
        assert proc.wait(timeout=300) == -signal.SIGKILL, f"{moment}: {sweep.stderr()}"
        assert_none_survive(proc.pid, moment)
        if moment == "write:1":
            assert sweep.temp_files(), "the kill must land between the temp write and the rename"
            assert sweep.stored() == before, "a cell killed mid-write is not stored"
        if moment == "evaluate:1":
            assert sweep.stored() == before
    kept = sweep.stored_files()
    assert kept, "some cell was stored before the last kill"
    proc = sweep.start()
    assert proc.wait(timeout=600) == 0, sweep.stderr()
    assert_none_survive(proc.pid, "a finished sweep")
    assert sweep.stored() == len(sweep.cells)
    assert {cell: sweep.stored_files()[cell] for cell in kept} == kept, "a stored cell was run again"
    assert not sweep.temp_files() and not store.load_failures(sweep.results)
    frame = store.load_results(sweep.results)
    episodes = get_profile("smoke").eval_episodes  # linear-bc without online evaluation stores the final policy only
    assert sorted(frame["cell_id"].unique()) == sorted(c.key.cell_id for c in sweep.cells)
    assert frame.groupby("cell_id").size().tolist() == [episodes] * len(sweep.cells)  # once each, complete
    assert (frame.groupby("cell_id")["episode"].nunique() == episodes).all()


@pytest.mark.slow
def test_ctrl_c_and_sigterm_stop_cleanly_and_say_how_to_resume(sim_dataset_path, tmp_path, sessions):
    sweep = Sweep(tmp_path, sim_dataset_path, sessions)
    for how, code in (("ctrl-c", 130), ("sigterm", 143)):
        since = sweep.checkpoints()
        proc = sweep.start()
        sweep.wait_training(proc, since)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
        else:
            os.kill(proc.pid, signal.SIGTERM)  # Slurm / kill: the sweep only
        assert proc.wait(timeout=120) == code, sweep.stderr()
        assert_none_survive(proc.pid, how)
        stored = sweep.stored()
        lines = [line for line in sweep.stderr().splitlines() if "interrupted" in line]
        assert lines == [
            f"interrupted: {stored} cells stored, {len(sweep.cells) - stored} left; rerun the same command to resume"
        ], sweep.stderr()
        assert "Traceback" not in sweep.stderr()
        assert not store.load_failures(sweep.results), "an interrupted cell is not a failed cell"
    proc = sweep.start()
    assert proc.wait(timeout=600) == 0, sweep.stderr()
    assert sweep.stored() == len(sweep.cells) and not sweep.temp_files()


def test_a_zombie_writer_counts_as_dead(tmp_path):
    """A killed sweep's worker that init has not reaped yet is a zombie: kill(pid, 0) still finds
    it, but its temp files are stale and must go (seen with a lazily reaping container init)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # exited but not waited for: a zombie
        state = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break
        time.sleep(0.05)
    try:
        assert state == "Z"
        stale = tmp_path / "episodes" / f".cell.parquet.{child.pid}.tmp"
        stale.parent.mkdir(parents=True)
        stale.write_bytes(b"partial")
        assert store.remove_stale_temp_files(tmp_path) == 1 and not stale.exists()
    finally:
        child.wait()
