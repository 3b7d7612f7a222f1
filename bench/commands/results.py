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


@app.command("ls")
def ls_cmd(
    results: Path = typer.Option(Path("results"), "--results", help="Result store directory."),
) -> None:
    """List every cell of the store: state (done, failed, running, unfinished), algorithm, task, threshold, seed,
    profile, budget protocol, when it ended, its training and wall times, and the failure of a failed one."""
    from rich.markup import escape
    from rich.table import Table

    from bench.browse import list_cells
    from bench.console import console, print_table
    from bench.live import duration

    cells = list_cells(results)
    table = Table(title=f"{len(cells)} cell(s) in {results}")
    for col in ("cell", "state", "algorithm", "task", "kappa", "seed", "profile", "budget", "ended", "train", "wall", "failure"):
        table.add_column(col, overflow="fold")
    colour = {"done": "green", "failed": "red", "running": "cyan", "unfinished": "yellow"}
    for c in cells:
        table.add_row(
            c.cell_id, f"[{colour[c.state]}]{c.state}[/]", c.algorithm, c.task,
            "-" if c.threshold is None else f"{c.threshold:g}", "-" if c.seed is None else str(c.seed), c.profile,
            c.budget or "-", c.when or "-", "-" if c.train_seconds is None else duration(c.train_seconds),
            "-" if c.wall_seconds is None else duration(c.wall_seconds), escape(c.error) or "-",
        )
    print_table(table)
    counts = {state: sum(c.state == state for c in cells) for state in ("done", "failed", "running", "unfinished")}
    console().print(", ".join(f"{n} {state}" for state, n in counts.items()) + "; details: presa-bench results show CELL")


@app.command("show")
def show_cmd(
    cell: str = typer.Argument(..., help="A cell id from `presa-bench results ls` (or a unique part of one)."),
    results: Path = typer.Option(Path("results"), "--results", help="Result store directory."),
) -> None:
    """One cell: its state, scores, budget, times, failure and full config."""
    import json

    from rich.markup import escape

    from bench.browse import cell_record, find_cell
    from bench.console import console
    from bench.live import duration

    row = find_cell(results, cell)
    record = cell_record(results, row.cell_id)
    out = console()
    out.print(f"[bold]{row.cell_id}[/]: {row.state}")
    meta = record["meta"]
    if meta is not None:
        config = json.loads(meta["config_json"])
        for checkpoint, score in sorted(record["scores"].items()):
            out.print(f"  {checkpoint}: normalized reward {score['normalized_reward']:.3f}, normalized cost "
                      f"{score['normalized_cost']:.3f} (mean over {score['episodes']} episodes)")
        budget = config.get("budget")
        out.print(f"  budget: {escape(json.dumps(budget)) if budget else 'unstated (the method defaults at the profile)'}")
        sps = meta.get("steps_per_second")
        out.print(f"  times: finished {meta['finished_at']}, training {duration(meta['train_seconds'])}, cell "
                  f"{duration(meta['wall_seconds'])}, {meta['steps']} steps"
                  + (f" ({sps:.3g} steps/s)" if sps == sps and sps is not None else "")
                  + f" on {meta['device']} ({meta['hostname']}), git {meta['git_commit'][:10]}{' dirty' if meta['git_dirty'] else ''}")
        out.print(f"  dataset: {meta['dataset_path']}")
        info = json.loads(meta["info_json"] or "{}")
        if info:
            out.print(f"  info: {escape(json.dumps(info))}")
    failure = record["failure"]
    if failure is not None:
        out.print(f"  [red]failed[/] {failure.get('failed_at', '')}: {escape(failure.get('error', ''))}")
        trace = (failure.get("traceback") or "").strip().splitlines()
        for line in trace[-8:]:
            out.print(f"    {escape(line)}")
    if meta is not None:
        out.print("  config:")
        out.print(escape(json.dumps(config, indent=2, sort_keys=True)), soft_wrap=True)
    if meta is None and failure is None:
        out.print(f"  no record yet: a checkpoint in {results}/checkpoints/{row.cell_id}/ (rerun its command to resume it)")


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
