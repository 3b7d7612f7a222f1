"""Reports from the result store: one comparison table per protocol, plots, safety-aware statistics.

Conventions (DSRL, TraC, FISOR tables; see docs/harness.md):
- ONE TABLE, ONE PROTOCOL: cells are grouped by profile, budget protocol, feedback settings and
  dataset (`GROUP_KEYS`); a table never averages across groups. Methods that use no feedback
  (feedback "none") join every feedback group of their profile, protocol and dataset. ``--where
  key=value`` selects cells before grouping (`WHERE_KEYS`).
- rows = tasks grouped by suite, each suite followed by an "Average" row over the tasks of that
  suite that EVERY method of the table has (a missing cell is shown as missing, never averaged);
- per method: normalized reward, normalized cost, and the budget (gradient steps x batch, its share
  of the method's published budget, a dagger when a CPU cap cut it; the footnote says why). Each
  value is the mean over thresholds x seeds x evaluation episodes (per-cell means first);
- a cell is SAFE iff its averaged normalized cost <= 1; safe = bold, unsafe = gray, and the safe
  method with the highest reward in a row is highlighted.
Budgets come from each cell's record: its steps, the batch it trained with (``info.batch_size``
or its config at the budget's batch key), the protocol's planned steps and the published budget
that the sweep stored (``config.budget``); configs/budgets.yaml fills in records without one.
Aggregates (bench.stats, rliable's definitions) use strata (task, threshold) whose runs are the
seeds: IQM of reward and cost, the share of safe runs, the reward among safe runs, and the
probability of improvement of a reference method (``--reference``, default presa) over runs matched
by (task, threshold, seed). Below stats.MIN_SEEDS seeds per stratum no interval, probability of
improvement or best method is given; every table shows n (seeds). A cell below its method's
published budget whose evaluation curve still moves at its end is "not converged" (`with_convergence`):
no best method is named in its row and the summary draws no conclusion from it. Figures are sized
for a paper and captioned with profile, budget and n (`FigureContext`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import stats
from bench.budget import dotted
from bench.errors import BadInput
from bench.tasks import TASKS

DEFAULT_REFERENCE = "presa"
SAFE_LIMIT = 1.0
SUITE_LABELS = {"bullet": "Bullet-Safety-Gym", "safety-gymnasium": "Safety-Gymnasium", "metadrive": "MetaDrive"}
#: What a table holds fixed: cells that differ in any of these are never averaged together.
GROUP_KEYS = ("profile", "budget", "feedback", "dataset")
#: Columns that ``--where key=value`` can select on.
WHERE_KEYS = (*GROUP_KEYS, "task", "suite", "algorithm", "threshold", "seed", "device")
CHECKPOINTS = ("final", "best")
CHECKPOINT_LABELS = {
    "final": "final checkpoint",
    "best": "online-selected best checkpoint (chosen on evaluation seeds disjoint from the reported ones)",
}
UNSTATED = "unstated"
CAP_MARK = "†"


# ------------------------------------------------------------------------------ cells and budgets
def _as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not (isinstance(value, float) and np.isnan(value)) else None
    except (TypeError, ValueError):
        return None


def _budget_table() -> dict[str, Any]:
    from bench.sweep import BUDGETS_FILE, load_budgets

    return load_budgets(BUDGETS_FILE) if BUDGETS_FILE.is_file() else {"algorithms": {}}


def cell_budget(algorithm: str, steps: Any, config: dict[str, Any], info: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
    """One cell's budget from its record: steps and batch run, planned, published, capped (and why)."""
    stated = config.get("budget") or {}
    entry = (table.get("algorithms") or {}).get(algorithm) or {}
    paper = entry.get("paper") or {}
    algo_config = config.get("algorithm_config") or {}
    batch_key = str(stated.get("batch_key") or entry.get("batch_key") or "batch_size")
    configured_batch = _as_int(dotted(algo_config, batch_key))
    batch = _as_int(info.get("batch_size")) or configured_batch
    run = _as_int(steps) or 0
    planned = _as_int(stated.get("planned_steps")) or _as_int(info.get("planned_steps")) or run
    paper_steps = _as_int(stated.get("paper_steps")) or _as_int(paper.get("steps"))
    paper_batch = _as_int(stated.get("paper_batch")) or _as_int(paper.get("batch"))
    capped_steps = run < planned
    capped_batch = batch is not None and configured_batch is not None and batch < configured_batch
    note = str(info.get("budget_note") or "")
    if (capped_steps or capped_batch) and not note:
        parts = ([f"{run:,} of {planned:,} planned steps"] if capped_steps else []) + (
            [f"batch {batch} instead of {configured_batch}"] if capped_batch else [])
        note = f"{algorithm}: " + ", ".join(parts)
    share = None
    if paper_steps and paper_batch and batch:
        share = run * batch / (paper_steps * paper_batch)
    elif paper_steps:
        share = run / paper_steps
    return {
        "budget": str(stated.get("protocol") or UNSTATED),
        "batch": batch,
        "planned_steps": planned,
        "paper_steps": paper_steps,
        "paper_batch": paper_batch,
        "paper_source": str(stated.get("paper_source") or paper.get("source") or ""),
        "unit": str(stated.get("unit") or entry.get("unit") or ""),
        "paper_share": share,
        "capped": bool(capped_steps or capped_batch),
        "cap_note": note if (capped_steps or capped_batch) else "",
    }


#: The "not converged" rule (docs/harness.md, "Convergence"): a cell trained for less than its method's
#: published budget counts as converged only when its online-evaluation curve is flat at the end:
#: over the last TAIL_FRACTION of its steps, normalized reward moved by at most FLAT_REWARD and
#: normalized cost by at most FLAT_COST. A cell without two evaluations to compare cannot show it.
TAIL_FRACTION = 0.2
FLAT_REWARD = 0.05
FLAT_COST = 0.1
NOT_CONVERGED = "not converged"


def _tail_change(points) -> float | None:  # type: ignore[no-untyped-def]
    """|value at the last step - value at the last step <= (1 - TAIL_FRACTION) x that step|; None
    when there is no such earlier evaluation."""
    points = points.sort_values("step")
    last = float(points["step"].iloc[-1])
    before = points[points["step"] <= (1.0 - TAIL_FRACTION) * last]
    if before.empty or last <= 0:
        return None
    return abs(float(points["value"].iloc[-1]) - float(before["value"].iloc[-1]))


def curve_flat(curve) -> bool:  # type: ignore[no-untyped-def]
    """Whether one cell's evaluation curve (long form: step, metric, value) is flat at its end by
    the rule above; False when it has too few evaluations to tell."""
    names = sorted(curve["metric"].unique()) if len(curve) else []
    for pattern, tolerance in (("normalized_reward", FLAT_REWARD), ("normalized_cost", FLAT_COST)):
        metric = _curve_metric(names, pattern)
        change = _tail_change(curve[curve["metric"] == metric]) if metric is not None else None
        if change is None or change > tolerance:
            return False
    return True


def with_convergence(cells, curves):  # type: ignore[no-untyped-def]
    """``cells`` with a ``converged`` column: at (or above) the method's published budget, or below
    it with a flat evaluation curve (`curve_flat` on ``curves``, the store's learning curves)."""
    import pandas as pd

    cells = cells.copy()
    evaluations = curves[curves["source"] == "eval"] if len(curves) and "source" in curves else curves
    by_cell = dict(tuple(evaluations.groupby("cell_id"))) if len(evaluations) else {}
    share = pd.to_numeric(cells["paper_share"], errors="coerce").to_numpy(float) if "paper_share" in cells else np.full(len(cells), np.nan)
    cells["converged"] = [bool(s >= 1.0 - 1e-9) or (cid in by_cell and curve_flat(by_cell[cid]))
                          for cid, s in zip(cells["cell_id"], share)]
    return cells


