"""`presa-bench algos`: the methods `--algo` accepts, what each reads, and its `--set` keys."""

from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("algos")
    def algos_cmd(
        names: Optional[list[str]] = typer.Argument(
            None, help="Methods to describe (a name, package.module:Class or path/to/file.py:Class); default: all."
        ),
        task: str = typer.Option("BallCircle", "--task", help="Task whose defaults are shown (some depend on the suite)."),
        profile: str = typer.Option("quick", "--profile", help="Profile whose budgets fill the step defaults."),
    ) -> None:
        """List each method: what it reads (feedback only, or ground-truth reward and cost) and its --set keys
        with their defaults for --task/--profile and the sources cited for them."""
        from rich.markup import escape
        from rich.table import Table

        from bench import algorithms
        from bench.algo_info import describe
        from bench.console import console
        from bench.interfaces import TrainSpec
        from bench.profiles import get_profile
        from bench.tasks import get_task

        the_task, the_profile = get_task(task), get_profile(profile)
        spec = TrainSpec(task=the_task, threshold=the_task.middle_threshold, seed=0,
                         profile=the_profile, device="cpu")
        out = console()
        for entry in names or algorithms.algorithm_names():
            name, path = algorithms.resolve_algorithm(entry)
            info = describe(name, path, algorithms.load_class(path), spec)
            out.print(f"[bold]{info.name}[/]  reads {info.reads}  ({info.path})")
            if info.summary:
                out.print(f"  {escape(info.summary)}")
            table = Table(title=None, show_edge=False, pad_edge=False)
            for col in ("--set key", f"default ({the_task.name}, {the_profile.name})", "meaning [source of the default]"):
                table.add_column(col, overflow="fold")
            for setting in info.settings:
                table.add_row(setting.key, escape(setting.default), escape(setting.doc))
            out.print(table)
            out.print()
        out.print("Use one with `presa-bench run --algo NAME --set KEY=VALUE`; your own: --algo path/to/file.py:Class "
                  "(docs/extending.md).")
