"""`presa-bench report`: comparison table, plots and aggregate statistics from a result store."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        results: Path = typer.Option(Path("results"), "--results", help="Result store directory."),
        out: Path = typer.Option(None, "--out", help="Output directory (default: <results>/report)."),
        checkpoint: str = typer.Option("final", "--checkpoint", help="Which policy to report: final or best."),
        reps: int = typer.Option(2000, "--reps", help="Bootstrap replicates for the CIs (rliable's default is 50000)."),
        plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the PNG/PDF plots."),
    ) -> None:
        """Table (terminal, Markdown, LaTeX), plots, IQM / probability of improvement, and a summary."""
        from rich.table import Table

        from bench.console import console
        from bench.errors import BadInput
        from bench.report import REFERENCE, build_report, rich_table
        from bench.results import load_failures

        if reps < 1:
            raise BadInput("--reps must be >= 1")
        out_dir = out if out is not None else results / "report"
        report = build_report(results, out_dir, checkpoint=checkpoint, reps=reps, plots=plots)
        con = console()
        con.print(rich_table(report.table))
        if not report.aggregates.empty:
            agg = Table(title=f"Aggregates over {len(report.aggregate_tasks)} task(s) x runs (IQM, 95% stratified bootstrap CI, {reps} reps)")
            for col in ("method", "IQM reward", "IQM cost", f"P({REFERENCE} reward higher)", f"P({REFERENCE} cost lower)"):
                agg.add_column(col)
            for row in report.aggregates.to_dict("records"):
                poi_r = row.get("p_presa_better_reward")
                poi_c = row.get("p_presa_lower_cost")
                agg.add_row(
                    row["method"],
                    f"{row['iqm_reward']:.3f} [{row['iqm_reward_low']:.3f}, {row['iqm_reward_high']:.3f}]",
                    f"{row['iqm_cost']:.3f} [{row['iqm_cost_low']:.3f}, {row['iqm_cost_high']:.3f}]",
                    f"{poi_r:.2f} [{row['p_reward_low']:.2f}, {row['p_reward_high']:.2f}]" if poi_r == poi_r and poi_r is not None else "-",
                    f"{poi_c:.2f} [{row['p_cost_low']:.2f}, {row['p_cost_high']:.2f}]" if poi_c == poi_c and poi_c is not None else "-",
                )
            con.print(agg)
        con.print(report.summary)
        failures = load_failures(results)
        if failures:
            con.print(f"[yellow]{len(failures)} failed cell(s) are not in the table: see {results}/failures/[/]")
        con.print(f"wrote {len(report.files)} files to {out_dir}")