META = ("profile", "feedback", "dataset_path", "dataset_hash", "device", "steps", "config_json", "info_json")


def cell_scores(episodes, checkpoint: str = "final"):  # type: ignore[no-untyped-def]
    """Per-cell means of the episodes of one checkpoint kind (``final`` or ``best``), with each
    cell's metadata and budget columns (see `cell_budget`)."""
    import pandas as pd

    if checkpoint not in CHECKPOINTS:
        raise BadInput(f"unknown checkpoint '{checkpoint}': choose final or best")
    frame = episodes[episodes["checkpoint"] == checkpoint]
    if frame.empty:
        raise BadInput(f"no '{checkpoint}' evaluation episodes in the results (run a sweep first, or use --checkpoint final)")
    keys = ["cell_id", "task", "suite", "algorithm", "threshold", "seed"]
    values = ["normalized_reward", "normalized_cost", "return", "cost"]
    grouped = frame.groupby(keys, sort=False, observed=True)
    cells = grouped[values].mean().reset_index()
    meta_cols = [c for c in META if c in frame.columns]
    if meta_cols:
        meta = grouped[meta_cols].first().reset_index()
        cells = cells.merge(meta, on=keys, how="left")
    cells = cells.rename(columns={"dataset_path": "dataset_file"})
    cells["episodes"] = grouped.size().to_numpy()
    table = _budget_table()
    budgets = []
    for row in cells.to_dict("records"):
        config = json.loads(row.get("config_json") or "{}") if isinstance(row.get("config_json"), str) else {}
        info = json.loads(row.get("info_json") or "{}") if isinstance(row.get("info_json"), str) else {}
        budgets.append(cell_budget(str(row["algorithm"]), row.get("steps"), config, info, table))
    cells = pd.concat([cells.drop(columns=[c for c in ("config_json", "info_json") if c in cells]), pd.DataFrame(budgets)], axis=1)
    cells["checkpoint"] = checkpoint
    return with_group_columns(cells)


def with_group_columns(cells):  # type: ignore[no-untyped-def]
    """Fill the group columns a frame lacks (hand-made frames, records without a budget)."""
    cells = cells.copy()
    defaults = {"profile": "unknown", "budget": UNSTATED, "feedback": "none", "device": "unknown"}
    for name, value in defaults.items():
        if name not in cells:
            cells[name] = value
        cells[name] = cells[name].fillna(value).astype(str)
    if "dataset" not in cells:
        files = cells["dataset_file"] if "dataset_file" in cells else None
        cells["dataset"] = [dataset_label(f) for f in files] if files is not None else "unknown"
    if "dataset_hash" not in cells:
        cells["dataset_hash"] = ""
    for name, value in (("steps", None), ("batch", None), ("paper_share", None), ("capped", False), ("cap_note", ""),
                        ("paper_steps", None), ("paper_batch", None), ("paper_source", ""), ("unit", ""),
                        ("converged", True)):
        if name not in cells:
            cells[name] = value
    return cells


#: Where the shipped datasets live (any checkout): their cells share the label "shipped".
SHIPPED_DATASETS = ("bench", "assets", "datasets")


def dataset_label(path: Any) -> str:
    """The dataset a cell used, as a group label: its directory ("shipped" for bench/assets/datasets)."""
    if not isinstance(path, str) or not path:
        return "unknown"
    parent = Path(path).parent
    return "shipped" if parent.parts[-3:] == SHIPPED_DATASETS else str(parent)


def apply_where(cells, where: list[str] | tuple[str, ...] | None):  # type: ignore[no-untyped-def]
    """Keep the cells matching every ``key=value`` (threshold and seed compared as numbers)."""
    for clause in where or ():
        key, sep, value = clause.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise BadInput(f"bad --where '{clause}': expected key=value, e.g. --where profile=quick")
        if key not in WHERE_KEYS:
            raise BadInput(f"unknown --where key '{key}': choose {', '.join(WHERE_KEYS)}")
        if key in ("threshold", "seed"):
            try:
                mask = np.isclose(cells[key].astype(float), float(value))
            except ValueError:
                raise BadInput(f"--where {key} needs a number, got '{value}'") from None
        elif key == "dataset":
            mask = (cells["dataset"] == value) | cells["dataset_hash"].astype(str).str.startswith(value) | (
                cells["dataset"].map(lambda d: Path(d).name) == value)
        elif key in ("algorithm", "task", "suite"):
            mask = cells[key].astype(str).str.lower() == value.lower()
        else:
            mask = cells[key].astype(str) == value
        if not np.asarray(mask, bool).any():
            have = ", ".join(sorted({f"{v:g}" if isinstance(v, float) else str(v) for v in cells[key]}))
            raise BadInput(f"no cells match --where {' '.join(where or ())}: {key} is one of {have} here")
        cells = cells[np.asarray(mask, bool)]
    return cells


@dataclass(frozen=True)
class Group:
    profile: str
    budget: str
    feedback: str
    dataset: str

    def where(self) -> str:
        return " ".join(f"--where {k}={getattr(self, k)}" for k in GROUP_KEYS)

    def slug(self) -> str:
        parts = [self.profile, self.budget, self.feedback, Path(self.dataset).name or "data"]
        return "__".join("".join(c if c.isalnum() or c in "-." else "-" for c in p) for p in parts)


def split_groups(cells) -> list[tuple[Group, Any]]:  # type: ignore[no-untyped-def]
    """The cells as (group, cells) pairs, one per table: never two profiles, protocols, feedback
    settings or datasets in one. Cells without feedback join each feedback group of their
    (profile, protocol, dataset); a task whose cells come from two versions of its dataset file
    is refused with the filter that separates them."""
    cells = with_group_columns(cells)
    groups: list[tuple[Group, Any]] = []
    for (profile, budget, dataset), sub in cells.groupby(["profile", "budget", "dataset"], sort=True):
        tags = sorted(set(sub["feedback"]) - {"none"})
        for tag in tags or ["none"]:
            part = sub[(sub["feedback"] == tag) | (sub["feedback"] == "none")]
            versions = part.groupby("task")["dataset_hash"].nunique()
            if (versions > 1).any():
                task = versions[versions > 1].index[0]
                hashes = sorted(set(part.loc[part["task"] == task, "dataset_hash"]))
                raise BadInput(
                    f"task {task} has cells from {len(hashes)} versions of its dataset in {dataset} "
                    f"(hashes {', '.join(h[:8] for h in hashes)}): rerun the stale cells or select one with --where dataset={hashes[0][:8]}"
                )
            groups.append((Group(str(profile), str(budget), str(tag), str(dataset)), part))
    return groups


