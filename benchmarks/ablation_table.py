"""The ablation table and its plot, from the stores `make ablations` writes (one per config).

    python benchmarks/ablation_table.py results/ablations [--out results/ablations/report]

Each sub-directory of the given folder is one ablation's result store (results/ablations/NAME/,
NAME = the config under configs/ablations/). Per (ablation, task, threshold), the table shows the
mean over seeds of the normalized reward / cost of the final checkpoint, how many seeds are stored,
and, where the learner logs them, lambda at the end of training and the held-out safety accuracy.
The plot puts every (ablation, threshold) at its mean cost and reward, one panel per task: the
trade-off that delta and lambda control. Cells are read through bench.results only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from bench import report
from bench import results as store

#: Curve metrics shown when the learner logs them (PreSa does; CPL has no lambda).
DIAGNOSTICS = ("lambda", "heldout_safety_accuracy", "heldout_pref_accuracy")


def load_ablation(directory: Path) -> pd.DataFrame:
    """One row per stored cell of one ablation: bench.report's final-checkpoint cell scores and
    budget columns, the git commit, and the last logged diagnostics."""
    episodes = store.load_results(directory, meta=True)
    cells = report.cell_scores(episodes, "final")
    commits = episodes.groupby("cell_id")["git_commit"].first()
    cells = cells.merge(commits, left_on="cell_id", right_index=True, how="left")
    curves = store.load_curves(directory)
    curves = curves[(curves["source"] == "train") & curves["metric"].isin(DIAGNOSTICS)]
    if len(curves):
        last = curves.sort_values("step").groupby(["cell_id", "metric"])["value"].last().unstack("metric")
        cells = cells.merge(last, left_on="cell_id", right_index=True, how="left")
    cells.insert(0, "ablation", directory.name)
    return cells


def _budget(steps: int, batch: int, capped: bool, cap_note: str, feedback: str, dataset_hash: str) -> str:
    cap = f" (capped: {cap_note})" if capped else ""
    return f"{int(steps)} steps x {int(batch)} segments{cap}, feedback {feedback}, dataset {dataset_hash[:8]}"


def summarise(cells: pd.DataFrame) -> pd.DataFrame:
    columns = ["normalized_reward", "normalized_cost", *[m for m in DIAGNOSTICS if m in cells]]
    grouped = cells.groupby(["task", "threshold", "ablation"])
    table = grouped[columns].mean()
    table["seeds"] = grouped["seed"].nunique()
    table["budget"] = grouped.apply(
        lambda g: ", ".join(sorted({_budget(*row) for row in
                                    zip(g["steps"], g["batch"], g["capped"], g["cap_note"], g["feedback"], g["dataset_hash"])}))
    )
    return table.reset_index()


def markdown(table: pd.DataFrame, order: list[str]) -> str:
    lines = []
    for task, rows in table.groupby("task", sort=True):
        budgets = "; ".join(sorted(rows["budget"].unique()))
        thresholds = sorted(rows["threshold"].unique())
        lines.append(
            f"{task}: normalized reward / cost of the final checkpoint, mean over seeds (* = unsafe, cost > 1;"
            f" [n] = seeds stored). Budget: {budgets}.\n"
        )
        lines.append("| ablation | " + " | ".join(f"k = {k:g}" for k in thresholds) + " | lambda end | held-out safety acc |")
        lines.append("|---|" + "---|" * (len(thresholds) + 2))
        for name in order:
            mine = rows[rows["ablation"] == name].set_index("threshold")
            if mine.empty:
                continue
            cells = []
            for k in thresholds:
                if k not in mine.index:
                    cells.append("-")
                    continue
                r = mine.loc[k]
                star = "*" if r["normalized_cost"] > 1.0 else ""
                cells.append(f"{r['normalized_reward']:.3f} / {r['normalized_cost']:.2f}{star} [{int(r['seeds'])}]")
            lam = f"{mine['lambda'].mean():.2f}" if "lambda" in mine and mine["lambda"].notna().any() else "-"
            acc = (
                f"{mine['heldout_safety_accuracy'].mean():.2f}"
                if "heldout_safety_accuracy" in mine and mine["heldout_safety_accuracy"].notna().any()
                else "-"
            )
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {lam} | {acc} |")
        lines.append("")
    return "\n".join(lines)


def plot(table: pd.DataFrame, order: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted(table["task"].unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.5), squeeze=False)
    markers = dict(zip(sorted(table["threshold"].unique()), "os^Dv"))
    palette = plt.cm.tab20.colors  # 20 colours, then they repeat
    colours = {name: palette[i % len(palette)] for i, name in enumerate(order)}
    for ax, task in zip(axes[0], tasks):
        rows = table[table["task"] == task]
        for name in order:
            mine = rows[rows["ablation"] == name]
            for _, r in mine.iterrows():
                ax.scatter(r["normalized_cost"], r["normalized_reward"], color=colours[name], marker=markers[r["threshold"]],
                           label=name if r["threshold"] == mine["threshold"].min() else None)
        ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_title(task)
        ax.set_xlabel("normalized cost (mean over seeds; safe <= 1)")
        ax.set_ylabel("normalized reward")
    named = {}  # every ablation once, from whichever panel has it, in the table's order
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            named.setdefault(label, handle)
    handles = [named[name] for name in order if name in named]
    handles += [plt.Line2D([], [], color="black", marker=m, linestyle="", label=f"k = {k:g}") for k, m in markers.items()]
    fig.tight_layout()
    # outside the panels, so that no point is hidden behind it
    fig.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="folder of ablation stores (results/ablations)")
    parser.add_argument("--out", type=Path, help="where to write ablations.md / .csv / .png (default ROOT/report)")
    args = parser.parse_args(argv)
    stores = sorted(p for p in args.root.iterdir() if p.is_dir() and (p / store.META).is_dir()) if args.root.is_dir() else []
    if not stores:
        print(f"no ablation store under {args.root}: run `make ablations` first", file=sys.stderr)
        return 2
    cells = pd.concat([load_ablation(p) for p in stores], ignore_index=True)
    order = sorted(set(cells["ablation"]), key=lambda name: (name != "default", name))  # the reference row first
    table = summarise(cells)
    out = args.out or args.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(table, order)
    (out / "ablations.md").write_text(text)
    cells.to_csv(out / "ablation_cells.csv", index=False)
    plot(table, order, out / "ablations.png")
    print(text)
    print(f"wrote {out / 'ablations.md'}, {out / 'ablation_cells.csv'}, {out / 'ablations.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
