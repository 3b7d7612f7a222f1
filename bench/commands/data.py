"""`presa-bench data ...`: inspect (and build) DSRL datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Inspect and build DSRL-format datasets.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="data")


@app.command("info")
def info(
    task: Optional[str] = typer.Option(None, "--task", help="Short DSRL task name, e.g. BallCircle (default: from a --dataset FILE named as DSRL names its files)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Dataset file or directory (overrides the lookup)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Save the (episode cost, episode reward) scatter here (PNG/PDF)."),
) -> None:
    """Summarize a dataset: episodes, transitions, return and cost statistics, episodes per threshold."""

    from bench.data import load_task_dataset
    from bench.datainfo import scatter_plot, summary_table
    from bench.errors import BadInput
    from bench.tasks import get_task, task_from_filename

    if task is not None:
        t = get_task(task)
    else:
        t = task_from_filename(dataset) if dataset is not None and not dataset.is_dir() else None
        if t is None:
            where = f"'{dataset.name}' is not named <SimulatorId>-<maxCost>-<N>.hdf5" if dataset is not None and not dataset.is_dir() else "no --dataset FILE given"
            raise BadInput(f"which task? {where}: pass --task, e.g. --task BallCircle")
    ds = load_task_dataset(t, dataset)
    from bench.console import console as _console
    console = _console()
    console.print(summary_table(ds))
    from bench.probe import print_probe, stored_probe

    probe, fresh = stored_probe(ds.path)
    if probe is not None:
        print_probe(console, probe, fresh)
    else:
        console.print(f"no discrimination probe in this dataset's card: run `presa-bench data probe --dataset {ds.path}`")
    if plot is not None:
        scatter_plot(ds, plot)
        console.print(f"scatter plot saved to {plot}")


@app.command("collect")
def collect_cmd(
    task: Optional[str] = typer.Option(None, "--task", help="Short DSRL task name, e.g. BallCircle (comma-separated for several)."),
    suite: Optional[str] = typer.Option(None, "--suite", help="Every task of a suite instead: bullet, safety-gymnasium or paper."),
    executor: str = typer.Option("local", "--executor", help="local (one task after another here), slurm (one submitit job per task) or submitit-local."),
    slurm_partition: Optional[str] = typer.Option(None, "--slurm-partition", help="Slurm partition."),
    slurm_timeout_min: int = typer.Option(720, "--slurm-timeout-min", help="Slurm time limit per task (minutes); a rerun resumes a job cut by it."),
    log_dir: Path = typer.Option(Path("results"), "--log-dir", help="submitit logs go to <log-dir>/submitit-data/."),
    episodes: Optional[int] = typer.Option(None, "--episodes", help="Episodes to keep after filtering (default: the profile's; quick/paper: as many as DSRL's file)."),
    seed: int = typer.Option(0, "--seed", help="Seed of training, rollouts and filtering."),
    workers: int = typer.Option(1, "--workers", help="Processes for training runs and rollouts (one core each)."),
    dataset_dir: Optional[Path] = typer.Option(None, "--dataset-dir", help="Output directory (default: $DSRL_DATASET_DIR, else ~/.dsrl/datasets)."),
    profile: str = typer.Option("quick", "--profile", help="Budget: smoke (seconds), quick (minutes for a Bullet task), paper (DSRL-like), paper-run (BallRun's recipe), lite, mini; dev-unsafe, dev-noisy, dev-trpo: development-family recipes (docs/presa.md)."),
    train_steps: Optional[int] = typer.Option(None, "--train-steps", help="Override the env steps per behaviour policy."),
    max_safe_share: Optional[float] = typer.Option(None, "--max-safe-share", help="Keep at most this share of episodes within the task's middle threshold (drops safe episodes at random; a development-family axis)."),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="End with the discrimination probe (minutes; see `data probe`)."),
    probe_config: Optional[Path] = typer.Option(None, "--probe-config", help="Probe settings YAML (default bench/assets/probe.yaml)."),
) -> None:
    """Build a DSRL-format dataset in the task's real simulator (PPO-Lagrangian behaviour policies,
    noisy rollouts, (cost, reward) grid filter). Resumable: rerun the same command to continue."""
    import shlex
    import sys

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from bench.collect import CollectConfig, collect, get_budget
    from bench.console import console as _console
    from bench.tasks import get_task

    from bench.probe import load_settings

    probe_settings = load_settings(probe_config) if probe else None  # bad probe settings fail before collecting
    from bench.errors import BadInput

    if (task is None) == (suite is None):
        raise BadInput("give exactly one of --task T (or T1,T2) or --suite bullet|safety-gymnasium|paper")
    if suite is not None or "," in (task or "") or executor != "local":
        if max_safe_share is not None:
            raise BadInput("--max-safe-share applies to one task collected here: give one --task and no --executor")
        _collect_many(task, suite, executor, slurm_partition, slurm_timeout_min, log_dir, dataset_dir, profile,
                      seed, workers, episodes, train_steps)
        return
    assert task is not None
    cfg = CollectConfig(
        task=get_task(task), budget=get_budget(profile), seed=seed, workers=workers, out_dir=dataset_dir,
        episodes=episodes, train_steps=train_steps, command=shlex.join(["presa-bench", *sys.argv[1:]]),
        max_safe_share=max_safe_share,
    )
    console = _console()
    console.print(f"collecting {cfg.task.name} ({cfg.budget.name} profile, seed {seed}); work directory {cfg.work_dir}")
    labels = {"train": "training behaviour policies (env steps)", "rollout": "rolling out snapshots (episodes)"}
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console,
    ) as progress:
        bars: dict[str, int] = {}

        def on_stage(stage: str, total: int) -> None:
            bars[stage] = progress.add_task(labels[stage], total=max(total, 1), completed=0 if total else 1)

        def report(stage: str, amount: int) -> None:
            progress.advance(bars[stage], amount)

        result = collect(cfg, report=report, on_stage=on_stage)
    card = result.card
    console.print(
        f"wrote {result.path} ({card['counts']['episodes']} episodes, {card['counts']['transitions']} transitions, "
        f"{card['bytes'] / 1e6:.1f} MB) and {result.card_path.name}"
    )
    bands = ", ".join(f"{k}: {v}" for k, v in card["dataset"]["episodes_per_cost_band"].items())
    console.print(f"episodes per cost band {bands}; total time this call {card['timing_seconds']['total_wall_this_call']:.0f} s")
    if probe_settings is not None:
        _probe_and_record(result.path, cfg.task, probe_settings, console, cfg.command)


def _probe_and_record(path: Path, task, settings, console, command: str) -> None:  # type: ignore[no-untyped-def]
    from bench.probe import print_probe, run_probe, write_probe

    s = settings
    console.print(
        f"discrimination probe: {s.unsafe_algorithm} and {s.safe_algorithm}, {s.train_steps} steps each, "
        f"{s.eval_episodes} episodes per threshold and seed, seeds {', '.join(map(str, s.seeds))}"
    )
    result = run_probe(path, task, settings, progress=lambda msg: console.print(f"  {msg}"))
    card = write_probe(path, result, command)
    print_probe(console, result.to_card())
    console.print(f"probe took {result.seconds:.0f} s; recorded in {card}")


@app.command("probe")
def probe_cmd(
    task: str = typer.Option(..., "--task", help="Short DSRL task name, e.g. BallRun."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Dataset file or directory (overrides the lookup)."),
    probe_config: Optional[Path] = typer.Option(None, "--probe-config", help="Probe settings YAML (default bench/assets/probe.yaml)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Gradient steps per model (overrides the config)."),
    episodes: Optional[int] = typer.Option(None, "--episodes", help="Evaluation episodes per threshold and seed."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds, e.g. 0,10,20."),
) -> None:
    """Discrimination probe: train the config's unsafe and safe learners (BC-All, BC-Safe) briefly, evaluate
    them at each threshold, record in the dataset's card whether the dataset separates them."""
    import shlex
    import sys

    from bench.console import console as _console
    from bench.data import find_dataset
    from bench.errors import BadInput
    from bench.probe import load_settings
    from bench.tasks import get_task

    seed_list = None
    if seeds is not None:
        try:
            seed_list = [int(x) for x in seeds.split(",") if x.strip()]
        except ValueError:
            raise BadInput(f"--seeds must be comma-separated integers, e.g. 0,10,20 (got '{seeds}')") from None
    settings = load_settings(probe_config, train_steps=steps, eval_episodes=episodes, seeds=seed_list)
    t = get_task(task)
    t.require_supported()
    path = find_dataset(t, dataset)
    _probe_and_record(path, t, settings, _console(), shlex.join(["presa-bench", *sys.argv[1:]]))


