"""`presa-bench results`: maintenance of the result store (migrate the old one-table layout; check
and repair broken cell files)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Maintain the result store: migrate stores written before the three-table layout; check and repair broken cells.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="results")


@app.command("migrate")
def migrate_cmd(
    results: Path = typer.Option(Path("results"), "--results", help="Result store directory."),
) -> None:
    """Convert cells/*.parquet (one table: episodes + curve + metadata) into episodes/, curves/, meta/.

    Atomic per cell (the old file is removed only after the new meta file is written); safe to rerun."""
    from bench import results as store
    from bench.console import console
    from bench.errors import BadInput, BenchError

    if not results.is_dir():
        raise BadInput(f"no result store at {results}")
    todo = len(store.legacy_cells(results))
    out = console()
    report = store.migrate(results)  # also removes an empty cells/ left by an earlier run
    if not todo:
        out.print(f"{results}: nothing to migrate (no {store.CELLS}/*.parquet)")
        return
    out.print(f"{results}: migrated {len(report.migrated)} of {todo} cell(s) into {store.EPISODES}/, {store.CURVES}/, {store.META}/")
    for path, reason in report.kept:
        out.print(f"[yellow]kept {path}[/]: {reason}")
    if report.kept:
        raise BenchError(f"{len(report.kept)} old cell file(s) were not migrated and are kept (see above)")


@app.command("check")
def check_cmd(
    results: Path = typer.Option(Path("results"), "--results", help="Result store directory."),
    repair: bool = typer.Option(False, "--repair", help="Move the files of broken cells to quarantine/<time>/ (never deleted)."),
) -> None:
    """Find cells whose files are unreadable, partial or orphaned; with --repair move them aside so
    that the next run or sweep reruns exactly those cells. Exit 1 when broken cells are left."""
    from bench import results as store
    from bench.console import console
    from bench.errors import BadInput, BenchError

    if not results.is_dir():
        raise BadInput(f"no result store at {results}")
    store.require_migrated(results)
    out = console()
    problems = store.check_store(results)
    for problem in problems:
        out.print(f"{problem.cell_id}: {problem.reason} ({', '.join(str(f) for f in problem.files)})", soft_wrap=True)
    if not problems:
        out.print(f"{results}: every cell reads")
        return
    if not repair:
        raise BenchError(f"{len(problems)} broken cell(s) in {results}; move them aside with: presa-bench results check --repair --results {results}")
    aside = store.quarantine(results, problems)
    out.print(f"moved the files of {len(problems)} cell(s) to {aside}; the next run or sweep reruns them")