def method_order(methods, reference: str | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    names = sorted(set(methods))
    ref = reference if reference is not None else DEFAULT_REFERENCE
    return ([ref] if ref in names else []) + [m for m in names if m != ref]


# ------------------------------------------------------------------------------------ the table
@dataclass
class BudgetSummary:
    """The budget of a method's cells in one table entry."""

    steps: tuple[int, int]
    batch: tuple[int, int] | None
    share: tuple[float, float] | None
    capped: bool
    #: False when some cell is not converged (`with_convergence`).
    converged: bool = True

    @staticmethod
    def _span(values: list[Any]) -> tuple[Any, Any] | None:
        values = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
        return (min(values), max(values)) if values else None

    @classmethod
    def of(cls, cells) -> "BudgetSummary":  # type: ignore[no-untyped-def]
        steps = cls._span([_as_int(s) or 0 for s in cells["steps"]]) or (0, 0)
        batch = cls._span([_as_int(b) for b in cells["batch"]])
        share = cls._span([float(s) if s is not None else None for s in cells["paper_share"]])
        converged = bool(cells["converged"].astype(bool).all()) if "converged" in cells else True
        return cls(steps, batch, share, bool(cells["capped"].astype(bool).any()), converged)

    def text(self, mark: bool = True) -> str:
        def span(v: tuple[Any, Any], fmt: str) -> str:
            return format(v[0], fmt) if v[0] == v[1] else f"{format(v[0], fmt)}-{format(v[1], fmt)}"

        out = span(self.steps, ",") + (f"×{span(self.batch, 'd')}" if self.batch else "")
        if self.share is not None:
            out += f" ({_pct(self.share[0])}" + ("" if self.share[0] == self.share[1] else f"-{_pct(self.share[1])}") + ")"
        return out + (CAP_MARK if self.capped and mark else "") + ("" if self.converged else f", {NOT_CONVERGED}")


def _pct(x: float) -> str:
    """A share as a percentage: whole percents from 10%, two significant digits below."""
    return f"{100 * x:.0f}%" if x >= 0.095 else f"{100 * x:.2g}%"


@dataclass
class Entry:
    reward: float
    cost: float
    safe: bool
    best: bool = False
    budget: BudgetSummary | None = None
    runs: int = 0
    #: n: the fewest seeds of any threshold of the entry's task(s) (`seeds_per_cell`).
    seeds: int = 0

    @property
    def converged(self) -> bool:
        return self.budget is None or self.budget.converged


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
    group: Group | None = None
    checkpoint: str = "final"
    #: Tasks every method has (the averages' tasks) and the tasks left out of the averages.
    common_tasks: list[str] = field(default_factory=list)
    left_out: dict[str, list[str]] = field(default_factory=dict)
    footnotes: list[str] = field(default_factory=list)

    def row(self, label: str) -> Row:
        return next(r for r in self.rows if r.label == label)

    def header(self) -> str:
        return table_header(self.group, self.checkpoint)


def describe_protocol(protocol: str) -> str:
    if protocol == "paper":
        return "paper: each method at its own published budget"
    if protocol.startswith("equal-steps="):
        return f"{protocol}: {int(protocol.split('=', 1)[1]):,} gradient steps for every method, each at its own batch"
    if protocol == UNSTATED:
        return "unstated: each method's defaults at the profile (cells run without a sweep --budget)"
    return f"{protocol}: per-method gradient steps of configs/budgets.yaml (protocols.{protocol})"


def table_header(group: Group | None, checkpoint: str = "final") -> str:
    if group is None:
        return f"Scores of the {CHECKPOINT_LABELS[checkpoint]}"
    return (
        f"Budget protocol {describe_protocol(group.budget)}. Profile {group.profile}; feedback {group.feedback}; "
        f"dataset {group.dataset}; scores of the {CHECKPOINT_LABELS[checkpoint]}."
    )


def seeds_per_cell(sub) -> int:  # type: ignore[no-untyped-def]
    """The fewest seeds of any (task, threshold) cell among a method's cells ``sub``."""
    return int(sub.groupby(["task", "threshold"])["seed"].nunique().min()) if len(sub) else 0


def _mark_best(row: Row) -> None:
    """Highlight the safe entry with the highest reward, unless some entry of the row rests on fewer
    than stats.MIN_SEEDS seeds per threshold or is not converged (then the row names no best method:
    the comparison would rest on it)."""
    safe = [e for e in row.entries.values() if e.safe]
    if safe and all(e.seeds >= stats.MIN_SEEDS and e.converged for e in row.entries.values()):
        top = max(e.reward for e in safe)
        for e in safe:
            e.best = bool(np.isclose(e.reward, top))


def _entry(sub) -> Entry:  # type: ignore[no-untyped-def]
    r, c = float(sub["normalized_reward"].mean()), float(sub["normalized_cost"].mean())
    return Entry(r, c, bool(c <= SAFE_LIMIT), budget=BudgetSummary.of(sub), runs=len(sub), seeds=seeds_per_cell(sub))


def comparison_table(cells, reference: str | None = None, group: Group | None = None, checkpoint: str = "final") -> ComparisonTable:  # type: ignore[no-untyped-def]
    """Tasks x methods table of ONE group's cells, with per-suite Average rows over the tasks every
    method has, safe/best marks, budget entries and the footnotes (caps, published budgets)."""
    cells = with_group_columns(cells)
    if group is None and len(split_groups(cells)) > 1:
        raise BadInput("these cells mix profiles, budget protocols, feedback settings or datasets: "
                       "build one table per group (bench.report.split_groups)")
    methods = method_order(cells["algorithm"], reference)
    # the cell mean over (threshold, seed) cells of a task: every cell weighs the same
    task_rank = {name: i for i, name in enumerate(TASKS)}
    tasks = sorted(cells["task"].unique(), key=lambda t: (task_rank.get(t, len(task_rank)), t))
    have = {m: set(cells.loc[cells["algorithm"] == m, "task"]) for m in methods}
    common = [t for t in tasks if all(t in have[m] for m in methods)]
    left_out = {t: [m for m in methods if t not in have[m]] for t in tasks if t not in common}
    suites: dict[str, list[str]] = {}
    for task in tasks:
        suites.setdefault(str(cells.loc[cells["task"] == task, "suite"].iloc[0]), []).append(task)
    rows: list[Row] = []
    for suite, suite_tasks in suites.items():
        for task in suite_tasks:
            row = Row(task, suite, False)
            for method in methods:
                sub = cells[(cells["task"] == task) & (cells["algorithm"] == method)]
                if not sub.empty:
                    row.entries[method] = _entry(sub)
            _mark_best(row)
            rows.append(row)
        averaged = [t for t in suite_tasks if t in common]
        label = f"{SUITE_LABELS.get(suite, suite)} Average"
        if len(averaged) < len(suite_tasks):
            label += f" ({len(averaged)} of {len(suite_tasks)} tasks)"
        average = Row(label, suite, True)
        for method in methods:
            per_task = [rows[[r.label for r in rows].index(t)].entries[method] for t in averaged]
            if per_task:
                r = float(np.mean([e.reward for e in per_task]))
                c = float(np.mean([e.cost for e in per_task]))
                sub = cells[(cells["task"].isin(averaged)) & (cells["algorithm"] == method)]
                average.entries[method] = Entry(r, c, bool(c <= SAFE_LIMIT), budget=BudgetSummary.of(sub), runs=len(sub),
                                                seeds=seeds_per_cell(sub))
        _mark_best(average)
        rows.append(average)
    table = ComparisonTable(methods, rows, group, checkpoint, common, left_out)
    table.footnotes = footnotes(cells, table)
    return table


#: Profiles whose tables check that the pipeline runs, not how methods compare.
PLUMBING_PROFILES = ("smoke",)


def few_seeds(table: ComparisonTable) -> bool:
    """Whether some entry rests on fewer than stats.MIN_SEEDS seeds per threshold."""
    return any(e.seeds < stats.MIN_SEEDS for r in table.rows for e in r.entries.values())


def footnotes(cells, table: ComparisonTable) -> list[str]:  # type: ignore[no-untyped-def]
    notes = []
    if table.group is not None and table.group.profile in PLUMBING_PROFILES:
        notes.append(f"PLUMBING CHECK ONLY: profile {table.group.profile} trains at tiny budgets to check that the "
                     "pipeline runs; its numbers say nothing about the methods.")
    notes.append("n = seeds per (task, threshold) cell (the fewest of the entry's cells)."
                 + (f" n < {stats.MIN_SEEDS} seeds: no intervals, probabilities of improvement or best method are given."
                    if few_seeds(table) else ""))
    notes.append(
        "Budget = gradient steps × batch (per step) that the run trained with; (x%) = its share of the method's "
        "published steps × batch; " + CAP_MARK + " = cut by a CPU cap (below)."
    )
    if any(not e.converged for r in table.rows for e in r.entries.values()):
        notes.append(f"{NOT_CONVERGED}: below the published budget, and the online evaluation's normalized reward moved "
                     f"by more than {FLAT_REWARD:g} or its cost by more than {FLAT_COST:g} over the last "
                     f"{TAIL_FRACTION:.0%} of the steps (or there were too few evaluations to tell). Such an entry's "
                     "numbers are not the method's: no best method is named in its row and the summary draws no "
                     "conclusion from it.")
    if table.left_out:
        missing = "; ".join(f"{t} (missing: {', '.join(ms)})" for t, ms in table.left_out.items())
        notes.append(f"Averages are over the {len(table.common_tasks)} task(s) every method has; left out: {missing}.")
    capped = cells[cells["capped"].astype(bool)]
    for method in table.methods:
        for note in sorted(set(capped.loc[capped["algorithm"] == method, "cap_note"])):
            n = int(((capped["algorithm"] == method) & (capped["cap_note"] == note)).sum())
            notes.append(f"{CAP_MARK} {method} ({n} cell{'s' if n > 1 else ''}): {note}")
    published = []
    for method in table.methods:
        sub = cells[cells["algorithm"] == method]
        steps, batch = _as_int(sub["paper_steps"].iloc[0]), _as_int(sub["paper_batch"].iloc[0])
        if steps:
            unit = str(sub["unit"].iloc[0] or "")
            src = str(sub["paper_source"].iloc[0] or "")
            published.append(f"{method} {steps:,}" + (f"×{batch} {unit}".rstrip() if batch else "") + (f" [{src}]" if src else ""))
    if published:
        notes.append("Published budgets: " + "; ".join(published) + ".")
    return notes


def rich_table(table: ComparisonTable, title: str | None = None):  # type: ignore[no-untyped-def]
    from rich.table import Table

    out = Table(
        title=title or "Normalized reward / cost and budget",
        caption="reward / cost (normalized; cost <= 1 is safe), n = seeds per threshold; 2nd line: steps×batch "
        "(share of the published budget)"
        f"{CAP_MARK}=capped. bold = safe, gray = unsafe, blue = safe with the highest reward",
    )
    out.add_column("Task")
    for method in table.methods:
        out.add_column(method, justify="right")
    for row in table.rows:
        cells = []
        for method in table.methods:
            e = row.entries.get(method)
            if e is None:
                cells.append("[grey50]missing[/]")
                continue
            style = "bold blue" if e.best else ("bold" if e.safe else "grey50")
            cells.append(f"[{style}]{e.reward:.2f} / {e.cost:.2f}[/] [dim]n={e.seeds}[/]\n[dim]{e.budget.text() if e.budget else ''}[/]")
        label = f"[bold]{row.label}[/]" if row.is_average else row.label
        out.add_row(label, *cells, end_section=row.is_average)
    return out


def markdown_table(table: ComparisonTable) -> str:
    def fmt(e: Entry, value: str) -> str:
        if e.best:
            return f"***{value}***"
        if e.safe:
            return f"**{value}**"
        return f'<span style="color:gray">{value}</span>'

    header = "| Task | " + " | ".join(f"{m} reward ↑ | {m} cost ↓ | {m} n | {m} budget" for m in table.methods) + " |"
    lines = [f"**{table.header()}**", "", header, "|---|" + "---:|---:|---:|---:|" * len(table.methods)]
    for row in table.rows:
        label = f"**{row.label}**" if row.is_average else row.label
        cells = []
        for method in table.methods:
            e = row.entries.get(method)
            if e is None:
                cells += ["missing", "missing", "-", "-"]
            else:
                cells += [fmt(e, f"{e.reward:.2f}"), fmt(e, f"{e.cost:.2f}"), str(e.seeds), e.budget.text() if e.budget else "-"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Normalized reward and cost averaged over thresholds, seeds and evaluation episodes. "
        "**Bold**: safe (normalized cost <= 1); gray: unsafe; ***bold italic***: safe with the highest reward in the row."
    )
    lines += [""] + [f"- {note}" for note in table.footnotes]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for char, repl in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"),
                       ("×", r"$\times$"), (CAP_MARK, r"$^\dagger$")):
        text = text.replace(char, repl)
    return text