def _collect_many(task, suite, executor, partition, timeout_min, log_dir, dataset_dir, profile, seed, workers,
                  episodes, train_steps) -> None:  # type: ignore[no-untyped-def]
    """Several tasks (or one on Slurm): one resumable `data collect` unit per task."""
    import shlex
    import sys

    from bench.collect import CollectConfig, get_budget
    from bench.console import console as _console
    from bench.download import suite_tasks
    from bench.errors import BenchError
    from bench.fetch import CollectUnit, collect_unit, run_units
    from bench.tasks import get_task

    tasks = suite_tasks(suite) if suite is not None else [get_task(t.strip()) for t in task.split(",") if t.strip()]
    for t in tasks:  # bad input (unsupported task, --workers 0, unknown profile) before anything is submitted
        CollectConfig(task=t, budget=get_budget(profile), seed=seed, workers=workers, episodes=episodes, train_steps=train_steps)
    command = shlex.join(["presa-bench", *sys.argv[1:]])
    units = [CollectUnit(t.name, str(dataset_dir) if dataset_dir else None, profile, seed, workers, episodes, train_steps, command)
             for t in tasks]
    slurm = {"timeout_min": timeout_min, "cpus_per_task": workers, "slurm_partition": partition}
    console = _console()
    console.print(f"collecting {len(units)} task(s) ({profile} profile, {executor} executor)")
    outcomes = run_units(collect_unit, units, executor, slurm, log_dir,
                         report=lambda o: console.print(f"{o.task}: {o.how} {o.path or ''} ({o.detail})"))
    failed = [o for o in outcomes if o.how == "failed"]
    if failed:
        raise BenchError(f"{len(failed)} of {len(outcomes)} collection(s) failed ({', '.join(o.task for o in failed)}); "
                         "rerun the same command to resume them")


