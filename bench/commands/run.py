"""`presa-bench run`: train and evaluate one cell (task, algorithm, threshold, seed) and store it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer


def rounded(value: Any) -> str:
    """An info value for a person: floats (also inside lists and dicts) to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(rounded(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {rounded(v)}" for k, v in value.items()) + "}"
    return str(value)


def result_table(frame, title: str):  # type: ignore[no-untyped-def]
    """A rich table of one cell's stored episodes: one row per checkpoint (final, best)."""
    from rich.table import Table

    table = Table(title=title, caption="mean over the evaluation episodes (std: their standard deviation)")
    for col in ("checkpoint", "norm. reward", "norm. cost", "safe", "return", "cost", "episodes"):
        table.add_column(col, justify="right" if col != "checkpoint" else "left")
    for checkpoint in ("final", "best"):
        rows = frame[frame["checkpoint"] == checkpoint]
        if rows.empty:
            continue
        nr, nc = rows["normalized_reward"], rows["normalized_cost"]
        safe = nc.mean() <= 1.0
        n = len(rows)
        table.add_row(
            checkpoint,
            f"{nr.mean():.3f} (std {nr.std(ddof=0):.3f})",
            f"{nc.mean():.3f} (std {nc.std(ddof=0):.3f})",
            "[bold green]yes[/]" if safe else "[red]no[/]",
            f"{rows['return'].mean():.1f}",
            f"{rows['cost'].mean():.1f}",
            str(n),
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
        profile: str = typer.Option("quick", "--profile", help="Budget: smoke, quick or paper (quick on one CPU thread: PreSa about 14 min, BC-Safe under a minute; an estimate is printed first)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="Config override key=value (repeatable); feedback.KEY goes to the feedback builder."),
        labels: Optional[Path] = typer.Option(None, "--labels", help="Human feedback labels file instead of synthetic labels."),
        num_queries: Optional[int] = typer.Option(None, "--num-queries", help="Synthetic queries (default: the profile's)."),
        threads: int = typer.Option(1, "--threads", help="torch CPU threads (1 is fastest for these small nets on a shared machine)."),
        force: bool = typer.Option(False, "--force", help="Rerun even if the cell is stored with the same config."),
        log: Optional[str] = typer.Option(
            None, "--log", help="Also write every curve as the run goes: tensorboard (event files under <results>/tensorboard/<cell-id>/)."
        ),
        debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    ) -> None:
        """Train one cell with checkpoints, evaluate its final and best policies, store the result."""
        import json
        from contextlib import nullcontext

        from bench.console import STATE

        STATE["debug"] = STATE["debug"] or debug
        import torch
        from rich.markup import escape
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from bench import results as store
        from bench.console import console
        from bench.live import PlainLog, check_sink, estimate, fan_out, open_sink
        from bench.runner import CellSpec, parse_overrides, resolve, run_cell

        if threads < 1:
            from bench.errors import BadInput

            raise BadInput("--threads must be >= 1")
        # Measured here: osrl's BC ran 6 steps/s with torch's default threads next to another busy
        # process and 76 steps/s with one thread, so one thread is the default.
        torch.set_num_threads(threads)
        check_sink(log)
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
        planned = estimate(cell.config, cell.profile.train_steps, results)
        todo = force or not store.is_done(results, cell.key, cell.config_hash)
        if todo:
            out.print(planned.line(cell.key.algorithm))
        err = console(stderr=True)
        label = f"train {cell.key.algorithm}"
        sink = open_sink(log, results, cell.key.cell_id) if todo else None
        if err.is_terminal:
            progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=err,
                transient=True,
            )
            bar = progress.add_task(label, total=planned.steps, metrics="")

            def on_bar(step: int, metrics: dict[str, float]) -> None:
                if metrics.get("source") == "eval":
                    return
                numbers = [(k, v) for k, v in metrics.items() if k not in ("step", "source") and isinstance(v, (int, float))]
                shown = "  ".join(f"{k} {v:.3g}" for k, v in numbers[:4])
                progress.update(bar, completed=min(step, planned.steps), metrics=shown)

            display, shown_live = on_bar, progress
        else:  # a log file or a pipe: plain lines a person can read later (a bar draws nothing there)
            display, shown_live = PlainLog(label, planned.steps), nullcontext()
        try:
            with shown_live:
                outcome = run_cell(spec, results, force=force, on_log=fan_out(display, sink), resolved=cell)
        finally:
            if sink is not None:
                sink.close()
        if sink is not None:
            out.print(f"TensorBoard curves in {sink.directory} (view: tensorboard --logdir {sink.directory.parent})")
        if outcome.status == "skipped":
            out.print(f"already stored with the same config: {outcome.path} (use --force to rerun)")
        frame = store.load_results(results, meta=True)
        frame = frame[frame["cell_id"] == cell.key.cell_id]
        out.print(result_table(frame, f"{cell.task.name}, {cell.key.algorithm}, kappa {cell.threshold:g}, seed {cell.key.seed} ({cell.profile.name})"))
        first = frame.iloc[0]
        info = json.loads(first["info_json"] or "{}")
        if info:
            shown = ", ".join(f"{k} {rounded(v)}" for k, v in list(info.items())[:10])
            out.print(f"info: {escape(shown)}")
        sps = first["steps_per_second"]
        out.print(
            f"{int(first['steps'])} steps in {first['train_seconds']:.1f} s"
            + (f" ({sps:.0f} steps/s)" if sps == sps and sps is not None else "")
            + f", cell {first['wall_seconds']:.1f} s; stored in {store.cell_path(results, cell.key)}"
        )
