"""Reports from the result store: the field's comparison table, plots, aggregate statistics, summary.

Conventions (DSRL, TraC, FISOR tables; see docs/harness.md):
- rows = tasks grouped by suite, each suite followed by an "Average" row (mean over its tasks);
- columns = (normalized reward, normalized cost) per method, each the mean over thresholds x seeds
  x evaluation episodes (per-cell means first, then the mean over cells: every cell weighs the same);
- a cell is SAFE iff its averaged normalized cost <= 1 (decided on the averaged cost, also for the
  Average rows); safe = bold, unsafe = gray, and the safe method with the highest reward in a row is
  highlighted (blue in the terminal and LaTeX, bold italic in Markdown).
Aggregates (bench.stats, rliable's definitions) use a runs x tasks matrix whose runs are the cells
(threshold, seed) of a task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import stats
from bench.errors import BadInput
from bench.tasks import TASKS

#: PreSa is the reference method of aggregate comparisons (probability of improvement over each baseline).
REFERENCE = "presa"
SAFE_LIMIT = 1.0
SUITE_LABELS = {"bullet": "Bullet-Safety-Gym", "safety-gymnasium": "Safety-Gymnasium", "metadrive": "MetaDrive"}


def cell_scores(episodes, checkpoint: str = "final"):  # type: ignore[no-untyped-def]
    """Per-cell means of the episodes of one checkpoint kind (``final`` or ``best``)."""
    if checkpoint not in ("final", "best"):
        raise BadInput(f"unknown checkpoint '{checkpoint}': choose final or best")
    frame = episodes[episodes["checkpoint"] == checkpoint]
    if frame.empty:
        raise BadInput(f"no '{checkpoint}' evaluation episodes in the results (run a sweep first)")
    keys = ["cell_id", "task", "suite", "algorithm", "threshold", "seed"]
    return (
        frame.groupby(keys, sort=False, observed=True)[["normalized_reward", "normalized_cost", "return", "cost"]]
        .mean()
        .reset_index()
    )


def method_order(methods) -> list[str]:  # type: ignore[no-untyped-def]
    names = sorted(set(methods))
    return ([REFERENCE] if REFERENCE in names else []) + [m for m in names if m != REFERENCE]


@dataclass
class Entry:
    reward: float
    cost: float
    safe: bool
    best: bool = False


@dataclass
class Row:
    label: str
    suite: str
    is_average: bool
    entries: dict[str, Entry] = field(default_factory=dict)


@dataclass
class ComparisonTable:
    methods: list[str]
    rows: list[Row]

    def row(self, label: str) -> Row:
        return next(r for r in self.rows if r.label == label)


def _mark_best(row: Row) -> None:
    safe = [e for e in row.entries.values() if e.safe]
    if safe:
        top = max(e.reward for e in safe)
        for e in safe:
            e.best = bool(np.isclose(e.reward, top))


def comparison_table(cells) -> ComparisonTable:  # type: ignore[no-untyped-def]
    """Tasks x methods table from per-cell scores, with per-suite Average rows and safe/best marks."""
    methods = method_order(cells["algorithm"])
    by_task = cells.groupby(["task", "algorithm"], observed=True)[["normalized_reward", "normalized_cost"]].mean()
    task_rank = {name: i for i, name in enumerate(TASKS)}
    tasks = sorted(cells["task"].unique(), key=lambda t: task_rank.get(t, len(task_rank)))
    suites: dict[str, list[str]] = {}
    for task in tasks:
        suite = str(cells.loc[cells["task"] == task, "suite"].iloc[0])
        suites.setdefault(suite, []).append(task)
    rows: list[Row] = []
    for suite, suite_tasks in suites.items():
        for task in suite_tasks:
            row = Row(task, suite, False)
            for method in methods:
                if (task, method) in by_task.index:
                    r, c = by_task.loc[(task, method)]
                    row.entries[method] = Entry(float(r), float(c), bool(c <= SAFE_LIMIT))
            _mark_best(row)
            rows.append(row)
        average = Row(f"{SUITE_LABELS.get(suite, suite)} Average", suite, True)
        for method in methods:
            values = [by_task.loc[(t, method)] for t in suite_tasks if (t, method) in by_task.index]
            if values:
                r, c = np.mean(values, axis=0)
                average.entries[method] = Entry(float(r), float(c), bool(c <= SAFE_LIMIT))
        _mark_best(average)
        rows.append(average)
    return ComparisonTable(methods, rows)


def rich_table(table: ComparisonTable, title: str = "Normalized reward (higher is better) and cost (<= 1 is safe)"):  # type: ignore[no-untyped-def]
    from rich.table import Table

    out = Table(title=title, caption="bold = safe, gray = unsafe, blue = safe with the highest reward")
    out.add_column("Task")
    for method in table.methods:
        out.add_column(f"{method}\nreward", justify="right")
        out.add_column(f"{method}\ncost", justify="right")
    for row in table.rows:
        cells = []
        for method in table.methods:
            e = row.entries.get(method)
            if e is None:
                cells += ["-", "-"]
                continue
            style = "bold blue" if e.best else ("bold" if e.safe else "grey50")
            cells += [f"[{style}]{e.reward:.2f}[/]", f"[{style}]{e.cost:.2f}[/]"]
        label = f"[bold]{row.label}[/]" if row.is_average else row.label
        out.add_row(label, *cells, end_section=row.is_average)
    return out


def markdown_table(table: ComparisonTable) -> str:
    def fmt(e: Entry | None, value: str) -> str:
        if e is None:
            return "-"
        if e.best:
            return f"***{value}***"
        if e.safe:
            return f"**{value}**"
        return f'<span style="color:gray">{value}</span>'

    header = "| Task | " + " | ".join(f"{m} reward ↑ | {m} cost ↓" for m in table.methods) + " |"
    lines = [header, "|---|" + "---:|---:|" * len(table.methods)]
    for row in table.rows:
        label = f"**{row.label}**" if row.is_average else row.label
        cells = []
        for method in table.methods:
            e = row.entries.get(method)
            cells += [fmt(e, f"{e.reward:.2f}") if e else "-", fmt(e, f"{e.cost:.2f}") if e else "-"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Normalized reward and cost averaged over thresholds, seeds and evaluation episodes. "
        "**Bold**: safe (normalized cost <= 1); gray: unsafe; ***bold italic***: safe with the highest reward in the row."
    )
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for char, repl in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#")):
        text = text.replace(char, repl)
    return text


def latex_table(table: ComparisonTable) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs,xcolor})."""

    def fmt(e: Entry | None, value: float) -> str:
        if e is None:
            return "-"
        if e.best:
            return rf"\textcolor{{blue}}{{\textbf{{{value:.2f}}}}}"
        if e.safe:
            return rf"\textbf{{{value:.2f}}}"
        return rf"\textcolor{{gray}}{{{value:.2f}}}"

    n = len(table.methods)
    lines = [
        "% Normalized reward and cost (averaged over thresholds, seeds, episodes); bold = safe (cost <= 1),",
        "% gray = unsafe, blue = safe with the highest reward. Needs \\usepackage{booktabs,xcolor}.",
        r"\begin{tabular}{l" + "cc" * n + "}",
        r"\toprule",
        " & " + " & ".join(rf"\multicolumn{{2}}{{c}}{{{_latex_escape(m)}}}" for m in table.methods) + r" \\",
        " ".join(rf"\cmidrule(lr){{{2 + 2 * i}-{3 + 2 * i}}}" for i in range(n)),
        "Task & " + " & ".join(r"Reward $\uparrow$ & Cost $\downarrow$" for _ in table.methods) + r" \\",
        r"\midrule",
    ]
    for row in table.rows:
        cells = []
        for method in table.methods:
            e = row.entries.get(method)
            cells += [fmt(e, e.reward) if e else "-", fmt(e, e.cost) if e else "-"]
        label = rf"\textbf{{{_latex_escape(row.label)}}}" if row.is_average else _latex_escape(row.label)
        lines.append(f"{label} & " + " & ".join(cells) + r" \\")
        if row.is_average:
            lines.append(r"\midrule")
    if lines[-1] == r"\midrule":
        lines[-1] = r"\bottomrule"
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