@app.command("download")
def download_cmd(
    task: Optional[str] = typer.Option(None, "--task", help="Short DSRL task name, e.g. BallCircle."),
    suite: Optional[str] = typer.Option(None, "--suite", help="Every task of a suite: bullet, safety-gymnasium or paper (both)."),
    dataset_dir: Optional[Path] = typer.Option(None, "--dataset-dir", help="Output directory (default: $DSRL_DATASET_DIR, else ~/.dsrl/datasets)."),
    revision: str = typer.Option("main", "--revision", help="Revision (branch or commit) of DSRL's Hugging Face dataset."),
    attempts: int = typer.Option(4, "--attempts", help="Tries per file on transient failures (back-off 1, 2, 4... s)."),
) -> None:
    """Download DSRL's files from their current home (Hugging Face dataset YYY-45/DSRL) into the
    dataset directory: resumed on a dropped connection, sha256 and data checks, atomic rename."""
    from bench.console import console as _console
    from bench.download import download, suite_tasks
    from bench.errors import BadInput
    from bench.tasks import get_task

    if (task is None) == (suite is None):
        raise BadInput("give exactly one of --task T or --suite bullet|safety-gymnasium|paper")
    if attempts < 1:
        raise BadInput(f"--attempts must be at least 1, got {attempts}")
    tasks = [get_task(task)] if task is not None else suite_tasks(suite or "")
    console = _console()
    for t in tasks:
        got = download(t, dataset_dir, revision=revision, attempts=attempts, log=console.print)
        if not got.fetched:
            console.print(f"{t.name}: {got.path} already there (validated)")
            continue
        check = "sha256 matches the hub's" if got.hash_checked else "the hub gave no sha256 (size checked)"
        console.print(
            f"{t.name}: {got.path} ({got.bytes / 1e6:.1f} MB, commit {got.commit or '?'}, {check}, validated)"
        )