def latex_table(table: ComparisonTable) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs,xcolor})."""

    def fmt(e: Entry, value: float) -> str:
        if e.best:
            return rf"\textcolor{{blue}}{{\textbf{{{value:.2f}}}}}"
        if e.safe:
            return rf"\textbf{{{value:.2f}}}"
        return rf"\textcolor{{gray}}{{{value:.2f}}}"

    n = len(table.methods)
    lines = [
        "% " + table.header(),
        "% Normalized reward and cost (averaged over thresholds, seeds, episodes); bold = safe (cost <= 1),",
        "% gray = unsafe, blue = safe with the highest reward. Needs \\usepackage{booktabs,xcolor}.",
        *[f"% {note}" for note in table.footnotes],
        r"\begin{tabular}{l" + "cccc" * n + "}",
        r"\toprule",
        " & " + " & ".join(rf"\multicolumn{{4}}{{c}}{{{_latex_escape(m)}}}" for m in table.methods) + r" \\",
        " ".join(rf"\cmidrule(lr){{{2 + 4 * i}-{5 + 4 * i}}}" for i in range(n)),
        "Task & " + " & ".join(r"Reward $\uparrow$ & Cost $\downarrow$ & $n$ & Budget" for _ in table.methods) + r" \\",
        r"\midrule",
    ]
    for row in table.rows:
        cells = []
        for method in table.methods:
            e = row.entries.get(method)
            if e is None:
                cells += ["--", "--", "--", "--"]
            else:
                cells += [fmt(e, e.reward), fmt(e, e.cost), str(e.seeds),
                          rf"\scriptsize {_latex_escape(e.budget.text())}" if e.budget else "--"]
        label = rf"\textbf{{{_latex_escape(row.label)}}}" if row.is_average else _latex_escape(row.label)
        lines.append(f"{label} & " + " & ".join(cells) + r" \\")
        if row.is_average:
            lines.append(r"\midrule")
    if lines[-1] == r"\midrule":
        lines[-1] = r"\bottomrule"
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------- aggregates
Stratum = tuple[str, float]


def common_strata(cells, methods: list[str]) -> list[Stratum]:  # type: ignore[no-untyped-def]
    """The (task, threshold) strata every method has, sorted: a run is only ever compared or
    resampled within its task AND threshold."""
    have = [set(zip(cells.loc[cells["algorithm"] == m, "task"], cells.loc[cells["algorithm"] == m, "threshold"].astype(float)))
            for m in methods]
    return sorted(set.intersection(*have)) if have else []


def score_columns(cells, method: str, value: str, strata: list[Stratum]) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """Per-(task, threshold) arrays of a method's per-cell scores, each in seed order."""
    sub = cells[cells["algorithm"] == method].sort_values("seed")
    return [sub.loc[(sub["task"] == t) & np.isclose(sub["threshold"].astype(float), k), value].to_numpy(float) for t, k in strata]


