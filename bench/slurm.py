"""Waiting for submitit jobs on a real Slurm (sweeps and dataset fetches share it).

submitit reads job states through ``sacct``, which a real Slurm gets wrong in two cases (see
`SlurmQueue`); `results_as_completed` asks ``squeue`` as well, so a job cancelled while pending is
reported as failed instead of being waited on forever, and a job still running is never taken
for finished.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Sequence


class SlurmQueue:
    """What the Slurm controller still lists (``squeue``), next to submitit's ``sacct`` states, which
    are wrong in two cases met on a real Slurm: an array task cancelled before it started has no
    accounting record at all (submitit says UNKNOWN, i.e. not done, forever), and after an array
    task was split off a pending array, the array's later record (e.g. CANCELLED) covers that task
    too while it still runs (submitit says done; it has no result yet)."""

    #: Seconds between squeue calls, and how long a job must be missing before it counts as gone.
    every_s = 10.0
    grace_s = 30.0

    def __init__(self) -> None:
        self.listed: set[str] | None = None
        self.checked = float("-inf")
        self.missing_since: dict[str, float] = {}

    def refresh(self) -> None:
        import getpass
        import subprocess

        now = time.time()
        if now - self.checked < self.every_s:
            return
        self.checked = now
        try:
            out = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i"],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.listed = None
            return
        self.listed = set(out.stdout.split()) if out.returncode == 0 else None

    def lists(self, job: Any) -> bool | None:
        """True/False: the controller lists the job or not; None: squeue could not say."""
        if self.listed is None:
            return None
        if job.job_id in self.listed:
            self.missing_since.pop(job.job_id, None)
            return True
        self.missing_since.setdefault(job.job_id, time.time())
        return False

    def vanished(self, job: Any) -> bool:
        """Missing from squeue for grace_s, no result written, and sacct does not know it either."""
        since = self.missing_since.get(job.job_id)
        return (since is not None and time.time() - since >= self.grace_s and self.listed is not None
                and job.job_id not in self.listed and not job.paths.result_pickle.exists()
                and job.state.upper() == "UNKNOWN")


def job_finished(job: Any, queue: SlurmQueue | None) -> bool:
    if job.paths.result_pickle.exists() or queue is None:
        return job.done()
    listed = queue.lists(job)
    if listed:  # still pending/running, whatever sacct says
        return False
    return job.done() or queue.vanished(job)


def results_as_completed(
    jobs: Sequence[Any], cluster: str | None, on_poll: Callable[[list[Any]], None] | None = None, poll_s: float = 0.5
) -> Iterator[tuple[int, Any, tuple[str, str] | None]]:
    """(index, result, None) for each job that returned, (index, None, (message, details)) for each
    that raised, was cancelled (scancel), timed out or vanished: in the order they end.
    ``cluster`` "slurm" adds the squeue checks; ``on_poll(pending jobs)`` runs after every poll."""
    import submitit

    pending = dict(enumerate(jobs))
    queue = SlurmQueue() if cluster == "slurm" else None
    while pending:
        if queue is not None:
            queue.refresh()
        for index in [i for i, job in pending.items() if job_finished(job, queue)]:
            job = pending.pop(index)
            result, failure = None, None
            try:
                if queue is not None and queue.vanished(job):
                    raise submitit.core.utils.UncompletedJobError(f"{job.job_id} is no longer in the queue nor in sacct")
                result = job.result()
            except submitit.core.utils.UncompletedJobError as exc:  # cancelled (scancel), timed out, node lost
                vanished = queue is not None and queue.vanished(job)
                state = "left the queue before it started, no sacct record: cancelled?" if vanished else f"state {job.state}"
                failure = (f"Slurm job {job.job_id} ended without a result ({state}); log {job.paths.stderr}", str(exc))
            except Exception as exc:  # noqa: BLE001 - the job raised; FailedJobError carries its traceback
                text = str(exc).strip()
                failure = (f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}", str(exc))
            yield index, result, failure
        if on_poll is not None:
            on_poll(list(pending.values()))
        if pending:
            time.sleep(poll_s)
