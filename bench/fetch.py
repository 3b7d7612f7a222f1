"""Obtain every missing dataset of a sweep before it runs (`presa-bench sweep --fetch-missing`).

One unit per task without a dataset: download DSRL's file from the hub (bench.download); where
the hub cannot be reached (offline) or lacks the file, build one with `data collect`
(bench.collect). Units are resumable: a rerun skips tasks whose file is now found, a download
that was cut restarts cleanly (nothing is left under the final name), and a collection continues
from its work directory. Units run one after another in this process (``local``: a collection
already uses ``--workers`` cores) or as a submitit job array (``slurm``, ``submitit-local``),
one job per task, with the sweep's Slurm parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench.errors import BadInput, BenchError, DatasetError
from bench.tasks import dataset_dir, get_task


@dataclass(frozen=True)
class ObtainSpec:
    task: str
    directory: str
    collect_profile: str = "quick"
    collect_workers: int = 1
    seed: int = 0
    #: Tries per download (transient failures); 1 in tests.
    attempts: int = 4


@dataclass
class Obtained:
    task: str
    #: "downloaded", "collected", "present" (found when the unit ran) or "failed"
    how: str
    path: str | None
    detail: str = ""


def missing_tasks(tasks: list[str], dataset: str | None) -> list[str]:
    """The tasks whose dataset the standard lookup (``dataset``, $DSRL_DATASET_DIR, shipped) does not find."""
    from bench.data import find_dataset

    out = []
    for name in tasks:
        try:
            find_dataset(get_task(name), dataset)
        except DatasetError:
            out.append(name)
    return out


def target_directory(dataset: str | None) -> Path:
    """Where obtained files go: the sweep's --dataset directory, else $DSRL_DATASET_DIR."""
    if dataset is None:
        return dataset_dir()
    path = Path(dataset).expanduser()
    if path.is_file():
        raise BadInput(f"--fetch-missing needs a dataset directory, but --dataset {path} is a file")
    return path


def obtain(spec: ObtainSpec) -> Obtained:
    """One unit: the task's file downloaded, else collected. Runs in a submitit job too."""
    import bench  # noqa: F401  (compat patches in a fresh job process)
    from bench.collect import CollectConfig, collect, get_budget
    from bench.data import find_dataset
    from bench.download import Offline, download

    task = get_task(spec.task)
    try:
        return Obtained(spec.task, "present", str(find_dataset(task, spec.directory)))
    except DatasetError:
        pass
    try:
        got = download(task, spec.directory, attempts=spec.attempts)
        return Obtained(spec.task, "downloaded", str(got.path), f"sha256 {got.sha256}")
    except (Offline, DatasetError) as exc:
        why = f"download: {exc}"
    cfg = CollectConfig(
        task=task, budget=get_budget(spec.collect_profile), seed=spec.seed, workers=spec.collect_workers,
        out_dir=Path(spec.directory), command=f"presa-bench sweep --fetch-missing (collect profile {spec.collect_profile})",
    )
    result = collect(cfg)
    return Obtained(spec.task, "collected", str(result.path), why.splitlines()[0][:300])


def _safe(spec: ObtainSpec) -> Obtained:
    try:
        return obtain(spec)
    except BenchError as exc:
        return Obtained(spec.task, "failed", None, str(exc))


def fetch_missing(
    tasks: list[str],
    dataset: str | None,
    executor: str = "local",
    collect_profile: str = "quick",
    slurm: dict[str, Any] | None = None,
    log_dir: Path | str = "results",
    report: Callable[[Obtained], None] | None = None,
    attempts: int = 4,
) -> list[Obtained]:
    """Obtain the datasets of ``tasks`` that the lookup does not find; returns one entry per unit."""
    from bench.collect import get_budget

    get_budget(collect_profile)  # bad profile: one line before anything runs
    todo = missing_tasks(tasks, dataset)
    if not todo:
        return []
    directory = target_directory(dataset)
    workers = int((slurm or {}).get("cpus_per_task") or 1) if executor == "slurm" else 1
    specs = [ObtainSpec(t, str(directory), collect_profile, workers, attempts=attempts) for t in todo]
    return run_units(_safe, specs, executor, slurm, log_dir, report)


def run_units(
    fn: Callable[[Any], Obtained], specs: list[Any], executor: str, slurm: dict[str, Any] | None,
    log_dir: Path | str, report: Callable[[Obtained], None] | None = None,
) -> list[Obtained]:
    """fn(spec) for every spec: in order in this process (local), or one submitit job per spec."""
    if executor not in ("local", "slurm", "submitit-local"):
        raise BadInput(f"unknown executor '{executor}': choose local, slurm or submitit-local")
    outcomes: list[Obtained] = []
    if executor == "local":
        for spec in specs:
            outcome = fn(spec)
            outcomes.append(outcome)
            if report is not None:
                report(outcome)
        return outcomes
    import submitit

    cluster = "local" if executor == "submitit-local" else "slurm"
    ex = submitit.AutoExecutor(folder=Path(log_dir) / "submitit-data" / "%j", cluster=cluster)
    params = {k: v for k, v in (slurm or {}).items() if k != "gpus_per_node" and v is not None}  # CPU work
    from bench.profiles import SLURM_TIMEOUT_MIN

    ex.update_parameters(**{"timeout_min": SLURM_TIMEOUT_MIN, "name": "presa-bench-data", **params})
    jobs = ex.map_array(fn, specs)
    from bench.slurm import results_as_completed

    for index, result, failure in results_as_completed(jobs, cluster):
        outcome = result if failure is None else Obtained(specs[index].task, "failed", None, failure[0])
        outcomes.append(outcome)
        if report is not None:
            report(outcome)
    return outcomes


@dataclass(frozen=True)
class CollectUnit:
    """One `data collect` of a task, as a job (pickled to Slurm by submitit)."""

    task: str
    directory: str | None
    profile: str
    seed: int
    workers: int
    episodes: int | None
    train_steps: int | None
    command: str


def collect_unit(unit: CollectUnit) -> Obtained:
    import bench  # noqa: F401
    from bench.collect import CollectConfig, collect, get_budget

    try:
        cfg = CollectConfig(
            task=get_task(unit.task), budget=get_budget(unit.profile), seed=unit.seed, workers=unit.workers,
            out_dir=Path(unit.directory) if unit.directory else None, episodes=unit.episodes,
            train_steps=unit.train_steps, command=unit.command,
        )
        result = collect(cfg)
    except BenchError as exc:
        return Obtained(unit.task, "failed", None, str(exc))
    c = result.card
    return Obtained(
        unit.task, "collected", str(result.path),
        f"{c['counts']['episodes']} episodes, {c['timing_seconds']['total_wall_this_call']:.0f} s",
    )