def matched_columns(cells, x: str, y: str, value: str, strata: list[Stratum]) -> tuple[list[np.ndarray], list[np.ndarray]]:  # type: ignore[no-untyped-def]
    """Per stratum, the scores of x's and y's runs that share task, threshold AND seed (matched
    pairs, aligned); runs without a partner are left out."""
    xs, ys = [], []
    for task, threshold in strata:
        at = cells[(cells["task"] == task) & np.isclose(cells["threshold"].astype(float), threshold)]
        pair = at[at["algorithm"] == x][["seed", value]].merge(at[at["algorithm"] == y][["seed", value]], on="seed").sort_values("seed")
        xs.append(pair[f"{value}_x"].to_numpy(float))
        ys.append(pair[f"{value}_y"].to_numpy(float))
    return xs, ys


def _fewest(columns: list[np.ndarray]) -> int:
    return min((len(c) for c in columns), default=0)


def aggregates(cells, reference: str | None = None, reps: int = stats.DEFAULT_REPS, seed: int = 0):  # type: ignore[no-untyped-def]
    """Per method, over the (task, threshold) strata every method has (runs = seeds):
    IQM of normalized reward and cost, share of safe runs, mean reward among safe runs (each with a
    95% stratified-bootstrap CI, resampling seeds within each stratum), and the reference's
    probability of improvement over each other method on reward (higher) and cost (lower), over
    runs matched by (task, threshold, seed). ``seeds`` = the fewest seeds of any stratum; below
    stats.MIN_SEEDS the row has point estimates only: no interval and no probability of improvement.
    ``reference`` None = presa when it is in the table. Returns (frame, the strata's tasks)."""
    import pandas as pd

    methods = method_order(cells["algorithm"], reference)
    ref = reference if reference is not None else DEFAULT_REFERENCE
    strata = common_strata(cells, methods)
    tasks = sorted({t for t, _ in strata})
    rows: list[dict[str, Any]] = []
    if not strata:
        return pd.DataFrame(rows), tasks
    has_ref = ref in methods
    for method in methods:
        rewards = score_columns(cells, method, "normalized_reward", strata)
        costs = score_columns(cells, method, "normalized_cost", strata)
        seeds = _fewest(rewards)
        row: dict[str, Any] = {"method": method, "tasks": len(tasks), "strata": len(strata), "seeds": seeds,
                               "runs": int(sum(len(c) for c in rewards))}

        def put(name: str, interval: stats.Interval, n: int) -> None:
            enough = n >= stats.MIN_SEEDS
            row.update({name: interval.point, f"{name}_low": interval.low if enough else np.nan,
                        f"{name}_high": interval.high if enough else np.nan})

        put("iqm_reward", stats.stratified_bootstrap_ci(rewards, "iqm", reps=reps, seed=seed), seeds)
        put("iqm_cost", stats.stratified_bootstrap_ci(costs, "iqm", reps=reps, seed=seed), seeds)
        put("safe_share", stats.safe_share_ci(costs, SAFE_LIMIT, reps=reps, seed=seed), seeds)
        put("reward_if_safe", stats.reward_among_safe_ci(rewards, costs, SAFE_LIMIT, reps=reps, seed=seed), seeds)
        if has_ref:
            row["reference"] = ref
            if method != ref:
                for name, value, sign in (("p_ref_higher_reward", "normalized_reward", 1.0), ("p_ref_lower_cost", "normalized_cost", -1.0)):
                    # lower cost is better: P(ref's cost < method's) = P(-cost_ref > -cost_method)
                    xs, ys = matched_columns(cells, ref, method, value, strata)
                    matched = _fewest(xs)
                    if matched >= stats.MIN_SEEDS:
                        put(name, stats.paired_probability_of_improvement_ci([sign * x for x in xs], [sign * y for y in ys], reps, seed=seed), matched)
                    else:
                        row.update({name: np.nan, f"{name}_low": np.nan, f"{name}_high": np.nan})
        rows.append(row)
    return pd.DataFrame(rows), tasks


def summary_text(table: ComparisonTable) -> str:
    """On how many tasks each method is safe, and where each is the best safe method."""
    task_rows = [r for r in table.rows if not r.is_average]
    lines = [table.header()]
    for method in table.methods:
        ran = [r for r in task_rows if method in r.entries]
        unsettled = [r.label for r in ran if not r.entries[method].converged]
        ran = [r for r in ran if r.entries[method].converged]
        safe = [r.label for r in ran if r.entries[method].safe]
        best = [r.label for r in ran if r.entries[method].best]
        lines.append(
            f"{method}: safe on {len(safe)}/{len(ran)} {'converged ' if unsettled else ''}tasks; best safe reward on {len(best)}"
            + (f" ({', '.join(best)})" if best else "")
            + (f"; {NOT_CONVERGED} on {', '.join(unsettled)} (no conclusion drawn)" if unsettled else "")
        )
    for row in (r for r in table.rows if r.is_average):
        winners = [m for m, e in row.entries.items() if e.best]
        if winners:
            verdict = f"best safe method {', '.join(winners)}"
        elif row.entries and min(e.seeds for e in row.entries.values()) < stats.MIN_SEEDS:
            verdict = f"no best method named: n < {stats.MIN_SEEDS} seeds per threshold"
        elif not all(e.converged for e in row.entries.values()):
            verdict = f"no best method named: some method is {NOT_CONVERGED}"
        else:
            verdict = "no method is safe on average"
        lines.append(f"{row.label}: {verdict}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------- plots
#: Figures are sized for a paper: at most PAPER_WIDTH inches wide (a two-column page's full width; a
#: single panel fits a 3.5-inch column), every font >= 8 pt, so they stay readable when printed.
PAPER_WIDTH = 7.0
PAPER_RC = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8,
            "legend.fontsize": 8, "figure.titlesize": 9, "savefig.bbox": "tight"}
#: A normalized reward axis spans at least [0, 1] and a cost axis at least [0, 1.2], so a gap of a
#: few hundredths between methods is drawn as small as it is, never blown up to fill the panel.
REWARD_SPAN = (0.0, 1.0)
COST_SPAN = (0.0, 1.2)
#: Behind a label drawn over data, so lines never run through it.
LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.0}


@dataclass(frozen=True)
class FigureContext:
    """What every figure states: profile, budget per method and the number of seeds (n)."""

    profile: str
    protocol: str
    budgets: dict[str, str]
    seeds: dict[str, int]

    @classmethod
    def of(cls, cells, group: Group | None = None) -> "FigureContext":  # type: ignore[no-untyped-def]
        cells = with_group_columns(cells)
        methods = method_order(cells["algorithm"])
        profile = group.profile if group is not None else "/".join(sorted(set(cells["profile"])))
        protocol = group.budget if group is not None else "/".join(sorted(set(cells["budget"])))
        subs = {m: cells[cells["algorithm"] == m] for m in methods}
        return cls(profile, protocol, {m: BudgetSummary.of(s).text() for m, s in subs.items()},
                   {m: seeds_per_cell(s) for m, s in subs.items()})

    @property
    def fewest_seeds(self) -> int:
        return min(self.seeds.values(), default=0)

    def seeds_text(self) -> str:
        values = sorted(set(self.seeds.values()))
        if len(values) == 1:
            return f"n = {values[0]} seed{'s' if values[0] != 1 else ''} per (task, threshold)"
        return "n = " + ", ".join(f"{n} ({m})" for m, n in self.seeds.items()) + " seeds per (task, threshold)"

    def caption(self, bars: str) -> str:
        """The caption line: profile, budget, n, and what the error bars are (none below stats.MIN_SEEDS)."""
        plumbing = " (PLUMBING CHECK ONLY: numbers mean nothing)" if self.profile in PLUMBING_PROFILES else ""
        budget = "; ".join(f"{m} {b}" for m, b in self.budgets.items())
        errors = (f"no error bars: n < {stats.MIN_SEEDS} seeds" if self.fewest_seeds < stats.MIN_SEEDS else bars)
        return f"Profile {self.profile}{plumbing}. Budget protocol {self.protocol}: {budget}. {self.seeds_text()}; {errors}."