def score_columns(cells, method: str, value: str, tasks: list[str]) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """Per-task arrays of a method's per-cell scores (the runs x tasks matrix, possibly ragged)."""
    sub = cells[cells["algorithm"] == method]
    return [sub.loc[sub["task"] == t, value].to_numpy(float) for t in tasks]


def aggregates(cells, reps: int = stats.DEFAULT_REPS, seed: int = 0):  # type: ignore[no-untyped-def]
    """IQM (stratified-bootstrap CI) of reward and cost per method over the tasks every method ran,
    and PreSa's probability of improvement over each baseline (reward higher, cost lower)."""
    import pandas as pd

    methods = method_order(cells["algorithm"])
    tasks = sorted(set.intersection(*(set(cells.loc[cells["algorithm"] == m, "task"]) for m in methods)))
    rows: list[dict[str, Any]] = []
    if not tasks:
        return pd.DataFrame(rows), tasks
    for method in methods:
        row: dict[str, Any] = {"method": method, "tasks": len(tasks)}
        for value, short in (("normalized_reward", "reward"), ("normalized_cost", "cost")):
            interval = stats.stratified_bootstrap_ci(score_columns(cells, method, value, tasks), "iqm", reps=reps, seed=seed)
            row.update({f"iqm_{short}": interval.point, f"iqm_{short}_low": interval.low, f"iqm_{short}_high": interval.high})
        if REFERENCE in methods and method != REFERENCE:
            ref_r = score_columns(cells, REFERENCE, "normalized_reward", tasks)
            ref_c = score_columns(cells, REFERENCE, "normalized_cost", tasks)
            poi_r = stats.probability_of_improvement_ci(ref_r, score_columns(cells, method, "normalized_reward", tasks), reps, seed=seed)
            # lower cost is better: P(PreSa's cost < baseline's) = P(-cost_presa > -cost_baseline)
            neg = lambda cols: [-c for c in cols]  # noqa: E731
            poi_c = stats.probability_of_improvement_ci(neg(ref_c), neg(score_columns(cells, method, "normalized_cost", tasks)), reps, seed=seed)
            row.update(
                {
                    "p_presa_better_reward": poi_r.point, "p_reward_low": poi_r.low, "p_reward_high": poi_r.high,
                    "p_presa_lower_cost": poi_c.point, "p_cost_low": poi_c.low, "p_cost_high": poi_c.high,
                }
            )
        rows.append(row)
    return pd.DataFrame(rows), tasks


