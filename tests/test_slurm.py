"""`presa-bench sweep --executor slurm` against a real Slurm (issue 13): the one-node cluster of
scripts/slurm-local.sh (munge, slurmdbd, slurmctld, slurmd on this machine).

A sweep stores its cells; a second sweep of new cells is submitted held (`sbatch --hold`), one of
its array tasks is cancelled with scancel while held and the others released -- deterministic, no
race with a running job -- the sweep reports that cell failed and exits 1, and the rerun of the same
cells completes it: every cell stored exactly once.

Skipped where no Slurm answers, with how to start one -- except where CI or PRESA_REQUIRE_SLURM is
set (.ci/run sets both): there it fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import results as store
from bench import slurm
from bench.profiles import get_profile

ROOT = Path(__file__).resolve().parent.parent
START = "start a one-node cluster with `scripts/slurm-local.sh start` (root; packages: slurm-wlm munge slurmdbd mariadb-server)"


def _required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("PRESA_REQUIRE_SLURM"))


def _slurm_or_skip() -> None:
    problem = None
    if shutil.which("sinfo") is None or shutil.which("sacct") is None:
        problem = "Slurm's client commands (sinfo, sacct) are not installed"
    else:
        try:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
            states = {s.strip("*~#") for s in out.stdout.split()}
            if out.returncode != 0 or not states & {"idle", "mixed", "allocated"}:
                problem = f"no Slurm node answers (sinfo: {(out.stdout + out.stderr).strip() or 'nothing'})"
            elif subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, timeout=10).returncode != 0:
                problem = "sacct does not answer (submitit reads job states with it: slurmdbd is needed)"
        except subprocess.TimeoutExpired:
            problem = "sinfo/sacct did not answer in 10 s"
    if problem is None:
        return
    if _required():
        pytest.fail(f"{problem}; Slurm is required here (CI / PRESA_REQUIRE_SLURM is set): {START}")
    pytest.skip(f"{problem}: {START}")


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("presa-bench")
    return [str(script)] if script.is_file() else [sys.executable, "-c", "import sys; from bench.cli import main; sys.exit(main())"]


def _held(name: str) -> str | None:
    """The id of this test's held array job (squeue), once Slurm lists it."""
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i %r"], capture_output=True, text=True, timeout=20).stdout
    for line in out.splitlines():
        job, reason = line.split()
        if reason == "JobHeldUser":
            return re.match(r"\d+", job).group(0)  # type: ignore[union-attr]
    return None