def _caption(fig, text: str, warning: str = "") -> None:  # type: ignore[no-untyped-def]
    """The caption under the figure, wrapped to its width (kept inside the saved image by the tight
    bbox), after a red ``warning`` when there is one."""
    import textwrap

    width, height = fig.get_size_inches()
    top = -0.01
    if warning:
        lines = textwrap.fill(warning, width=int(width * 17))
        fig.text(0.01, top, lines, ha="left", va="top", fontsize=8, color="red")
        top -= (lines.count("\n") + 1) * 8 * 1.3 / 72 / height  # the warning's height in figure units
    fig.text(0.01, top, textwrap.fill(text, width=int(width * 17)), ha="left", va="top", fontsize=8)


def _save(fig, out_dir: Path, name: str) -> list[Path]:  # type: ignore[no-untyped-def]
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        fig.savefig(path, dpi=200, bbox_inches="tight")
        paths.append(path)
    return paths


def _palette(methods: list[str]) -> dict[str, Any]:
    import seaborn as sns

    return dict(zip(methods, sns.color_palette("tab10", max(10, len(methods)))))


def _legend(fig, methods: list[str], palette: dict[str, Any], marker: str = "o", extra: list[Any] | None = None) -> None:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    handles = [plt.Line2D([], [], marker=marker, linestyle="-" if marker == "" else "", color=palette[m],
                          markeredgecolor="black", label=m) for m in methods]
    handles += extra or []
    per_row = max(2, int(fig.get_size_inches()[0] // 1.6))  # as many entries as fit the figure's width
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), per_row), bbox_to_anchor=(0.5, 1.0), frameon=False)


def _span(values: np.ndarray, floor: tuple[float, float], pad: float = 0.05) -> tuple[float, float]:
    """Axis limits covering the data and at least ``floor``, padded by ``pad`` of the span."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    low = min(floor[0], float(values.min())) if values.size else floor[0]
    high = max(floor[1], float(values.max())) if values.size else floor[1]
    margin = pad * (high - low)
    return low - margin, high + margin


def _threshold_line(ax, vertical: bool = True) -> None:  # type: ignore[no-untyped-def]
    """The cost threshold (normalized cost 1), labelled inside the axes so the label is never clipped."""
    if vertical:
        ax.axvline(SAFE_LIMIT, color="red", linestyle="--", linewidth=1)
        ax.text(SAFE_LIMIT, 0.98, "threshold", color="red", rotation=90, ha="right", va="top", fontsize=8,
                transform=ax.get_xaxis_transform(), bbox=LABEL_BOX)
    else:
        ax.axhline(SAFE_LIMIT, color="red", linestyle="--", linewidth=1)
        ax.text(0.01, SAFE_LIMIT, "threshold", color="red", ha="left", va="bottom", fontsize=8,
                transform=ax.get_yaxis_transform(), bbox=LABEL_BOX)


def _seed_means(sub, value: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Per seed, the mean of ``value`` over the seed's cells (its thresholds): the runs to spread over."""
    return sub.groupby("seed")[value].mean().to_numpy(float)


def _standard_error(values: np.ndarray) -> float:
    """Standard error of the mean; NaN below stats.MIN_SEEDS values (no error bar)."""
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) >= stats.MIN_SEEDS else float("nan")


