"""Run one cell: resolve it, train with checkpoints, evaluate final and best policies, store it.

The flow is the project's one-way data flow: dataset -> feedback -> bench.training (the one loop
over the algorithm's Learner) -> policies -> evaluate_policy -> CellRecord -> bench.results. Nothing here knows any algorithm by name: every
method is reached through bench.algorithms and bench.interfaces.Algorithm.

Resume semantics: a cell whose stored config hash equals the resolved one is skipped; otherwise it
is (re)run, and the trainer resumes from ``<results>/checkpoints/<cell-id>/`` if a checkpoint of the
SAME config is there (the directory is wiped when the config changed, so a stale checkpoint can
never leak into a new config).
"""

from __future__ import annotations

import math
import os
import shutil
import time
import traceback
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from bench import algorithms
from bench import results as store
from bench import training
from bench.budget import dotted
from bench.devices import resolve_device, tune_cpu_allocator
from bench.errors import BadInput, BenchError
from bench.evaluation import EVAL_NUM_ENVS
from bench.faults import crash_point
from bench.io import atomic_write_bytes
from bench.interfaces import Algorithm, TrainInputs, TrainOutput, TrainSpec
from bench.profiles import Profile, get_profile
from bench.tasks import Task, get_task
from bench.training import DURING_TRAINING_SEED_OFFSET

if TYPE_CHECKING:
    from bench.data import Dataset
    from bench.feedback import FeedbackSettings, FeedbackView

#: Overrides with this prefix go to bench.feedback.feedback_for_run, not to the algorithm.
FEEDBACK_PREFIX = "feedback."
CONFIG_HASH_FILE = "config_hash.txt"


@dataclass(frozen=True)
class CellSpec:
    """One cell as the user names it. Defaults: the task's middle threshold, seed 0, the quick profile."""

    task: str
    algorithm: str = "presa"
    #: Cost threshold kappa; None = the task's middle threshold (Bullet 20, Safety-Gymnasium 40).
    threshold: float | None = None
    seed: int = 0
    profile: str = "quick"
    #: Dataset file or directory (DSRL naming); None = the standard lookup (bench.data.find_dataset).
    dataset: str | None = None
    #: Human labels file for the feedback (bench.feedback); None = synthetic labels.
    labels_file: str | None = None
    #: Synthetic queries; None = the profile's num_queries.
    num_queries: int | None = None
    device: str = "auto"
    #: ``--set key=value`` pairs, sorted; "feedback.*" keys go to the feedback builder.
    overrides: tuple[tuple[str, Any], ...] = ()
    #: "module:Class" of the algorithm. Planners fill it from the registry in the parent process, so
    #: worker processes (process pool, Slurm) run exactly the class the parent resolved.
    algorithm_path: str | None = None
    #: The sweep's budget record of this cell (bench.sweep.budget_for), sorted items; () = none
    #: stated. It enters the config (hence the hash) and names the cell (CellKey.budget).
    budget: tuple[tuple[str, Any], ...] = ()


@dataclass
class ResolvedCell:
    spec: CellSpec
    task: Task
    profile: Profile
    threshold: float
    algorithm_cls: type[Algorithm]
    dataset_path: Path
    dataset_hash: str
    key: store.CellKey
    config: dict[str, Any]
    config_hash: str
    algo_overrides: dict[str, Any] = field(default_factory=dict)
    feedback_kwargs: dict[str, Any] = field(default_factory=dict)
    #: The FeedbackSettings built (and validated) once by `resolve` from the feedback.* overrides;
    #: None = no such override (the feedback module's defaults apply).
    feedback_settings: FeedbackSettings | None = None


@dataclass
class CellOutcome:
    cell_id: str
    status: str  # "done" | "skipped" | "failed"
    path: Path | None = None
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str = ""
    wall_seconds: float = 0.0


