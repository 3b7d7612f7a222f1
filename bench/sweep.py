"""Sweeps: a grid of tasks x algorithms x thresholds x seeds, run locally or on Slurm, resumable.

- The grid comes from flags or a YAML file (configs/*.yaml; keys = the fields of `SweepConfig`).
- Every cell is resolved in the parent first (bad names, overrides and missing datasets fail the
  whole sweep at once, with one line); cells already stored with the same config hash are skipped.
- Executors: ``local`` = a process pool (spawn context, one worker per core by default, one torch
  thread per worker); ``slurm`` = submitit's AutoExecutor with a job array (``map_array``);
  ``submitit-local`` = the same submitit path with its LocalExecutor (used by the tests; it runs all
  jobs at once, so it is not the local default).
- Robustness: a cell that raises is recorded in <results>/failures/<cell-id>.json and the others go
  on; results are written atomically (bench.results), so Ctrl-C or kill -9 loses only the cells that
  were running, and a rerun of the same command resumes (trainers resume from their checkpoints).
  submitit reports a raised job as FINISHED: its failures are detected from ``result()`` raising.
- Workers die with the sweep: each pool worker asks the kernel for SIGKILL when its parent dies
  (Linux PR_SET_PDEATHSIG; elsewhere a thread watching the parent pid), so a kill -9 of the sweep
  leaves no orphan training on and holding its cell's lock. Ctrl-C and SIGTERM (Slurm, `kill`)
  cancel the pending cells, kill the workers and end the sweep with one line, "interrupted: N cells
  stored, M left; rerun the same command to resume" (exit 130, SIGTERM 143). Workers ignore SIGINT:
  the terminal's Ctrl-C reaches the whole process group, and stopping them is the parent's job.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from bench import results as store
from bench.errors import BadInput, DatasetError, Interrupted
from bench.runner import (
    CellOutcome,
    CellSpec,
    ResolvedCell,
    algorithm_path,
    group_key,
    resolve,
    run_cell_safely,
    run_cells_safely,
)
from bench import slurm
from bench.profiles import SLURM_TIMEOUT_MIN
from bench.workers import init_worker
from bench.tasks import BULLET, SAFETY_GYMNASIUM, get_task, paper_tasks

EXECUTORS = ("local", "slurm", "submitit-local")
#: Task-list aliases usable in YAML and --tasks.
TASK_GROUPS = {
    "paper": lambda: [t.name for t in paper_tasks()],
    "bullet": lambda: [t.name for t in paper_tasks() if t.suite == BULLET],
    "safety-gymnasium": lambda: [t.name for t in paper_tasks() if t.suite == SAFETY_GYMNASIUM],
}


@dataclass
class SweepConfig:
    """A grid and how to run it. YAML files in configs/ set these fields."""

    #: Task names or groups ("paper" = the 29 tasks, "bullet", "safety-gymnasium").
    tasks: list[str] = field(default_factory=lambda: ["BallCircle"])
    algorithms: list[str] = field(default_factory=lambda: ["presa"])
    #: Cost thresholds; empty = each task's own three (Bullet 10/20/40, Safety-Gymnasium 20/40/80; DSRL).
    thresholds: list[float] = field(default_factory=list)
    #: The field's seeds (DSRL/OSRL/TraC tables): 0, 10, 20.
    seeds: list[int] = field(default_factory=lambda: [0, 10, 20])
    profile: str = "quick"
    #: Dataset directory (DSRL file naming) or file; None = the standard lookup.
    dataset: str | None = None
    labels_file: str | None = None
    num_queries: int | None = None
    device: str = "auto"
    #: Overrides per algorithm name; "all" applies to every algorithm: {"presa": {"lr": 3e-4}}.
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    executor: str = "local"
    #: Local workers; None = the number of cores.
    workers: int | None = None
    #: Train the pending cells of one (task, algorithm, profile, feedback, overrides) that differ only
    #: in seed / threshold with one bench.training.train_many call (PreSa: one batched ensemble). None =
    #: auto: on where the cells train on a GPU (see `wants_vectorise`), off on CPU, where batching
    #: gains nothing (one core is compute-bound either way; benchmarks/bench_presa.py).
    vectorise: bool | None = None
    #: Cells per batch in a vectorised group; None = the algorithm's choice (PreSa: all on GPU, 1 on CPU).
    ensemble_size: int | None = None
    #: submitit parameters (timeout_min, slurm_partition, gpus_per_node, cpus_per_task, slurm_array_parallelism...).
    slurm: dict[str, Any] = field(default_factory=dict)
    #: Budget protocol, stated in every cell's record and in the report's header: "paper" (each
    #: method's published budget), "equal-steps=N" (N gradient steps for every method) or a named
    #: per-method table of configs/budgets.yaml ("bullet", "cpu-hour"). None = each method's
    #: defaults at the profile (the report calls this "unstated").
    budget: str | None = None
    #: The budget table the protocol reads; None = configs/budgets.yaml.
    budgets_file: str | None = None


def wants_vectorise(config: SweepConfig) -> bool:
    """The sweep's vectorise setting, with None resolved: on for cells that train on a GPU -- an
    explicit cuda device, Slurm jobs given GPUs, or device auto on a local machine that has one."""
    if config.vectorise is not None:
        return bool(config.vectorise)
    if str(config.device).startswith("cuda"):
        return True
    if config.executor == "slurm":
        return int(config.slurm.get("gpus_per_node") or 0) > 0 and config.device == "auto"
    if config.device == "auto":
        import torch

        return bool(torch.cuda.is_available())
    return False


def load_sweep_config(path: Path | str) -> SweepConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"sweep config {path} does not exist (see configs/*.yaml)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise BadInput(f"sweep config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise BadInput(f"sweep config {path} must be a mapping of SweepConfig fields")
    known = {f.name for f in dataclasses.fields(SweepConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise BadInput(f"sweep config {path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    for key in ("tasks", "algorithms", "thresholds", "seeds"):
        if key in raw and not isinstance(raw[key], list):
            raw[key] = [raw[key]]
    return _typed_sweep_config(raw, path)


def _typed_sweep_config(raw: dict[str, Any], path: Path) -> SweepConfig:
    """SweepConfig of ``raw`` with every field checked against its declared type (pydantic):
    ``seeds: [1.5]`` or ``seeds: [abc]`` is refused, one line per error, never silently rounded."""
    import pydantic

    try:
        return pydantic.TypeAdapter(SweepConfig).validate_python(raw)
    except pydantic.ValidationError as exc:
        lines = [
            f"sweep config {path}: {'.'.join(str(part) for part in error['loc'])}: {error['msg']} (got {error['input']!r})"
            for error in exc.errors()
        ]
        raise BadInput("\n".join(lines)) from None


def task_names(entries: list[str]) -> list[str]:
    names: list[str] = []
    for entry in entries:
        group = TASK_GROUPS.get(str(entry).lower())
        for name in group() if group else [get_task(str(entry)).name]:
            if name not in names:
                names.append(name)
    return names


#: Per-algorithm budget keys, published budgets and named protocols (data, not code: bench/ names no algorithm).
BUDGETS_FILE = Path(__file__).resolve().parent.parent / "configs" / "budgets.yaml"


def load_budgets(path: Path | str | None = None) -> dict[str, Any]:
    import yaml

    path = Path(path) if path is not None else BUDGETS_FILE
    if not path.is_file():
        raise BadInput(f"budget table {path} does not exist (configs/budgets.yaml)")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("algorithms"), dict):
        raise BadInput(f"budget table {path} needs an 'algorithms' mapping (see configs/budgets.yaml)")
    return raw


def protocol_names(budgets: dict[str, Any]) -> list[str]:
    return ["paper", "equal-steps=N", *sorted((budgets.get("protocols") or {}))]


def budget_for(protocol: str, algorithm: str, budgets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config overrides, budget record) of one algorithm under a protocol.

    The record (stored in the cell's config as ``budget``) states the protocol, the planned gradient
    steps, the keys of the method's steps and batch, the method's published budget and the number
    of online evaluations / log points to spread over the run.
    """
    name = protocol.strip().lower()
    entry = budgets["algorithms"].get(algorithm)
    if not isinstance(entry, dict) or "steps_key" not in entry:
        raise BadInput(
            f"budget protocol '{protocol}': {algorithm} has no entry in configs/budgets.yaml "
            "(add its steps_key, batch_key and paper budget there)"
        )
    paper = entry.get("paper") or {}
    overrides: dict[str, Any] = {}
    if name == "paper":
        if "steps" not in paper:
            raise BadInput(f"budget protocol 'paper': configs/budgets.yaml gives no paper steps for {algorithm}")
        steps = int(paper["steps"])
        if paper.get("batch") and entry.get("batch_key"):
            overrides[str(entry["batch_key"])] = int(paper["batch"])
    elif name.startswith("equal-steps="):
        try:
            steps = int(name.split("=", 1)[1])
        except ValueError:
            steps = 0
        if steps < 1:
            raise BadInput(f"bad budget protocol '{protocol}': equal-steps needs a positive integer, e.g. equal-steps=2000")
    else:
        table = (budgets.get("protocols") or {}).get(name)
        if table is None:
            raise BadInput(f"unknown budget protocol '{protocol}': choose {', '.join(protocol_names(budgets))}")
        if algorithm not in table:
            raise BadInput(f"budget protocol '{name}' gives no steps for {algorithm}: add it under protocols.{name} in configs/budgets.yaml")
        steps = int(table[algorithm])
    overrides[str(entry["steps_key"])] = steps
    record = {
        "protocol": name,
        "planned_steps": steps,
        "steps_key": str(entry["steps_key"]),
        "batch_key": str(entry.get("batch_key") or ""),
        "unit": str(entry.get("unit") or ""),
        "paper_steps": int(paper["steps"]) if paper.get("steps") else None,
        "paper_batch": int(paper["batch"]) if paper.get("batch") else None,
        "paper_source": str(paper.get("source") or ""),
        "eval_points": int(budgets.get("eval_points") or 0),
        "log_points": int(budgets.get("log_points") or 0),
        "cap_key": str(budgets.get("cap_key") or ""),
    }
    return overrides, record