def plot_reward_cost(cells, out_dir: Path, reference: str | None = None, title: str = "",  # type: ignore[no-untyped-def]
                     context: FigureContext | None = None) -> list[Path]:
    """Per task: every cell (small marker, shape = threshold), the method's mean over its cells (large
    circle) with +-1 standard error over seeds (each seed averaged over its thresholds), the threshold
    line at normalized cost 1; axes span at least reward [0, 1] and cost [0, 1.2]."""
    import matplotlib.pyplot as plt

    context = context or FigureContext.of(cells)
    tasks = list(dict.fromkeys(cells["task"]))
    methods = method_order(cells["algorithm"], reference)
    palette = _palette(methods)
    thresholds = sorted(cells["threshold"].unique())
    markers = dict(zip(thresholds, "^sDvP*X"))
    cols = min(2, len(tasks))
    rows = int(np.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.5 * cols, 3.0 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        sub = cells[cells["task"] == task]
        for method in methods:
            m = sub[sub["algorithm"] == method]
            if m.empty:
                continue
            for k, mk in m.groupby("threshold"):
                ax.scatter(mk["normalized_cost"], mk["normalized_reward"], color=palette[method], alpha=0.45, s=14,
                           marker=markers.get(k, "o"))
            x_err = _standard_error(_seed_means(m, "normalized_cost"))
            y_err = _standard_error(_seed_means(m, "normalized_reward"))
            ax.errorbar(m["normalized_cost"].mean(), m["normalized_reward"].mean(),
                        xerr=None if np.isnan(x_err) else x_err, yerr=None if np.isnan(y_err) else y_err,
                        fmt="o", color=palette[method], markersize=8, markeredgecolor="black", capsize=3, zorder=3)
        ax.set_xlim(*_span(sub["normalized_cost"].to_numpy(float), COST_SPAN))
        ax.set_ylim(*_span(sub["normalized_reward"].to_numpy(float), REWARD_SPAN))
        ax.axvspan(ax.get_xlim()[0], SAFE_LIMIT, color="green", alpha=0.05)
        _threshold_line(ax)
        ax.set_title(task)
        ax.set_xlabel("normalized cost (cost / κ)")
        ax.set_ylabel("normalized reward")
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    extra = [plt.Line2D([], [], marker=markers[k], linestyle="", color="gray", alpha=0.6, label=f"one run, κ={k:g}")
             for k in thresholds]
    extra.append(plt.Line2D([], [], marker="o", linestyle="", color="white", markeredgecolor="black", markersize=8,
                            label="mean over runs"))
    if title:
        fig.suptitle(title, y=1.12)
    fig.tight_layout()
    _legend(fig, methods, palette, extra=extra)
    _caption(fig, context.caption("large circles: mean over runs ± 1 standard error over seeds"))
    paths = _save(fig, out_dir, "reward_vs_cost")
    plt.close(fig)
    return paths


def plot_threshold_bars(cells, out_dir: Path, reference: str | None = None, seed: int = 0,  # type: ignore[no-untyped-def]
                        context: FigureContext | None = None) -> list[Path]:
    """Per threshold and method: mean normalized reward and cost over seeds, ± 1 standard error
    (none below stats.MIN_SEEDS seeds, and the caption says so)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    context = context or FigureContext.of(cells)
    methods = method_order(cells["algorithm"], reference)
    palette = _palette(methods)
    data = cells.assign(kappa=cells["threshold"].map(lambda k: f"κ={k:g}"))
    order = [f"κ={k:g}" for k in sorted(cells["threshold"].unique())]
    errorbar = ("se", 1) if context.fewest_seeds >= stats.MIN_SEEDS else None
    fig, axes = plt.subplots(1, 2, figsize=(PAPER_WIDTH, 2.8))
    for ax, value, label, span in ((axes[0], "normalized_reward", "normalized reward ↑", REWARD_SPAN),
                                   (axes[1], "normalized_cost", "normalized cost ↓", COST_SPAN)):
        sns.barplot(data=data, x="kappa", y=value, order=order, hue="algorithm", hue_order=methods, palette=palette,
                    errorbar=errorbar, seed=seed, ax=ax, legend=False, capsize=0.1, err_kws={"linewidth": 1})
        ax.set_ylabel(label)
        ax.set_xlabel("cost threshold")
        ax.set_ylim(*_span(data[value].to_numpy(float), span))
    _threshold_line(axes[1], vertical=False)
    fig.tight_layout()
    _legend(fig, methods, palette, marker="s")
    _caption(fig, context.caption("bars: mean over seeds ± 1 standard error"))
    paths = _save(fig, out_dir, "threshold_bars")
    plt.close(fig)
    return paths


def _curve_metric(names: list[str], pattern: str) -> str | None:
    if pattern == "lambda":
        hits = sorted(n for n in names if "lambda" in n.lower())
    else:
        hits = sorted(n for n in names if n.endswith(pattern))
    return hits[0] if hits else None


CURVE_PANELS = (("normalized reward (online evaluation)", "normalized_reward"), ("normalized cost (online evaluation)", "normalized_cost"))


def plot_learning_curves(curves, out_dir: Path, reference: str | None = None,  # type: ignore[no-untyped-def]
                         context: FigureContext | None = None) -> list[Path]:
    """Online-evaluation reward and cost against gradient steps, per task and method: the mean over
    cells (markers at each evaluation) ± 1 standard error over cells (none below stats.MIN_SEEDS).
    When the methods of a task trained for different numbers of steps, the figure says so in red:
    a value at one step is then a different share of each method's budget."""
    import matplotlib.pyplot as plt

    if "source" in curves:
        curves = curves[curves["source"] == "eval"]  # the online evaluations, not training losses
    if curves.empty:
        return []
    tasks = list(dict.fromkeys(curves["task"]))
    names = sorted(curves["metric"].unique())
    panels = [(title, _curve_metric(names, pattern)) for title, pattern in CURVE_PANELS]
    panels = [(t, m) for t, m in panels if m is not None]
    if not panels:
        return []
    methods = method_order(curves["algorithm"], reference)
    palette = _palette(methods)
    final_steps = curves.groupby(["task", "algorithm"])["step"].max()
    fig, axes = plt.subplots(len(tasks), len(panels), figsize=(PAPER_WIDTH, 2.6 * len(tasks)), squeeze=False)
    warnings_seen: list[str] = []
    for i, task in enumerate(tasks):
        steps = final_steps[task]
        if steps.nunique() > 1:
            warnings_seen.append(f"{task}: " + ", ".join(f"{m} {int(s):,}" for m, s in steps.items()))
        for j, (title, metric) in enumerate(panels):
            ax = axes[i, j]
            sub = curves[(curves["task"] == task) & (curves["metric"] == metric)]
            for method in methods:
                m = sub[sub["algorithm"] == method]
                if m.empty:
                    continue
                by_step = m.groupby("step")["value"]
                mean = by_step.mean()
                ax.plot(mean.index, mean.to_numpy(), color=palette[method], marker="o", markersize=2.5, linewidth=1.2)
                if m["cell_id"].nunique() >= stats.MIN_SEEDS:
                    se = by_step.sem().to_numpy()
                    ax.fill_between(mean.index, mean.to_numpy() - se, mean.to_numpy() + se, color=palette[method], alpha=0.15)
            ax.set_ylim(*_span(sub["value"].to_numpy(float), COST_SPAN if "cost" in metric else REWARD_SPAN))
            if "cost" in metric:
                _threshold_line(ax, vertical=False)
            if (sub["step"] > 0).all() and not sub.empty and steps.max() > 10 * steps.min():
                ax.set_xscale("log")  # budgets differ by 10x and more between methods
            ax.set_title(f"{task}: {title}")
            ax.set_xlabel("gradient step")
    fig.tight_layout()
    _legend(fig, methods, palette, marker="o")
    caption = (context or FigureContext.of(curves.drop_duplicates("cell_id"))).caption(
        "bands: mean ± 1 standard error over runs")
    warning = ("Warning: methods trained for different numbers of steps share an axis ("
               + "; ".join(warnings_seen) + "): a value at one step is a different share of each one's budget."
               if warnings_seen else "")
    _caption(fig, caption, warning)
    paths = _save(fig, out_dir, "learning_curves")
    plt.close(fig)
    return paths


def plot_performance_profiles(cells, out_dir: Path, tasks: list[str], reference: str | None = None,  # type: ignore[no-untyped-def]
                              reps: int = stats.DEFAULT_REPS, seed: int = 0, context: FigureContext | None = None) -> list[Path]:
    """rliable's performance profiles over the common (task, threshold) strata: the share of runs with
    normalized reward > tau, and of runs with normalized cost <= tau, with 95% stratified-bootstrap
    bands (none below stats.MIN_SEEDS seeds)."""
    import matplotlib.pyplot as plt

    if not tasks:
        return []
    context = context or FigureContext.of(cells)
    methods = method_order(cells["algorithm"], reference)
    palette = _palette(methods)
    sub = cells[cells["task"].isin(tasks)]
    r_taus = np.linspace(min(0.0, sub["normalized_reward"].min()), max(1.0, sub["normalized_reward"].max()), 81)
    c_taus = np.linspace(0.0, max(2.0, float(np.nanpercentile(sub["normalized_cost"], 95))), 81)
    fig, axes = plt.subplots(1, 2, figsize=(PAPER_WIDTH, 2.8))
    strata = common_strata(sub, methods)
    bands = context.fewest_seeds >= stats.MIN_SEEDS
    for method in methods:
        rewards = score_columns(cells, method, "normalized_reward", strata)
        costs = score_columns(cells, method, "normalized_cost", strata)
        p, lo, hi = stats.performance_profile_ci(rewards, r_taus, reps=reps, seed=seed)
        axes[0].plot(r_taus, p, color=palette[method])
        if bands:
            axes[0].fill_between(r_taus, lo, hi, color=palette[method], alpha=0.15)
        # share of runs with cost <= tau = 1 - share with cost > tau
        p, lo, hi = stats.performance_profile_ci(costs, c_taus, reps=reps, seed=seed)
        axes[1].plot(c_taus, 1 - p, color=palette[method])
        if bands:
            axes[1].fill_between(c_taus, 1 - hi, 1 - lo, color=palette[method], alpha=0.15)
    axes[0].set_xlabel("normalized reward τ")
    axes[0].set_ylabel("fraction of runs with reward > τ")
    axes[1].set_xlabel("normalized cost τ")
    axes[1].set_ylabel("fraction of runs with cost ≤ τ")
    _threshold_line(axes[1])
    for ax in axes:
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _legend(fig, methods, palette, marker="")
    _caption(fig, f"Performance profiles over {len(strata)} (task, threshold) strata of {len(tasks)} task(s). "
             + context.caption("bands: 95% stratified bootstrap"))
    paths = _save(fig, out_dir, "performance_profiles")
    plt.close(fig)
    return paths


def plot_aggregates(agg, out_dir: Path, context: FigureContext | None = None) -> list[Path]:  # type: ignore[no-untyped-def]
    """IQM reward, IQM cost, safe-run share, reward among safe runs and (with a reference) the
    probability of improvement, each with its 95% stratified-bootstrap CI (none below stats.MIN_SEEDS
    seeds). Every method has a row in every panel: a method with no value there (no safe run, or no
    probability of improvement below 3 matched seeds) is marked in place, never dropped."""
    import matplotlib.pyplot as plt

    if agg.empty:
        return []
    # (column, axis label, what a missing value means, the axis' minimum span)
    panels = [("iqm_reward", "IQM normalized reward ↑", "-", REWARD_SPAN), ("iqm_cost", "IQM normalized cost ↓", "-", COST_SPAN),
              ("safe_share", "share of safe runs ↑", "-", (0.0, 1.0)),
              ("reward_if_safe", "mean reward of the safe runs ↑", "no safe run", REWARD_SPAN)]
    if "p_ref_higher_reward" in agg:
        ref = agg["reference"].iloc[0]
        panels += [("p_ref_higher_reward", f"P({ref} reward higher)", f"n < {stats.MIN_SEEDS}", (0.0, 1.0)),
                   ("p_ref_lower_cost", f"P({ref} cost lower)", f"n < {stats.MIN_SEEDS}", (0.0, 1.0))]
    cols = 3
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(PAPER_WIDTH, (0.28 * len(agg) + 1.0) * rows), squeeze=False)
    y = np.arange(len(agg))
    is_ref = (agg["method"] == agg["reference"]).to_numpy() if "reference" in agg else np.zeros(len(agg), bool)
    for index, (ax, (name, label, missing, span)) in enumerate(zip(axes.flat, panels)):
        point = agg[name].to_numpy(float)
        low, high = agg[f"{name}_low"].to_numpy(float), agg[f"{name}_high"].to_numpy(float)
        ok = np.isfinite(point)
        err = np.vstack([np.where(np.isfinite(low), point - low, 0), np.where(np.isfinite(high), high - point, 0)])
        ax.errorbar(point[ok], y[ok], xerr=err[:, ok], fmt="o", capsize=3, markersize=4)
        ax.set_xlim(*_span(np.concatenate([point, low, high]), span))
        if name.startswith("p_ref"):
            ax.axvline(0.5, color="gray", linestyle=":")
        elif name == "iqm_cost":
            _threshold_line(ax)
        for row in np.flatnonzero(~ok):
            note = "reference" if name.startswith("p_ref") and is_ref[row] else missing
            ax.text(0.02, y[row], note, transform=ax.get_yaxis_transform(), va="center", ha="left",
                    fontsize=8, color="gray", style="italic")
        ax.set_yticks(y, agg["method"] if index % cols == 0 else [""] * len(y))
        ax.set_ylim(len(agg) - 0.5, -0.5)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    strata = int(agg["strata"].iloc[0]) if "strata" in agg else 0
    text = (f"Aggregates over {int(agg['tasks'].iloc[0])} task(s), {strata} (task, threshold) strata. "
            + (context.caption("95% stratified bootstrap CIs") if context is not None else ""))
    _caption(fig, text)
    paths = _save(fig, out_dir, "aggregates")
    plt.close(fig)
    return paths