def summary_text(table: ComparisonTable) -> str:
    """On how many tasks each method is safe, and where each is the best safe method."""
    task_rows = [r for r in table.rows if not r.is_average]
    lines = []
    for method in table.methods:
        ran = [r for r in task_rows if method in r.entries]
        safe = [r.label for r in ran if r.entries[method].safe]
        best = [r.label for r in ran if r.entries[method].best]
        lines.append(
            f"{method}: safe on {len(safe)}/{len(ran)} tasks; best safe reward on {len(best)}"
            + (f" ({', '.join(best)})" if best else "")
        )
    for row in (r for r in table.rows if r.is_average):
        winners = [m for m, e in row.entries.items() if e.best]
        lines.append(f"{row.label}: " + (f"best safe method {', '.join(winners)}" if winners else "no method is safe on average"))
    return "\n".join(lines) + "\n"


def _save(fig, out_dir: Path, name: str) -> list[Path]:  # type: ignore[no-untyped-def]
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        fig.savefig(path, dpi=130, bbox_inches="tight")
        paths.append(path)
    return paths


def plot_reward_cost(cells, out_dir: Path) -> list[Path]:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt
    import seaborn as sns

    tasks = list(dict.fromkeys(cells["task"]))
    methods = method_order(cells["algorithm"])
    palette = dict(zip(methods, sns.color_palette("tab10", len(methods))))
    cols = min(4, len(tasks))
    rows = int(np.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.4 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        sub = cells[cells["task"] == task]
        for method in methods:
            m = sub[sub["algorithm"] == method]
            if m.empty:
                continue
            ax.scatter(m["normalized_cost"], m["normalized_reward"], color=palette[method], alpha=0.25, s=12)
            ax.scatter(m["normalized_cost"].mean(), m["normalized_reward"].mean(), color=palette[method], s=70,
                       edgecolor="black", label=method, zorder=3)
        ax.axvline(SAFE_LIMIT, color="red", linestyle="--", linewidth=1)
        ax.set_title(task)
        ax.set_xlabel("normalized cost")
        ax.set_ylabel("normalized reward")
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    # one legend from the palette: a method absent from the first task still appears
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=palette[m], markeredgecolor="black", label=m) for m in methods]
    fig.tight_layout()
    fig.legend(handles=handles, loc="lower center", ncol=len(methods), bbox_to_anchor=(0.5, 1.0))
    paths = _save(fig, out_dir, "reward_vs_cost")
    plt.close(fig)
    return paths