def expand(config: SweepConfig) -> list[CellSpec]:
    """The grid's cells in a stable order (task, algorithm, threshold, seed); names validated."""
    if not config.algorithms:
        raise BadInput("the sweep has no algorithms")
    if not config.seeds:
        raise BadInput("the sweep has no seeds")
    paths = {name: algorithm_path(name) for name in config.algorithms}
    budgets = load_budgets(config.budgets_file) if config.budget else {}
    cells = []
    for task_name in task_names(config.tasks):
        task = get_task(task_name)
        task.require_supported()
        thresholds = [float(k) for k in config.thresholds] or list(task.thresholds)
        for algo in config.algorithms:
            overrides = {**config.overrides.get("all", {}), **config.overrides.get(algo, {})}
            budget: dict[str, Any] = {}
            if config.budget:
                budget_overrides, budget = budget_for(config.budget, algo.strip().lower(), budgets)
                clash = sorted(set(budget_overrides) & set(overrides))
                if clash:
                    raise BadInput(
                        f"the sweep's budget protocol '{config.budget}' sets {', '.join(clash)} of {algo}; "
                        "remove it from the overrides (or drop `budget:` to set budgets by hand)"
                    )
                overrides.update(budget_overrides)
            for threshold in thresholds:
                for seed in config.seeds:
                    cells.append(
                        CellSpec(
                            task=task.name,
                            algorithm=algo,
                            threshold=threshold,
                            seed=int(seed),
                            profile=config.profile,
                            dataset=config.dataset,
                            labels_file=config.labels_file,
                            num_queries=config.num_queries,
                            device=config.device,
                            overrides=tuple(sorted(overrides.items())),
                            algorithm_path=paths[algo],
                            budget=tuple(sorted(budget.items())),
                        )
                    )
    return cells