# ------------------------------------------------------------------------------------- reports
@dataclass
class GroupReport:
    group: Group
    table: ComparisonTable
    aggregates: Any
    aggregate_tasks: list[str]
    summary: str
    out_dir: Path
    files: list[Path] = field(default_factory=list)


@dataclass
class Report:
    groups: list[GroupReport]
    files: list[Path]
    checkpoint: str = "final"
    reference: str | None = None

    # the single-table view (one group), kept for callers of a one-protocol store
    @property
    def table(self) -> ComparisonTable:
        return self.groups[0].table

    @property
    def aggregates(self):  # type: ignore[no-untyped-def]
        return self.groups[0].aggregates

    @property
    def aggregate_tasks(self) -> list[str]:
        return self.groups[0].aggregate_tasks

    @property
    def summary(self) -> str:
        return "\n".join(g.summary for g in self.groups)


def _write_group(g: GroupReport, cells, curves, reps: int, reference: str | None, plots: bool) -> None:  # type: ignore[no-untyped-def]
    out = g.out_dir
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("table.md", markdown_table(g.table)), ("table.tex", latex_table(g.table)), ("summary.txt", g.summary)):
        (out / name).write_text(text)
        g.files.append(out / name)
    g.aggregates.to_csv(out / "aggregates.csv", index=False)
    g.files.append(out / "aggregates.csv")
    if plots:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        context = FigureContext.of(cells, g.group)
        with plt.rc_context(PAPER_RC):
            g.files += plot_reward_cost(cells, out, reference, context=context)
            g.files += plot_threshold_bars(cells, out, reference, context=context)
            g.files += plot_learning_curves(curves[curves["cell_id"].isin(set(cells["cell_id"]))], out, reference,
                                            context=context)
            g.files += plot_performance_profiles(cells, out, g.aggregate_tasks, reference, reps=reps, context=context)
            g.files += plot_aggregates(g.aggregates, out, context=context)


def build_report(
    results_dir: Path | str,
    out_dir: Path | str,
    checkpoint: str = "final",
    reps: int = stats.DEFAULT_REPS,
    plots: bool = True,
    where: list[str] | tuple[str, ...] | None = None,
    reference: str | None = None,
) -> Report:
    """Read the store, split it into one group per protocol (`split_groups`), and write per group
    table.md/.tex, aggregates.csv, summary.txt and the plots; cells.csv (both checkpoints) at the top.
    One group: its files go into out_dir; several: into out_dir/<group>/, listed in out_dir/index.md."""
    import pandas as pd

    from bench.results import load_curves, load_results

    episodes = load_results(results_dir, meta=True)
    if episodes.empty:
        raise BadInput(f"no results in {results_dir} (run `presa-bench run` or `presa-bench sweep` first)")
    curves = load_curves(results_dir)
    cells = apply_where(with_convergence(cell_scores(episodes, checkpoint), curves), where)
    groups = split_groups(cells)
    if reference is not None and not any(reference in set(sub["algorithm"]) for _, sub in groups):
        raise BadInput(f"--reference {reference} has no cells here; methods: {', '.join(sorted(set(cells['algorithm'])))}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reports: list[GroupReport] = []
    for group, sub in groups:
        table = comparison_table(sub, reference, group, checkpoint)
        agg, agg_tasks = aggregates(sub, reference, reps=reps)
        g_out = out if len(groups) == 1 else out / group.slug()
        reports.append(GroupReport(group, table, agg, agg_tasks, summary_text(table), g_out))
        _write_group(reports[-1], sub, curves, reps, reference, plots)
    files = [f for g in reports for f in g.files]
    both = [with_convergence(cell_scores(episodes, k), curves) for k in CHECKPOINTS if (episodes["checkpoint"] == k).any()]
    pd.concat(both, ignore_index=True).to_csv(out / "cells.csv", index=False)
    files.append(out / "cells.csv")
    if len(groups) > 1:
        lines = [f"# {len(groups)} tables: the results mix profiles, budget protocols, feedback settings or datasets", ""]
        lines += [f"- `{g.group.slug()}/`: {g.table.header()} Select it with `{g.group.where()}`." for g in reports]
        (out / "index.md").write_text("\n".join(lines) + "\n")
        files.append(out / "index.md")
    return Report(reports, files, checkpoint, reference)
