"""`presa-bench data ...`: inspect (and build) DSRL datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Inspect and build DSRL-format datasets.", no_args_is_help=True)


@app.command("info")
def info(
    task: str = typer.Option(..., "--task", help="Short DSRL task name, e.g. BallCircle."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Dataset file or directory (overrides the lookup)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Save the (episode cost, episode reward) scatter here (PNG/PDF)."),
) -> None:
    """Summarize a dataset: episodes, transitions, return and cost statistics, episodes per threshold."""

    from bench.data import load_task_dataset
    from bench.datainfo import scatter_plot, summary_table
    from bench.tasks import get_task

    t = get_task(task)
    ds = load_task_dataset(t, dataset)
    from bench.console import console as _console
    console = _console()
    console.print(summary_table(ds))
    if plot is not None:
        scatter_plot(ds, plot)
        console.print(f"scatter plot saved to {plot}")