def plot_method_bars(cells, out_dir: Path, seed: int = 0) -> list[Path]:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt
    import seaborn as sns

    methods = method_order(cells["algorithm"])
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.6 * len(methods) * 2), 3.6))
    for ax, value, label in ((axes[0], "normalized_reward", "normalized reward"), (axes[1], "normalized_cost", "normalized cost")):
        sns.barplot(data=cells, x="algorithm", y=value, order=methods, errorbar=("ci", 95), seed=seed, ax=ax,
                    hue="algorithm", hue_order=methods, palette="tab10", legend=False)
        ax.set_ylabel(f"{label} (95% bootstrap CI over cells)")
        ax.set_xlabel("")
    axes[1].axhline(SAFE_LIMIT, color="red", linestyle="--", linewidth=1)
    fig.tight_layout()
    paths = _save(fig, out_dir, "method_bars")
    plt.close(fig)
    return paths


CURVE_PANELS = (("reward", "normalized_reward"), ("cost", "normalized_cost"), ("lambda", "lambda"))


def _curve_metric(names: list[str], pattern: str) -> str | None:
    if pattern == "lambda":
        hits = sorted(n for n in names if "lambda" in n.lower())
    else:
        hits = sorted(n for n in names if n.endswith(pattern))
    return hits[0] if hits else None


