"""Crash injection for the kill tests (tests/test_sweep_crash.py); inert unless the variable is set.

``PRESA_BENCH_CRASH_AT=<point>[:<n>]`` (n defaults to 1): the n-th time a process reaches ``<point>``
it kills the sweep with SIGKILL -- its parent if it is a process-pool worker, else itself -- and
then waits there to be killed in turn (a pool worker dies with its parent: bench.sweep). Points:

- ``train``: a cell's training is about to start (bench.runner);
- ``evaluate``: training is done, the final evaluation is about to start (bench.runner);
- ``write``: a cell's three tables are staged under temp names and fsynced, none renamed yet (bench.results).

Random moments (mid-training) need no hook: the tests kill the sweep from outside.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "PRESA_BENCH_CRASH_AT"
POINTS = ("train", "evaluate", "write")
_reached: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] != int(count or 1):
        return
    import multiprocessing

    target = os.getppid() if multiprocessing.parent_process() is not None else os.getpid()
    os.kill(target, signal.SIGKILL)
    time.sleep(60)  # a worker that outlives its parent stays here, where the tests look for it
