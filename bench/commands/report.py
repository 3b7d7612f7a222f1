"""`presa-bench report`: one comparison table per protocol, plots and safety-aware statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _ci(row: dict, name: str, digits: int = 2) -> str:
    point = row.get(name)
    if point is None or point != point:
        return "-"
    low, high = row.get(f"{name}_low"), row.get(f"{name}_high")
    if low is None or low != low:
        return f"{point:.{digits}f}"
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        results: Path = typer.Option(Path("results"), "--results", help="Result store directory."),
        out: Path = typer.Option(None, "--out", help="Output directory (default: <results>/report)."),
        checkpoint: str = typer.Option(
            "final", "--checkpoint",
            help="Which policy to score: final (the last checkpoint) or best (the online-selected one).",
        ),
        where: Optional[list[str]] = typer.Option(
            None, "--where",
            help="Keep only cells with key=value (repeatable): profile, budget, feedback, dataset, task, suite, "
            "algorithm, threshold, seed, device.",
        ),
        reference: Optional[str] = typer.Option(
            None, "--reference", help="Method whose probability of improvement over the others is reported (default: presa)."
        ),
        reps: int = typer.Option(2000, "--reps", help="Bootstrap replicates for the CIs (rliable's default is 50000)."),
        plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the PNG/PDF plots."),
    ) -> None:
        """Tables (terminal, Markdown, LaTeX, one self-contained HTML page) per protocol, plots, IQM / safe share /
        P(improvement), summary."""
        from rich.table import Table

        from bench.console import console
        from bench.errors import BadInput
        from bench.report import build_report, rich_table
        from bench.report_html import write_pages
        from bench.stats import MIN_SEEDS
        from bench.results import load_failures

        if reps < 1:
            raise BadInput("--reps must be >= 1")
        out_dir = out if out is not None else results / "report"
        ref = reference.strip().lower() if reference else None
        report = build_report(results, out_dir, checkpoint=checkpoint, reps=reps, plots=plots, where=where, reference=ref)
        report.files += write_pages(report, f"presa-bench results: {results}")
        con = console()
        if len(report.groups) > 1:
            con.print(
                f"[yellow]{len(report.groups)} tables: the results mix profiles, budget protocols, feedback settings or "
                "datasets, which are never averaged together. Select one with:[/]"
            )
            for g in report.groups:
                con.print(f"  {g.group.where()}")
        for g in report.groups:
            con.print(f"[bold]{g.table.header()}[/]")
            con.print(rich_table(g.table))
            for note in g.table.footnotes:
                con.print(f"[dim]{note}[/]")
            agg = g.aggregates
            if not agg.empty:
                ref_name = agg["reference"].iloc[0] if "reference" in agg else None
                t = Table(title=f"Aggregates over {len(g.aggregate_tasks)} task(s) x runs ({g.table.checkpoint} checkpoint; "
                          f"95% stratified bootstrap CI, {reps} reps)")
                cols = ["method", "runs", "n", "IQM reward", "IQM cost", "safe runs", "reward of safe runs"]
                if ref_name is not None:
                    cols += [f"P({ref_name} reward higher)", f"P({ref_name} cost lower)"]
                for col in cols:
                    t.add_column(col)
                for row in agg.to_dict("records"):
                    values = [row["method"], str(row["runs"]), str(row["seeds"]), _ci(row, "iqm_reward"), _ci(row, "iqm_cost"),
                              _ci(row, "safe_share"), _ci(row, "reward_if_safe")]
                    if ref_name is not None:
                        values += [_ci(row, "p_ref_higher_reward"), _ci(row, "p_ref_lower_cost")]
                    t.add_row(*values)
                con.print(t)
                con.print(f"[dim]n = the fewest seeds of any (task, threshold); below {MIN_SEEDS} no interval or P(improvement).[/]")
            con.print(g.summary)
        failures = load_failures(results)
        if failures:
            con.print(f"[yellow]{len(failures)} failed cell(s) are not in the table: see {results}/failures/[/]")
        con.print(f"wrote {len(report.files)} files to {out_dir}")