def check_datasets(tasks: list[str], dataset: str | None) -> None:
    """Raise one BadInput naming every task without a dataset and how to build them."""
    from bench.fetch import missing_tasks

    missing = missing_tasks(tasks, dataset)
    if missing:
        where = dataset or "$DSRL_DATASET_DIR (default ~/.dsrl/datasets) or bench/assets/datasets"
        commands = "; ".join(f"presa-bench data collect --task {t}" for t in missing)
        raise DatasetError(
            f"missing dataset(s) for {len(missing)} task(s) in {where}: {', '.join(missing)}. "
            f"Build them with: {commands} (or pass --dataset DIR holding DSRL's files, or add --fetch-missing "
            "to download them, else collect them)"
        )


@dataclass
class PlannedCell:
    spec: CellSpec
    resolved: ResolvedCell
    done: bool


def plan(cells: list[CellSpec], results_dir: Path | str) -> list[PlannedCell]:
    """Resolve every cell (config hash) and mark those already stored with the same hash."""
    planned, seen = [], set()
    for spec in cells:
        cell = resolve(spec)
        if cell.key.cell_id in seen:
            continue
        seen.add(cell.key.cell_id)
        planned.append(PlannedCell(spec, cell, store.is_done(results_dir, cell.key, cell.config_hash)))
    return planned


@dataclass
class SweepCounts:
    total: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    running: int = 0

    @property
    def finished(self) -> int:
        return self.done + self.skipped + self.failed


