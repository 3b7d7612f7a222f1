"""`presa-bench tasks`: the task registry as a table."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("tasks")
    def tasks_cmd(
        all_tasks: bool = typer.Option(False, "--all", help="Also list the unsupported MetaDrive tasks."),
    ) -> None:
        """List the DSRL tasks: suite, env ids, episode length, thresholds, constants, local dataset."""
        from rich.table import Table

        from bench.data import find_dataset
        from bench.errors import DatasetError
        from bench.tasks import TASKS

        table = Table(title="DSRL tasks (constants from dsrl.infos)")
        for col in ("task", "suite", "env id", "T", "thresholds", "reward min..max", "max cost", "dataset"):
            table.add_column(col, overflow="fold")
        for task in TASKS.values():
            if not task.supported and not all_tasks:
                continue
            if task.supported:
                try:
                    where = find_dataset(task).name
                except DatasetError:
                    where = "[yellow]none[/]"
                thresholds = "/".join(f"{k:g}" for k in task.thresholds)
            else:
                where, thresholds = "[red]unsupported[/]", "-"
            table.add_row(
                task.name,
                task.suite,
                task.env_id,
                str(task.episode_length),
                thresholds,
                f"{task.min_episode_reward:.1f}..{task.max_episode_reward:.1f}",
                f"{task.max_episode_cost:g}",
                where,
            )
        from bench.console import console as _console
        from bench.console import print_table

        print_table(table)
        if not all_tasks:
            _console().print("9 MetaDrive tasks are not supported (`--all` shows them and why).")
