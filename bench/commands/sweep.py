"""`presa-bench sweep`: run a grid of cells (locally or on Slurm), resumable."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer


def _split(values: Optional[list[str]]) -> list[str]:
    """Accept both repeated flags and comma-separated lists: --seeds 0,10 --seeds 20."""
    out: list[str] = []
    for value in values or []:
        out += [v.strip() for v in value.split(",") if v.strip()]
    return out


def _numbers(values: list[str], kind: type, flag: str) -> list:
    try:
        return [kind(v) for v in values]
    except ValueError:
        raise_bad(f"{flag} needs {kind.__name__} values, got {', '.join(values)}")
    return []


def raise_bad(message: str) -> None:
    from bench.errors import BadInput

    raise BadInput(message)


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep_cmd(
        config: Optional[Path] = typer.Option(None, "--config", help="Sweep YAML (configs/*.yaml); flags below override it."),
        tasks: Optional[list[str]] = typer.Option(None, "--tasks", help="Tasks or groups (paper, bullet, safety-gymnasium), comma-separated."),
        algos: Optional[list[str]] = typer.Option(None, "--algos", help="Methods, comma-separated: names from `presa-bench algos`, package.module:Class or path/to/file.py:Class."),
        thresholds: Optional[list[str]] = typer.Option(None, "--thresholds", help="Cost thresholds (default: each task's three)."),
        seeds: Optional[list[str]] = typer.Option(None, "--seeds", help="Seeds (default 0,10,20)."),
        profile: Optional[str] = typer.Option(None, "--profile", help="smoke, quick or paper."),
        budget: Optional[str] = typer.Option(
            None, "--budget",
            help="Budget protocol, stated in every record and report: paper, equal-steps=N, or a named "
            "table of configs/budgets.yaml (bullet, cpu-hour).",
        ),
        dataset: Optional[Path] = typer.Option(None, "--dataset", help="Dataset directory (DSRL naming) or file."),
        results: Path = typer.Option(Path("results"), "--results", help="Result store directory."),
        executor: Optional[str] = typer.Option(None, "--executor", help="local (process pool), slurm, or submitit-local."),
        workers: Optional[int] = typer.Option(None, "--workers", help="Local workers (default: number of cores)."),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="Override key=value for every algorithm (repeatable)."),
        labels: Optional[Path] = typer.Option(None, "--labels", help="Human feedback labels file."),
        num_queries: Optional[int] = typer.Option(None, "--num-queries", help="Synthetic queries (default: the profile's)."),
        device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
        slurm_partition: Optional[str] = typer.Option(None, "--slurm-partition", help="Slurm partition."),
        slurm_timeout_min: Optional[int] = typer.Option(None, "--slurm-timeout-min", help="Slurm time limit per cell (minutes)."),
        slurm_gpus: Optional[int] = typer.Option(None, "--slurm-gpus", help="GPUs per cell on Slurm."),
        slurm_cpus: Optional[int] = typer.Option(None, "--slurm-cpus", help="CPUs per cell on Slurm."),
        slurm_parallelism: Optional[int] = typer.Option(None, "--slurm-parallelism", help="Max array jobs running at once."),
        vectorise: Optional[bool] = typer.Option(
            None, "--vectorise/--no-vectorise",
            help="Train a task/algorithm's seed and threshold cells with one batched train_many call "
            "(PreSa: one ensemble). Default: on where cells train on a GPU, off on CPU (no gain there, measured).",
        ),
        ensemble_size: Optional[int] = typer.Option(None, "--ensemble-size", help="Cells per batch with --vectorise (default: the algorithm's choice)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="List the cells and which are already done; run nothing."),
        fetch_missing: bool = typer.Option(
            False, "--fetch-missing",
            help="First obtain every missing dataset: download DSRL's file, else (offline) `data collect` it; "
            "one resumable unit per task, on the sweep's executor (slurm: one job per task).",
        ),
        fetch_only: bool = typer.Option(False, "--fetch-only", help="With --fetch-missing: obtain the datasets, then stop."),
        collect_profile: str = typer.Option("quick", "--collect-profile", help="Budget of `data collect` for --fetch-missing (smoke, lite, quick, paper)."),
    ) -> None:
        """Run tasks x algorithms x thresholds x seeds; finished cells are skipped, failures recorded."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from bench import sweep as sweeps
        from bench.console import console
        from bench.errors import Interrupted
        from bench.runner import parse_overrides

        cfg = sweeps.load_sweep_config(config) if config is not None else sweeps.SweepConfig()
        if tasks:
            cfg.tasks = _split(tasks)
        if algos:
            cfg.algorithms = _split(algos)
        if thresholds:
            cfg.thresholds = _numbers(_split(thresholds), float, "--thresholds")
        if seeds:
            cfg.seeds = _numbers(_split(seeds), int, "--seeds")
        for name, value in (("profile", profile), ("executor", executor), ("workers", workers), ("num_queries", num_queries), ("device", device), ("vectorise", vectorise), ("ensemble_size", ensemble_size), ("budget", budget)):
            if value is not None:
                setattr(cfg, name, value)
        if dataset is not None:
            cfg.dataset = str(dataset)
        if labels is not None:
            cfg.labels_file = str(labels)
        if set_:
            cfg.overrides = {**cfg.overrides, "all": {**cfg.overrides.get("all", {}), **dict(parse_overrides(set_))}}
        for name, value in (
            ("slurm_partition", slurm_partition),
            ("timeout_min", slurm_timeout_min),
            ("gpus_per_node", slurm_gpus),
            ("cpus_per_task", slurm_cpus),
            ("slurm_array_parallelism", slurm_parallelism),
        ):
            if value is not None:
                cfg.slurm[name] = value

        out = console()
        if fetch_only and not fetch_missing:
            raise_bad("--fetch-only needs --fetch-missing")
        if fetch_missing:
            _fetch(cfg, results, collect_profile, out)
            if fetch_only:
                return
        prepared = sweeps.prepare_sweep(cfg, results)
        if dry_run:
            for p in prepared.planned:
                out.print(f"{'done ' if p.done else 'todo '} {p.resolved.key.cell_id}")
            out.print(f"{len(prepared.planned)} cells, {len(prepared.planned) - len(prepared.todo)} done")
            return
        total = len(prepared.planned)
        stated = f", budget {cfg.budget}" if cfg.budget else ", budget unstated (each method's defaults)"
        out.print(f"sweep: {total} cells ({cfg.profile} profile{stated}, {cfg.executor} executor) -> {results}")
        if prepared.todo:
            from bench.live import sweep_estimate

            out.print(sweep_estimate([p.resolved for p in prepared.todo], results))
        progress = Progress(
            TextColumn("[bold]cells"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console(stderr=True),
        )
        with progress:
            bar = progress.add_task("cells", total=total, status="")

            def update(counts: sweeps.SweepCounts) -> None:
                progress.update(
                    bar,
                    total=counts.total,
                    completed=counts.finished,
                    status=f"done {counts.done}  running {counts.running}  [red]failed {counts.failed}[/]  skipped {counts.skipped}",
                )

            try:
                summary = sweeps.execute_sweep(prepared, update)
            except Interrupted as exc:  # Ctrl-C / SIGTERM: workers stopped; typer would exit 130 silently
                progress.stop()
                print(str(exc), file=sys.stderr, flush=True)
                raise typer.Exit(exc.exit_code) from None
        c = summary.counts
        out.print(
            f"{c.total} cells: {c.done} run, {c.skipped} already done, {c.failed} failed "
            f"in {summary.wall_seconds:.1f} s; results in {results}"
        )
        for failure in summary.failures:
            out.print(f"[red]failed[/] {failure.cell_id}: {failure.error}")
        if summary.failures:
            out.print(f"failure details: {results}/failures/*.json; rerun the same command to retry them")
            raise typer.Exit(1)


def _fetch(cfg, results: Path, collect_profile: str, out) -> None:  # type: ignore[no-untyped-def]
    """--fetch-missing: obtain the datasets the grid's tasks lack; any failure stops the sweep."""
    from bench import sweep as sweeps
    from bench.errors import BenchError
    from bench.fetch import fetch_missing

    names = sweeps.task_names(cfg.tasks)

    def report(o) -> None:  # type: ignore[no-untyped-def]
        out.print(f"dataset {o.task}: {o.how}{' ' + o.path if o.path else ''}{' (' + o.detail + ')' if o.detail and o.how != 'downloaded' else ''}")

    outcomes = fetch_missing(names, cfg.dataset, cfg.executor, collect_profile, dict(cfg.slurm), results, report)
    if not outcomes:
        out.print(f"datasets: all {len(names)} task(s) have one")
    failed = [o for o in outcomes if o.how == "failed"]
    if failed:
        raise BenchError(
            f"could not obtain the dataset(s) of {', '.join(o.task for o in failed)}: {failed[0].detail} "
            "(rerun the same command to resume)"
        )