@dataclass
class SweepSummary:
    counts: SweepCounts
    outcomes: list[CellOutcome]
    wall_seconds: float

    @property
    def failures(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


UpdateFn = Callable[[SweepCounts], None]


def execute_cell(spec: CellSpec, results_dir: str) -> CellOutcome:
    """Worker entry point (process pool and submitit): one torch thread, failures recorded."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import bench  # noqa: F401  (compat patches in a fresh process)

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    return run_cell_safely(spec, results_dir)


def execute_cells(specs: list[CellSpec], results_dir: str, ensemble_size: int | None = None) -> list[CellOutcome]:
    """Worker entry point of a vectorised group: one train_many call, every cell stored on its own."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import bench  # noqa: F401  (compat patches in a fresh process)

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    return run_cells_safely(specs, results_dir, ensemble_size=ensemble_size)


def group_cells(todo: list[PlannedCell]) -> list[list[PlannedCell]]:
    """The pending cells grouped by everything but seed and threshold, in first-seen order."""
    groups: dict[str, list[PlannedCell]] = {}
    for planned in todo:
        groups.setdefault(group_key(planned.spec), []).append(planned)
    return list(groups.values())


def _kill_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel the pool's pending work and kill its workers now (their cells resume from checkpoints)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.kill()
    for process in processes:
        process.join(timeout=10)


def _units(todo: list[PlannedCell], vectorise: bool) -> list[list[PlannedCell]]:
    """Work units: one cell each, or (vectorised) one group of seed/threshold siblings each."""
    return group_cells(todo) if vectorise else [[p] for p in todo]


def _submit_args(unit: list[PlannedCell], results_dir: Path, vectorise: bool, ensemble_size: int | None) -> tuple:
    if vectorise:
        return (execute_cells, [p.spec for p in unit], str(results_dir), ensemble_size)
    return (execute_cell, unit[0].spec, str(results_dir))


def _as_list(result: CellOutcome | list[CellOutcome]) -> list[CellOutcome]:
    return list(result) if isinstance(result, list) else [result]


def _unit_failed(results_dir: Path, unit: list[PlannedCell], message: str, details: str = "") -> list[CellOutcome]:
    outcomes = []
    for planned in unit:
        store.write_failure(results_dir, planned.resolved.key, message, details)
        outcomes.append(CellOutcome(planned.resolved.key.cell_id, "failed", error=message))
    return outcomes


def _run_local(
    todo: list[PlannedCell], results_dir: Path, workers: int, counts: SweepCounts, update: UpdateFn,
    vectorise: bool = False, ensemble_size: int | None = None,
) -> list[CellOutcome]:
    import multiprocessing as mp

    outcomes: list[CellOutcome] = []
    units = _units(todo, vectorise)
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(units)), mp_context=mp.get_context("spawn"),
        initializer=init_worker, initargs=(os.getpid(),),
    )
    futures: dict[Future, list[PlannedCell]] = {
        pool.submit(*_submit_args(unit, results_dir, vectorise, ensemble_size)): unit for unit in units
    }
    try:
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in finished:
                unit = futures[future]
                try:
                    finished_outcomes = _as_list(future.result())
                except Exception as exc:  # noqa: BLE001 - e.g. a worker killed by the OS (BrokenProcessPool)
                    finished_outcomes = _unit_failed(results_dir, unit, f"{type(exc).__name__}: {exc}")
                for outcome in finished_outcomes:
                    outcomes.append(outcome)
                    _count(counts, outcome)
            counts.running = sum(1 for f in pending if f.running())
            update(counts)
    except BaseException:  # Ctrl-C, SIGTERM: no worker may go on training
        with _signals_ignored():
            _kill_pool(pool)
        raise
    pool.shutdown(wait=True)
    return outcomes


def _run_submitit(
    todo: list[PlannedCell], results_dir: Path, cluster: str | None, params: dict[str, Any], counts: SweepCounts, update: UpdateFn,
    vectorise: bool = False, ensemble_size: int | None = None,
) -> list[CellOutcome]:
    import submitit

    executor = submitit.AutoExecutor(folder=results_dir / "submitit" / "%j", cluster=cluster)
    # submitit's own default time limit is 5 minutes, which kills any real cell: 12 h unless set.
    executor.update_parameters(**{"timeout_min": SLURM_TIMEOUT_MIN, "name": "presa-bench", **params})
    units = _units(todo, vectorise)
    if vectorise:  # one array job per group of seed/threshold siblings
        groups = [[p.spec for p in unit] for unit in units]
        jobs = executor.map_array(execute_cells, groups, [str(results_dir)] * len(units), [ensemble_size] * len(units))
    else:
        specs = [unit[0].spec for unit in units]
        jobs = executor.map_array(execute_cell, specs, [str(results_dir)] * len(specs))
    outcomes: list[CellOutcome] = []

    def running(pending: list[Any]) -> None:
        counts.running = sum(1 for j in pending if j.state == "RUNNING")
        update(counts)

    for index, result, failure in slurm.results_as_completed(jobs, cluster, on_poll=running):
        unit = units[index]
        if failure is None:
            finished_outcomes = _as_list(result)
        else:
            finished_outcomes = _unit_failed(results_dir, unit, *failure)
        for outcome in finished_outcomes:
            outcomes.append(outcome)
            _count(counts, outcome)
    return outcomes


