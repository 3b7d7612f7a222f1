"""`presa-bench run`: train and evaluate one cell (task, algorithm, threshold, seed) and store it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def result_table(frame, title: str):  # type: ignore[no-untyped-def]
    """A rich table of one cell's stored episodes: one row per checkpoint (final, best)."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("checkpoint", "norm. reward", "norm. cost", "safe", "return", "cost", "episodes"):
        table.add_column(col, justify="right" if col != "checkpoint" else "left")
    for checkpoint in ("final", "best"):
        rows = frame[frame["checkpoint"] == checkpoint]
        if rows.empty:
            continue
        nr, nc = rows["normalized_reward"], rows["normalized_cost"]
        safe = nc.mean() <= 1.0
        table.add_row(
            checkpoint,
            f"{nr.mean():.3f} ± {nr.std(ddof=0):.3f}",
            f"{nc.mean():.3f} ± {nc.std(ddof=0):.3f}",
            "[bold green]yes[/]" if safe else "[red]no[/]",
            f"{rows['return'].mean():.1f}",
            f"{rows['cost'].mean():.1f}",
            str(len(rows)),
        )
    return table


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        task: str = typer.Option("BallCircle", "--task", help="DSRL task, e.g. BallCircle (`presa-bench tasks`)."),
        algo: str = typer.Option("presa", "--algo", help="Method: a name from `presa-bench algos`, package.module:Class or path/to/file.py:Class."),
        threshold: Optional[float] = typer.Option(None, "--threshold", help="Cost threshold kappa; default: the task's middle one."),
        seed: int = typer.Option(0, "--seed", help="Random seed (the field uses 0, 10, 20)."),
        dataset: Optional[Path] = typer.Option(None, "--dataset", help="Dataset file or directory (default: the standard lookup)."),
        results: Path = typer.Option(Path("results"), "--results", help="Result store directory."),
        profile: str = typer.Option("quick", "--profile", help="Budget: smoke, quick or paper."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="Config override key=value (repeatable); feedback.KEY goes to the feedback builder."),
        labels: Optional[Path] = typer.Option(None, "--labels", help="Human feedback labels file instead of synthetic labels."),
        num_queries: Optional[int] = typer.Option(None, "--num-queries", help="Synthetic queries (default: the profile's)."),
        threads: int = typer.Option(1, "--threads", help="torch CPU threads (1 is fastest for these small nets on a shared machine)."),
        force: bool = typer.Option(False, "--force", help="Rerun even if the cell is stored with the same config."),
        debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    ) -> None:
        """Train one cell with checkpoints, evaluate its final and best policies, store the result."""
        import json

        from bench.console import STATE

        STATE["debug"] = STATE["debug"] or debug
        import torch
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from bench import results as store
        from bench.console import console
        from bench.runner import CellSpec, parse_overrides, resolve, run_cell

        if threads < 1:
            from bench.errors import BadInput

            raise BadInput("--threads must be >= 1")
        # Measured here: osrl's BC ran 6 steps/s with torch's default threads next to another busy
        # process and 76 steps/s with one thread, so one thread is the default.
        torch.set_num_threads(threads)
        spec = CellSpec(
            task=task,
            algorithm=algo,
            threshold=threshold,
            seed=seed,
            profile=profile,
            dataset=str(dataset) if dataset is not None else None,
            labels_file=str(labels) if labels is not None else None,
            num_queries=num_queries,
            device=device,
            overrides=parse_overrides(set_),
        )
        cell = resolve(spec)
        out = console()
        out.print(f"cell [bold]{cell.key.cell_id}[/]  (config {cell.config_hash}, dataset {cell.dataset_path.name})")
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=console(stderr=True),
            transient=True,
        )

        with progress:
            bar = progress.add_task(f"train {cell.key.algorithm}", total=cell.profile.train_steps, metrics="")

            def on_log(step: int, metrics: dict[str, float]) -> None:
                numbers = [(k, v) for k, v in metrics.items() if k not in ("step", "source") and isinstance(v, (int, float))]
                shown = "  ".join(f"{k} {v:.3g}" for k, v in numbers[:4])
                progress.update(bar, completed=min(step, cell.profile.train_steps), metrics=shown)

            outcome = run_cell(spec, results, force=force, on_log=on_log, resolved=cell)
        if outcome.status == "skipped":
            out.print(f"already stored with the same config: {outcome.path} (use --force to rerun)")
        frame = store.load_results(results, meta=True)
        frame = frame[frame["cell_id"] == cell.key.cell_id]
        out.print(result_table(frame, f"{cell.task.name}, {cell.key.algorithm}, kappa {cell.threshold:g}, seed {cell.key.seed} ({cell.profile.name})"))
        first = frame.iloc[0]
        info = json.loads(first["info_json"] or "{}")
        if info:
            shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in list(info.items())[:10])
            out.print(f"info: {shown}")
        sps = first["steps_per_second"]
        out.print(
            f"{int(first['steps'])} steps in {first['train_seconds']:.1f} s"
            + (f" ({sps:.0f} steps/s)" if sps == sps and sps is not None else "")
            + f", cell {first['wall_seconds']:.1f} s; stored in {store.cell_path(results, cell.key)}"
        )
