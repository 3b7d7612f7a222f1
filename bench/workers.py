"""Process-pool workers that die with the process that started them (sweeps, data collection).

A pool worker of a parent killed with kill -9 is otherwise reparented to init and trains on,
holding its cell's lock and a gigabyte of memory. `init_worker` (the pool's initializer) makes each
worker follow its parent: one math thread, SIGINT left to the parent, SIGKILL when the parent dies.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

#: prctl option: the signal the kernel sends this process when its parent (thread) dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Make this process die (SIGKILL) when ``parent_pid``, its parent, dies, even by kill -9.

    Linux: prctl(PR_SET_PDEATHSIG, SIGKILL); then, for the race where the parent died before the
    prctl (the child is already reparented), compare getppid with the pid the parent gave. The
    death signal follows the parent THREAD that forked the child: the pool's workers are started by
    the thread that submits and waits on the sweep's cells (`_run_local`), which outlives them.
    Elsewhere (no prctl): a daemon thread polls getppid once a second.
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)
    if not armed:

        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def init_worker(parent_pid: int | None = None) -> None:
    """Process-pool worker setup: one math thread, Ctrl-C left to the parent, death with the parent."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_pid is not None:
        die_with_parent(parent_pid)