def _count(counts: SweepCounts, outcome: CellOutcome) -> None:
    if outcome.status == "failed":
        counts.failed += 1
    elif outcome.status == "skipped":
        counts.skipped += 1
    else:
        counts.done += 1


@dataclass
class PreparedSweep:
    """A validated, resolved grid: what is already done and what is left to run."""

    config: SweepConfig
    results_dir: Path
    planned: list[PlannedCell]

    @property
    def todo(self) -> list[PlannedCell]:
        return [p for p in self.planned if not p.done]


def prepare_sweep(config: SweepConfig, results_dir: Path | str = "results", cells: list[CellSpec] | None = None) -> PreparedSweep:
    """Validate everything before anything runs: executor, names, overrides, datasets; plan the cells."""
    if config.executor not in EXECUTORS:
        raise BadInput(f"unknown executor '{config.executor}': choose {', '.join(EXECUTORS)}")
    if config.workers is not None and config.workers < 1:
        raise BadInput("--workers must be >= 1")
    if config.ensemble_size is not None and config.ensemble_size < 1:
        raise BadInput(f"--ensemble-size must be >= 1, got {config.ensemble_size}")
    results_dir = Path(results_dir)
    store.require_writable(results_dir)
    cells = cells if cells is not None else expand(config)
    check_datasets(sorted({c.task for c in cells}), config.dataset)
    store.remove_stale_temp_files(results_dir)
    return PreparedSweep(config, results_dir, plan(cells, results_dir))


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """A second Ctrl-C / SIGTERM must not cut the clean-up of the first short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in _STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` (a KeyboardInterrupt) in the sweep's main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, stop) for s in _STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def execute_sweep(prepared: PreparedSweep, update: UpdateFn | None = None) -> SweepSummary:
    """Run the cells left to run; finished ones are counted as skipped.

    Ctrl-C / SIGTERM: the workers are killed and `Interrupted` is raised, its message counting the
    grid's cells stored (read back from the store) and left."""
    try:
        with _stop_on_signals():
            return _execute(prepared, update)
    except KeyboardInterrupt as exc:
        with _signals_ignored():
            stored = sum(store.is_done(prepared.results_dir, p.resolved.key, p.resolved.config_hash) for p in prepared.planned)
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        left = len(prepared.planned) - stored
        raise Interrupted(
            signum, f"interrupted: {stored} cells stored, {left} left; rerun the same command to resume"
        ) from None


def _execute(prepared: PreparedSweep, update: UpdateFn | None = None) -> SweepSummary:
    started = time.perf_counter()
    config, results_dir = prepared.config, prepared.results_dir
    planned = prepared.planned
    counts = SweepCounts(total=len(planned), skipped=sum(p.done for p in planned))
    outcomes = [CellOutcome(p.resolved.key.cell_id, "skipped", store.cell_path(results_dir, p.resolved.key)) for p in planned if p.done]
    todo = prepared.todo
    vectorise = wants_vectorise(config)
    update = update or (lambda counts: None)
    update(counts)
    if todo:
        if config.executor == "local":
            workers = config.workers or os.cpu_count() or 1
            outcomes += _run_local(todo, results_dir, workers, counts, update, vectorise, config.ensemble_size)
        else:
            cluster = "local" if config.executor == "submitit-local" else "slurm"
            outcomes += _run_submitit(
                todo, results_dir, cluster, dict(config.slurm), counts, update, vectorise, config.ensemble_size
            )
    return SweepSummary(counts, outcomes, time.perf_counter() - started)


def run_sweep(
    config: SweepConfig,
    results_dir: Path | str = "results",
    *,
    cells: list[CellSpec] | None = None,
    update: UpdateFn | None = None,
) -> SweepSummary:
    """Prepare and execute the grid of ``config`` (or the given cells)."""
    return execute_sweep(prepare_sweep(config, results_dir, cells), update)