def _states(argv: list[str], env: dict[str, str]) -> dict[str, str]:
    """cell id -> done/todo, from the sweep's own --dry-run (the store decides; no paths here)."""
    out = subprocess.run(argv + ["--dry-run"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return {line.split()[1]: line.split()[0] for line in out.stdout.splitlines() if line.split()[:1] in (["done"], ["todo"])}


@pytest.mark.slow
def test_sweep_on_real_slurm_scancel_then_rerun(tmp_path):
    _slurm_or_skip()
    results = tmp_path / "results"
    name = f"presa-test-{os.getpid()}"
    plain, held = tmp_path / "slurm.yaml", tmp_path / "slurm-held.yaml"
    plain.write_text(f"slurm: {{name: {name}}}\n")
    held.write_text(f"slurm: {{name: {name}, slurm_additional_parameters: {{hold: true}}}}\n")
    # The jobs run the python that submitit pickles (sys.executable) on this machine, with this
    # environment (sbatch exports it): PYTHONPATH makes the checkout importable there.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    # BC-Safe on the shipped BallCircle data, smoke profile, 20 gradient steps: the cheapest real cells.
    base = _cli() + ["sweep", "--tasks", "BallCircle", "--algos", "bc-safe", "--profile", "smoke", "--thresholds", "20",
                     "--set", "update_steps=20", "--device", "cpu", "--results", str(results), "--executor", "slurm",
                     "--slurm-timeout-min", "10"]
    episodes = get_profile("smoke").eval_episodes
    try:
        # 1. Two cells through one Slurm array, stored.
        first = subprocess.run(base + ["--config", str(plain), "--seeds", "0,1"], capture_output=True, text=True,
                               env=env, timeout=600)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "2 cells: 2 run, 0 already done, 0 failed" in first.stdout
        assert set(_states(base + ["--seeds", "0,1"], env).values()) == {"done"}
        assert sorted(store.load_results(results)["seed"].unique().tolist()) == [0, 1]

        # 2. Two new cells (plus the two stored), submitted held; one task cancelled while held.
        argv = base + ["--seeds", "0,1,2,3"]
        proc = subprocess.Popen(argv + ["--config", str(held)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env)
        deadline, job = time.time() + 120, None
        while job is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            job = _held(name)
        if job is None:
            proc.kill()
            pytest.fail(f"the held array job never showed up in squeue; the sweep said:\n{proc.communicate()[0]}")
        subprocess.run(["scancel", f"{job}_1"], check=True, timeout=20)  # array task 1: seed 3
        subprocess.run(["scontrol", "release", job], check=True, timeout=20)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 1, out
        assert "4 cells: 1 run, 2 already done, 1 failed" in out
        # the cell id of seed 3 as the sweep names it (the --set override's hash included)
        cancelled = next(cell for cell in _states(argv, env) if "__s3__" in cell)
        assert re.search(rf"failed {cancelled}: Slurm job {job}_1 ended without a result", out), out
        assert "rerun the same command" in out
        assert _states(argv, env) == {**{c: "done" for c in _states(argv, env) if c != cancelled}, cancelled: "todo"}
        assert [f["cell_id"] for f in store.load_failures(results)] == [cancelled]
        assert 3 not in store.load_results(results)["seed"].tolist(), "a cancelled job stored nothing"

        # 3. The rerun (same cells, not held) runs only the cancelled cell: every cell stored exactly once.
        rerun = subprocess.run(argv + ["--config", str(plain)], capture_output=True, text=True, env=env, timeout=600)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert "4 cells: 1 run, 3 already done, 0 failed" in rerun.stdout
        assert set(_states(argv, env).values()) == {"done"}
        frame = store.load_results(results)
        assert frame.groupby("cell_id").size().to_dict() == {c: episodes for c in _states(argv, env)}
    finally:
        subprocess.run(["scancel", "-n", name], capture_output=True, timeout=20)


class _FakeJob:
    def __init__(self, job_id: str, tmp: Path, state: str, done: bool) -> None:
        self.job_id, self.state, self._done = job_id, state, done
        self.paths = type("Paths", (), {"result_pickle": tmp / f"{job_id}_result.pkl"})()

    def done(self) -> bool:
        return self._done


def test_squeue_overrides_wrong_sacct_states(tmp_path, monkeypatch):
    """No Slurm needed: the two wrong sacct answers met on the real one, corrected by squeue."""
    clock = [1000.0]
    monkeypatch.setattr(slurm.time, "time", lambda: clock[0])
    queue = slurm.SlurmQueue()
    queue.listed = {"7_0"}
    stale = _FakeJob("7_0", tmp_path, "CANCELLED", done=True)  # an array record covering a running task
    gone = _FakeJob("7_1", tmp_path, "UNKNOWN", done=False)  # cancelled while pending: no sacct record
    assert not slurm.job_finished(stale, queue)
    assert not slurm.job_finished(gone, queue)  # missing only just now: maybe not yet written
    clock[0] += queue.grace_s
    assert slurm.job_finished(gone, queue) and queue.vanished(gone)
    gone.paths.result_pickle.write_bytes(b"")  # a result written: never "vanished"
    assert not queue.vanished(gone)
    queue.listed = None  # squeue could not say: submitit's answer stands
    assert slurm.job_finished(stale, queue)


class _EndedJob:
    def __init__(self, job_id: str, tmp: Path, outcome: object) -> None:
        self.job_id, self.state, self._outcome = job_id, "COMPLETED", outcome
        self.paths = type("Paths", (), {"result_pickle": tmp / f"{job_id}_result.pkl", "stderr": tmp / f"{job_id}.err"})()

    def done(self) -> bool:
        return True

    def result(self) -> object:
        if isinstance(self._outcome, Exception):
            raise self._outcome
        return self._outcome


def test_results_as_completed_reports_each_job_once_and_failures_as_lines(tmp_path):
    """The waiting loop sweeps and dataset fetches share: every job once, a raised job as one line."""
    jobs = [_EndedJob("1_0", tmp_path, "ok"), _EndedJob("1_1", tmp_path, RuntimeError("boom\nat the end"))]
    polls: list[int] = []
    seen = list(slurm.results_as_completed(jobs, None, on_poll=lambda pending: polls.append(len(pending))))
    assert [(i, r) for i, r, f in seen] == [(0, "ok"), (1, None)]
    assert seen[0][2] is None and seen[1][2][0] == "RuntimeError: at the end"
    assert polls == [0]