def parse_overrides(pairs: list[str] | tuple[str, ...] | None) -> tuple[tuple[str, Any], ...]:
    """``["lr=3e-4", "hidden=[64,64]"]`` -> (("hidden", [64, 64]), ("lr", 0.0003)); values parsed as YAML."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BadInput(f"bad --set '{pair}': expected key=value, e.g. --set lr=3e-4")
        out[key] = _parse_value(raw.strip(), yaml)
    return tuple(sorted(out.items()))


def _parse_value(raw: str, yaml: Any) -> Any:
    # YAML 1.1 reads "3e-4" as a string; numbers are tried first so that lr=3e-4 is a float.
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    try:
        return yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        return raw


def algorithm_path(name: str) -> str:
    """The loadable "module:Class" of an ``--algo`` spec (raises BadInput for an unknown one)."""
    return algorithms.resolve_algorithm(name)[1]


def _config_dict(config: Any) -> Any:
    if is_dataclass(config) and not isinstance(config, type):
        return asdict(config)
    if isinstance(config, dict):
        return config
    return vars(config) if hasattr(config, "__dict__") else repr(config)


def _feedback_tag(spec: CellSpec, num_queries: int, labels_hash: str | None, feedback_kwargs: dict[str, Any]) -> str:
    tag = f"labels-{labels_hash[:8]}" if labels_hash else f"q{num_queries}"
    if feedback_kwargs:
        tag += "-" + store.config_hash(feedback_kwargs)[:8]
    return tag


def resolve(spec: CellSpec) -> ResolvedCell:
    """Everything about a cell that is known before training: identity, config and its hash."""
    from bench.data import find_dataset

    task = get_task(spec.task)
    task.require_supported()
    profile = get_profile(spec.profile)
    threshold = float(spec.threshold) if spec.threshold is not None else task.middle_threshold
    if not math.isfinite(threshold) or threshold < 0:
        why = "negative" if threshold < 0 else "not finite"
        raise BadInput(f"threshold {threshold:g} is {why}: a cost threshold must be a finite number >= 0")
    path = spec.algorithm_path or algorithm_path(spec.algorithm)
    algorithm_cls = algorithms.load_class(path)
    # The registry key (a user's class: its declared name) names the cell: two keys may share one class.
    name = algorithms.cell_name(spec.algorithm, algorithm_cls)
    dataset_path = find_dataset(task, spec.dataset)
    dataset_hash = store.file_hash(dataset_path)
    overrides = dict(spec.overrides)
    feedback_kwargs = {k[len(FEEDBACK_PREFIX):]: v for k, v in overrides.items() if k.startswith(FEEDBACK_PREFIX)}
    algo_overrides = {k: v for k, v in overrides.items() if not k.startswith(FEEDBACK_PREFIX)}
    num_queries = int(spec.num_queries if spec.num_queries is not None else profile.num_queries)
    feedback_config: dict[str, Any] | None = None
    feedback_settings = None
    if algorithm_cls.needs_feedback:
        labels_hash = None
        if spec.labels_file is not None:
            labels = Path(spec.labels_file).expanduser()
            if not labels.is_file():
                raise BadInput(f"labels file {labels} does not exist")
            labels_hash = store.file_hash(labels)
        feedback_settings, settings_config = _feedback_settings(feedback_kwargs)
        from bench.feedback import SPLIT_BY

        feedback_config = {"num_queries": num_queries, "labels_hash": labels_hash, "settings": settings_config, "split": SPLIT_BY}
        tag = _feedback_tag(spec, num_queries, labels_hash, feedback_kwargs)
    else:
        tag = "none"
    budget = dict(spec.budget)
    key = store.CellKey(
        task.name, name, threshold, int(spec.seed), profile.name, tag, str(budget.get("protocol") or ""),
        overrides=store.overrides_tag(algo_overrides, budget),
    )
    # The device is part of the config: budgets capped on CPU differ from a GPU run of the same cell,
    # so a GPU rerun must not be skipped as done.
    device = resolve_device(spec.device)
    train_spec = TrainSpec(
        task=task, threshold=threshold, seed=int(spec.seed), profile=profile, device=device, overrides=algo_overrides
    )
    algo_config = _config_dict(algorithm_cls.config_for(train_spec))
    if budget:
        profile = _scaled_profile(profile, budget, algo_config, device)
    config = {
        "task": task.name,
        "algorithm": name,
        "algorithm_class": path,
        "threshold": threshold,
        "seed": int(spec.seed),
        "profile": asdict(profile),
        "algorithm_config": algo_config,
        "device": device,
        "overrides": algo_overrides,
        "dataset_hash": dataset_hash,
        "feedback": feedback_config,
        "evaluation": {"during_seed_offset": DURING_TRAINING_SEED_OFFSET},
    }
    if budget:
        config["budget"] = budget
    return ResolvedCell(
        spec=spec,
        task=task,
        profile=profile,
        threshold=threshold,
        algorithm_cls=algorithm_cls,
        dataset_path=dataset_path,
        dataset_hash=dataset_hash,
        key=key,
        config=config,
        config_hash=store.config_hash(config),
        algo_overrides=algo_overrides,
        feedback_kwargs=feedback_kwargs,
        feedback_settings=feedback_settings,
    )


def _scaled_profile(profile: Profile, budget: dict[str, Any], algo_config: Any, device: str) -> Profile:
    """The profile with eval_every / log_every spread over the cell's stated budget, so that every
    run has about ``eval_points`` online evaluations whatever its length (a CPU cap included)."""
    steps = int(budget.get("planned_steps") or profile.train_steps)
    cap = dotted(algo_config, str(budget.get("cap_key") or "")) if budget.get("cap_key") else None
    if isinstance(cap, int) and not str(device).startswith("cuda") and 0 < cap < steps:
        steps = cap
    changes: dict[str, int] = {}
    if budget.get("eval_points"):
        changes["eval_every"] = max(1, steps // int(budget["eval_points"]))
    if budget.get("log_points"):
        changes["log_every"] = max(1, steps // int(budget["log_points"]))
    return replace(profile, **changes) if changes else profile


def _prepare_checkpoint_dir(directory: Path, config_hash_: str, fresh: bool) -> None:
    marker = directory / CONFIG_HASH_FILE
    stale = directory.is_dir() and (fresh or not marker.is_file() or marker.read_text().strip() != config_hash_)
    if stale:
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        atomic_write_bytes(marker, config_hash_.encode())


def _feedback_settings(feedback_kwargs: dict[str, Any]) -> tuple[FeedbackSettings | None, dict[str, Any]]:
    """(settings object to pass or None, JSON-able settings for the config hash).

    ``--set feedback.KEY=VALUE`` overrides are applied to bench.feedback.FeedbackSettings() by the
    one coercion rule (bench.settings) and validated; without such overrides None is passed (the
    feedback module's defaults apply) but those defaults still enter the config hash, so that a
    change of the defaults reruns the cells. `resolve` calls this once per cell.
    """
    from bench.feedback import FeedbackSettings
    from bench.settings import apply_overrides

    settings = apply_overrides(FeedbackSettings(), feedback_kwargs, "the feedback teacher", key_prefix=FEEDBACK_PREFIX)
    settings.validate()  # bad values fail before any training, with the feedback module's message
    return (settings if feedback_kwargs else None), settings.identity()


def _load_feedback(cell: ResolvedCell, dataset: Dataset, results_dir: Path) -> tuple[FeedbackView, dict[str, Any]]:
    """The learner's FeedbackView and the feedback's provenance."""
    from bench.feedback import feedback_for_run

    labels = Path(cell.spec.labels_file).expanduser() if cell.spec.labels_file else None
    feedback = feedback_for_run(
        cell.task,
        dataset,
        cell.threshold,
        cell.key.seed,
        num_queries=cell.config["feedback"]["num_queries"],
        cache_dir=results_dir / store.FEEDBACK,
        settings=cell.feedback_settings,
        labels_file=labels,
    )
    view = feedback.view()
    return view, {**view.provenance, **feedback.provenance}


ProgressFn = Callable[[int, dict[str, float]], None]


def run_cell(
    spec: CellSpec,
    results_dir: Path | str = "results",
    *,
    force: bool = False,
    on_log: ProgressFn | None = None,
    resolved: ResolvedCell | None = None,
    wait: bool = False,
) -> CellOutcome:
    """Train, evaluate and store one cell (skipped if already stored with the same config hash).

    ``on_log`` receives every spec.log(step, metrics) call (the CLI feeds a progress bar with it).
    ``wait``: when another process runs the cell, wait for it (then the cell is usually done and
    skipped) instead of refusing. Exceptions propagate; `run_cell_safely` records them instead.
    """
    started = time.perf_counter()
    tune_cpu_allocator()  # heap reuse of per-step activations: +8-17% steps/s on CPU, numbers unchanged
    store.git_state()  # record the commit of the code this process runs, not of a later checkout
    results_dir = Path(results_dir)
    store.require_writable(results_dir)
    cell = resolved or resolve(spec)
    if not force and store.is_done(results_dir, cell.key, cell.config_hash):
        return CellOutcome(cell.key.cell_id, "skipped", store.cell_path(results_dir, cell.key))
    device = cell.config["device"]  # resolved once, in resolve()
    with _cell_lock(results_dir, cell.key, wait):
        return _run_locked(cell, results_dir, device, force, on_log, started)


@contextmanager
def _cell_lock(results_dir: Path, key: store.CellKey, wait: bool = False) -> Iterator[None]:
    """An exclusive lock per cell (flock: released by the OS even after kill -9), so that two
    processes (e.g. two sweeps over one store) never train the same cell into one checkpoint.
    ``wait``: block until the holder is done (sweeps: a cell another sweep finishes is then done,
    not failed) instead of refusing."""
    import fcntl

    path = Path(results_dir) / store.CHECKPOINTS / f".{key.cell_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:  # not "w": the holder's pid in the file must survive a failed try
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            who = f"another process (pid {holder})" if holder.isdigit() else "another process"
            raise BenchError(
                f"cell {key.cell_id} is being run by {who}; wait for it to finish (or stop it), then rerun"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_locked(
    cell: ResolvedCell, results_dir: Path, device: str, force: bool, on_log: ProgressFn | None, started: float
) -> CellOutcome:
    if not force and store.is_done(results_dir, cell.key, cell.config_hash):  # finished while we waited
        return CellOutcome(cell.key.cell_id, "skipped", store.cell_path(results_dir, cell.key))
    train_spec, inputs, provenance = _prepare_training(cell, results_dir, device, force, on_log)
    crash_point("train")
    train_started = time.perf_counter()
    output = training.train(cell.algorithm_cls, train_spec, inputs)
    train_seconds = output.train_seconds or (time.perf_counter() - train_started)
    return _evaluate_and_store(cell, results_dir, device, output, float(train_seconds), provenance, started)


def _prepare_training(
    cell: ResolvedCell, results_dir: Path, device: str, force: bool, on_log: ProgressFn | None
) -> tuple[TrainSpec, TrainInputs, dict[str, Any]]:
    """The cell's dataset, own feedback, own checkpoint directory -> (TrainSpec, TrainInputs, provenance)."""
    from bench.data import load_dataset

    dataset = load_dataset(cell.dataset_path, cell.task)
    feedback, provenance = _load_feedback(cell, dataset, results_dir) if cell.algorithm_cls.needs_feedback else (None, {})
    ckpt = store.checkpoint_dir(results_dir, cell.key)
    _prepare_checkpoint_dir(ckpt, cell.config_hash, fresh=force)

    train_spec = TrainSpec(
        task=cell.task,
        threshold=cell.threshold,
        seed=cell.key.seed,
        profile=cell.profile,
        device=device,
        checkpoint_dir=ckpt,
        overrides=dict(cell.algo_overrides),
        log=on_log,
    )
    inputs = TrainInputs(
        data=dataset.learner_view(),
        feedback=feedback,
        dataset=dataset if cell.algorithm_cls.uses_ground_truth else None,
    )
    return train_spec, inputs, provenance


def _evaluate_and_store(
    cell: ResolvedCell,
    results_dir: Path,
    device: str,
    output: TrainOutput,
    train_seconds: float,
    provenance: dict[str, Any],
    started: float,
) -> CellOutcome:
    """Evaluate the final (and best) policy on the cell's own seeds and write the cell's record."""
    from bench.evaluation import evaluate_policy

    crash_point("evaluate")
    episodes: list[dict[str, Any]] = []
    summary: dict[str, dict[str, float]] = {}
    final = evaluate_policy(
        output.policy, cell.task, cell.threshold, episodes=cell.profile.eval_episodes,
        seed=cell.key.seed, num_envs=EVAL_NUM_ENVS,
    )
    episodes += [{"checkpoint": "final", **row} for row in final.rows()]
    summary["final"] = final.summary()
    if output.best_policy is not None:
        if output.best_policy is output.policy:
            best = final
        else:
            best = evaluate_policy(
                output.best_policy, cell.task, cell.threshold, episodes=cell.profile.eval_episodes,
                seed=cell.key.seed, num_envs=EVAL_NUM_ENVS,
            )
        episodes += [{"checkpoint": "best", **row} for row in best.rows()]
        summary["best"] = best.summary()

    record = store.CellRecord(
        key=cell.key,
        suite=cell.task.suite,
        config=cell.config,
        config_hash=cell.config_hash,
        episodes=episodes,
        curve=list(output.curve),
        device=device,
        wall_seconds=time.perf_counter() - started,
        train_seconds=float(train_seconds),
        steps=int(output.steps),
        steps_this_process=int(output.steps_this_process),
        dataset_path=str(cell.dataset_path),
        dataset_hash=cell.dataset_hash,
        feedback_provenance=provenance,
        info=dict(output.info),
    )
    path = store.write_cell(results_dir, record)
    return CellOutcome(cell.key.cell_id, "done", path, summary, wall_seconds=record.wall_seconds)


def group_key(spec: CellSpec) -> str:
    """Cells with equal group keys differ only in seed and threshold: they may be trained together.
    (A string: override values may be unhashable lists.)"""
    return repr(replace(spec, seed=0, threshold=None))


def run_cells(
    specs: list[CellSpec],
    results_dir: Path | str = "results",
    *,
    force: bool = False,
    ensemble_size: int | None = None,
    on_log: ProgressFn | None = None,
    resolved: list[ResolvedCell] | None = None,
    wait: bool = False,
) -> list[CellOutcome]:
    """Train cells that differ only in seed / threshold with one ``bench.training.train_many`` call.

    Each cell is resolved on its own (own feedback, checkpoint directory, config hash) and evaluated
    and stored exactly as `run_cell` stores it; done cells are skipped before training. An algorithm
    whose learner has one member trains them one by one, so the numbers equal per-cell `run_cell` runs. ``ensemble_size`` caps the cells per batch (None =
    the algorithm's choice). ``wait`` as in `run_cell`. Exceptions propagate; `run_cells_safely`
    records them instead.
    """
    started = time.perf_counter()
    tune_cpu_allocator()
    store.git_state()
    results_dir = Path(results_dir)
    store.require_writable(results_dir)
    cells = resolved or [resolve(spec) for spec in specs]
    if len({group_key(c.spec) for c in cells}) > 1:
        raise BadInput("run_cells: the cells must differ only in seed and threshold; run the others separately")
    if ensemble_size is not None and ensemble_size < 1:
        raise BadInput(f"--ensemble-size must be >= 1, got {ensemble_size}")
    outcomes: dict[str, CellOutcome] = {}
    todo: list[ResolvedCell] = []
    for cell in cells:
        if cell.key.cell_id in outcomes or any(c.key.cell_id == cell.key.cell_id for c in todo):
            continue
        if not force and store.is_done(results_dir, cell.key, cell.config_hash):
            outcomes[cell.key.cell_id] = CellOutcome(cell.key.cell_id, "skipped", store.cell_path(results_dir, cell.key))
        else:
            todo.append(cell)
    if todo:
        device = todo[0].config["device"]  # resolved once, in resolve(); one group, one device
        with ExitStack() as locks:
            for cell in sorted(todo, key=lambda c: c.key.cell_id):  # one order in every process: no deadlock
                locks.enter_context(_cell_lock(results_dir, cell.key, wait))
            running = []
            for cell in todo:
                if not force and store.is_done(results_dir, cell.key, cell.config_hash):  # finished while we waited
                    outcomes[cell.key.cell_id] = CellOutcome(cell.key.cell_id, "skipped", store.cell_path(results_dir, cell.key))
                else:
                    running.append((cell, *_prepare_training(cell, results_dir, device, force, on_log)))
            if running:
                crash_point("train")
                train_started = time.perf_counter()
                algorithm_cls = running[0][0].algorithm_cls
                outputs = training.train_many(algorithm_cls, [r[1] for r in running], [r[2] for r in running], ensemble_size)
                if len(outputs) != len(running):
                    raise BenchError(f"training {algorithm_cls.__name__} returned {len(outputs)} outputs for {len(running)} cells")
                # A batch's wall time is shared: without an algorithm's own figure, each cell gets its share.
                share = (time.perf_counter() - train_started) / len(running)
                for (cell, _, _, provenance), output in zip(running, outputs):
                    outcomes[cell.key.cell_id] = _evaluate_and_store(
                        cell, results_dir, device, output, float(output.train_seconds or share), provenance, started
                    )
    return [outcomes[c.key.cell_id] for c in cells if c.key.cell_id in outcomes]


def run_cells_safely(
    specs: list[CellSpec], results_dir: Path | str = "results", force: bool = False, ensemble_size: int | None = None
) -> list[CellOutcome]:
    """`run_cells` for sweeps: an exception fails (and records) every cell of the group not yet stored."""
    started = time.perf_counter()
    try:
        return run_cells(specs, results_dir, force=force, ensemble_size=ensemble_size, wait=True)
    except Exception as exc:  # noqa: BLE001 - a failed group is recorded, never fatal
        message = f"{type(exc).__name__}: {exc}"
        details = traceback.format_exc()
        outcomes = []
        for spec in specs:
            try:
                cell = resolve(spec)
                key = cell.key
                if store.is_done(results_dir, key, cell.config_hash):  # stored before the failure
                    outcomes.append(CellOutcome(key.cell_id, "skipped", store.cell_path(results_dir, key)))
                    continue
            except Exception:  # noqa: BLE001
                threshold = spec.threshold if spec.threshold is not None else -1.0
                key = store.CellKey(spec.task, spec.algorithm, float(threshold), int(spec.seed), spec.profile, "unresolved")
            store.write_failure(results_dir, key, message, details)
            outcomes.append(CellOutcome(key.cell_id, "failed", error=message, wall_seconds=time.perf_counter() - started))
        return outcomes


def run_cell_safely(spec: CellSpec, results_dir: Path | str = "results", force: bool = False) -> CellOutcome:
    """`run_cell` for sweeps: an exception becomes a failure record (and a "failed" outcome)."""
    started = time.perf_counter()
    key: store.CellKey | None = None
    try:
        cell = resolve(spec)
        key = cell.key
        return run_cell(spec, results_dir, force=force, resolved=cell, wait=True)
    except Exception as exc:  # noqa: BLE001 - any failure of one cell is recorded, never fatal
        message = f"{type(exc).__name__}: {exc}"
        if key is None:
            threshold = spec.threshold if spec.threshold is not None else -1.0
            key = store.CellKey(spec.task, spec.algorithm, float(threshold), int(spec.seed), spec.profile, "unresolved")
        store.write_failure(results_dir, key, message, traceback.format_exc())
        return CellOutcome(key.cell_id, "failed", error=message, wall_seconds=time.perf_counter() - started)