def plot_learning_curves(curves, out_dir: Path) -> list[Path]:  # type: ignore[no-untyped-def]
    """Mean over cells of the evaluation reward, cost and (when logged) lambda, per task and method."""
    import matplotlib.pyplot as plt

    if curves.empty:
        return []
    tasks = list(dict.fromkeys(curves["task"]))
    names = sorted(curves["metric"].unique())
    panels = [(title, _curve_metric(names, pattern)) for title, pattern in CURVE_PANELS]
    panels = [(t, m) for t, m in panels if m is not None]
    if not panels:
        return []
    fig, axes = plt.subplots(len(tasks), len(panels), figsize=(4.2 * len(panels), 3.0 * len(tasks)), squeeze=False)
    methods = method_order(curves["algorithm"])
    colors = dict(zip(methods, plt.rcParams["axes.prop_cycle"].by_key()["color"] * (1 + len(methods) // 10)))
    for i, task in enumerate(tasks):
        for j, (title, metric) in enumerate(panels):
            ax = axes[i, j]
            sub = curves[(curves["task"] == task) & (curves["metric"] == metric)]
            for method in methods:
                m = sub[sub["algorithm"] == method]
                if m.empty:
                    continue
                mean = m.groupby("step")["value"].mean()
                ax.plot(mean.index, mean.to_numpy(), label=method, color=colors[method])
            if title == "cost":
                ax.axhline(SAFE_LIMIT, color="red", linestyle="--", linewidth=1)
            ax.set_title(f"{task}: {title}")
            ax.set_xlabel("gradient step")
    # one legend for all panels: a method may log only some metrics (lambda: PreSa only)
    handles = [plt.Line2D([], [], color=colors[m], label=m) for m in methods]
    fig.tight_layout()
    fig.legend(handles=handles, loc="lower center", ncol=len(methods), bbox_to_anchor=(0.5, 1.0))
    paths = _save(fig, out_dir, "learning_curves")
    plt.close(fig)
    return paths


def plot_aggregates(agg, out_dir: Path) -> list[Path]:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    if agg.empty:
        return []
    has_poi = "p_presa_better_reward" in agg
    fig, axes = plt.subplots(1, 3 if has_poi else 2, figsize=(13 if has_poi else 9, 0.5 * len(agg) + 1.6), squeeze=False)
    y = np.arange(len(agg))
    for ax, short, label in ((axes[0, 0], "reward", "IQM normalized reward"), (axes[0, 1], "cost", "IQM normalized cost")):
        point = agg[f"iqm_{short}"].to_numpy()
        err = np.vstack([point - agg[f"iqm_{short}_low"], agg[f"iqm_{short}_high"] - point])
        ax.errorbar(point, y, xerr=err, fmt="o", capsize=4)
        ax.set_yticks(y, agg["method"])
        ax.invert_yaxis()
        ax.set_xlabel(label + " (95% stratified bootstrap CI)")
    axes[0, 1].axvline(SAFE_LIMIT, color="red", linestyle="--", linewidth=1)
    if has_poi:
        base = agg.dropna(subset=["p_presa_better_reward"])
        yb = np.arange(len(base))
        point = base["p_presa_better_reward"].to_numpy()
        err = np.vstack([point - base["p_reward_low"], base["p_reward_high"] - point])
        ax = axes[0, 2]
        ax.errorbar(point, yb, xerr=err, fmt="o", capsize=4)
        ax.set_yticks(yb, [f"{REFERENCE} vs {m}" for m in base["method"]])
        ax.invert_yaxis()
        ax.axvline(0.5, color="gray", linestyle=":")
        ax.set_xlabel("P(reward of PreSa > baseline)")
    fig.tight_layout()
    paths = _save(fig, out_dir, "aggregates")
    plt.close(fig)
    return paths


@dataclass
class Report:
    table: ComparisonTable
    aggregates: Any
    aggregate_tasks: list[str]
    summary: str
    files: list[Path]


def build_report(
    results_dir: Path | str, out_dir: Path | str, checkpoint: str = "final", reps: int = stats.DEFAULT_REPS, plots: bool = True
) -> Report:
    """Read the store, write table.md/.tex/.csv, aggregates.csv, summary.txt and the plots into out_dir."""
    from bench.results import load_curves, load_results

    episodes = load_results(results_dir)
    if episodes.empty:
        raise BadInput(f"no results in {results_dir} (run `presa-bench run` or `presa-bench sweep` first)")
    cells = cell_scores(episodes, checkpoint)
    table = comparison_table(cells)
    agg, agg_tasks = aggregates(cells, reps=reps)
    summary = summary_text(table)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, text in (("table.md", markdown_table(table)), ("table.tex", latex_table(table)), ("summary.txt", summary)):
        (out / name).write_text(text)
        files.append(out / name)
    cells.to_csv(out / "cells.csv", index=False)
    agg.to_csv(out / "aggregates.csv", index=False)
    files += [out / "cells.csv", out / "aggregates.csv"]
    if plots:
        import matplotlib

        matplotlib.use("Agg")
        files += plot_reward_cost(cells, out)
        files += plot_method_bars(cells, out)
        files += plot_learning_curves(load_curves(results_dir), out)
        files += plot_aggregates(agg, out)
    return Report(table, agg, agg_tasks, summary, files)
