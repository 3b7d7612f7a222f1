"""Leave-one-dataset-out (LODO) selection of PreSa's defaults on the development family (issue 27).

    python benchmarks/lodo.py plan  [--family configs/dev-family.yaml] [--data-dir DIR]
    python benchmarks/lodo.py family [--family ...] [--data-dir DIR]      # the family's cards and probes as a table
    python benchmarks/lodo.py run   [--family ...] [--candidates configs/lodo/candidates.yaml] [--results results/lodo] [--workers 2]
    python benchmarks/lodo.py table [--family ...] [--candidates ...] [--results results/lodo] [--out docs/results/lodo]

The family (configs/dev-family.yaml) lists development datasets that are never shipped or reported:
other behaviour-policy learners, cost-limit schedules, action noise, sizes and safe shares. The
candidates (configs/lodo/candidates.yaml) are named PreSa formulations (``--set`` overrides on one
budget). `run` trains every candidate, and BC-Safe for comparison, on every dataset x threshold x
seed through `presa-bench sweep` (one store per (dataset, candidate); reruns resume). `table`
applies the rule below with each dataset left out in turn and scores the chosen candidate on it.

THE RULE (fixed before any trial; ``choose``): on the development cells (every family dataset but
the left-out one, each threshold, mean over seeds of the final checkpoint),
1. a candidate is admissible if its mean normalized cost is <= 1 in every development cell;
2. among admissible candidates, the highest mean normalized reward over the development cells
   wins; candidates within ``REWARD_TIE`` of it count as tied, and of tied ones the higher mean
   held-out safety accuracy wins (safety that comes with separation beats safety by accident);
3. if none is admissible, the candidate whose worst development cell has the lowest cost wins.
The frozen default is ``choose`` on the whole family; the LODO rows estimate how that choice does on
data it never saw.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
#: Rewards closer than this (normalized) are a tie, broken by held-out safety accuracy.
REWARD_TIE = 0.02
#: The baseline each left-out cell is compared with.
BASELINE = "bc-safe"


def load_family(path: Path, data_dir: Path | None) -> tuple[Path, list[dict]]:
    family = yaml.safe_load(path.read_text())
    directory = data_dir or Path(os.environ.get("PRESA_DEV_DATA", family["data_dir"])).expanduser()
    return directory, family["datasets"]


def collect_command(entry: dict, directory: Path) -> str:
    return (f"presa-bench data collect --task {entry['task']} {entry['collect']} --no-probe "
            f"--dataset-dir {shlex.quote(str(directory / entry['name']))}")


def sweep_config(candidates: dict, name: str) -> dict:
    """A sweep YAML for one candidate (or the baseline) at the candidates file's budget."""
    base = {"thresholds": [], "seeds": candidates["seeds"], "profile": candidates["profile"], "executor": "local"}
    if name == BASELINE:
        return {**base, "algorithms": [BASELINE], "budget": candidates["baseline_budget"]}
    return {**base, "algorithms": ["presa"], "overrides": {"presa": {**candidates["base"], **candidates["candidates"][name]}}}


def run(family: Path, candidates_path: Path, results: Path, workers: int, data_dir: Path | None, only: list[str] | None = None) -> int:
    """Every (candidate or baseline, dataset) store, candidate by candidate (so a partial run has
    whole candidates); ``only`` limits it to some names."""
    directory, datasets = load_family(family, data_dir)
    candidates = yaml.safe_load(candidates_path.read_text())
    missing = [d for d in datasets if not (directory / d["name"]).is_dir()]
    if missing:
        for entry in missing:
            print(f"missing development dataset {entry['name']}: {collect_command(entry, directory)}", file=sys.stderr)
        return 2
    names = [*candidates["candidates"], BASELINE]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        print(f"unknown candidate(s) {', '.join(unknown)}: choose from {', '.join(names)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        for name in [n for n in names if not only or n in only]:
            for entry in datasets:
                config = Path(tmp) / f"{name}.yaml"
                config.write_text(yaml.safe_dump(sweep_config(candidates, name)))
                command = [sys.executable, "-m", "bench.cli", "sweep", "--config", str(config), "--tasks", entry["task"],
                           "--dataset", str(directory / entry["name"]), "--results", str(results / entry["name"] / name),
                           "--workers", str(workers)]
                print(f"== {entry['name']} / {name}", flush=True)
                if subprocess.run(command).returncode != 0:
                    return 1
    return 0


def family_table(directory: Path, datasets: list[dict]) -> str:
    """Markdown: each family dataset as its card describes it (recipe, learner, size, safe share at
    kappa 20, reward range, collection time) and its discrimination probe (BC-All / BC-Safe)."""
    import json

    lines = ["| dataset | recipe (learner) | episodes | safe at k = 20 | reward q10 / q50 / q90 | collection | "
             "probe BC-All / BC-Safe at k = 10, 20, 40 (n seeds) | separates at |", "|---|---|---|---|---|---|---|---|"]
    for entry in datasets:
        cards = sorted((directory / entry["name"]).glob("*.json"))
        if not cards:
            lines.append(f"| {entry['name']} | not collected: `{collect_command(entry, directory)}` |" + " |" * 6)
            continue
        card = json.loads(cards[0].read_text())
        data = card["dataset"]
        safe = data["episodes_at_or_below_threshold"]["20"] / data["episodes"]
        q = data["reward_quantiles"]
        minutes = card["timing_seconds"]["total_wall_this_call"] / 60
        collection = f"{minutes:.1f} min" if "max_safe_share" not in card else (
            f"<= {card['max_safe_share']['share']:.0%} safe, from the rollouts of its recipe and seed")
        learner = card["budget"].get("agent", "ppo-lag")
        probe, where = "not probed", "-"
        if card.get("probe"):
            cells = card["probe"]["thresholds"]
            probe = ", ".join(f"{c['unsafe']['normalized_reward']:.2f}/{c['unsafe']['normalized_cost']:.2f} "
                              f"{c['safe']['normalized_reward']:.2f}/{c['safe']['normalized_cost']:.2f}" for c in cells)
            probe += f" ({len(card['probe']['settings']['seeds'])})"
            where = ", ".join(f"{c['threshold']:g}" for c in cells if c["separates"]) or "none"
        lines.append(f"| {entry['name']} | {card['profile']} ({learner}) | {data['episodes']} | {safe:.0%} | "
                     f"{q['q10']:.0f} / {q['q50']:.0f} / {q['q90']:.0f} | {collection} | {probe} | {where} |")
    return "\n".join(lines) + "\n"


def load_cells(results: Path, datasets: list[dict]) -> pd.DataFrame:
    """One row per stored cell: dataset, candidate, task, threshold, seed, scores, held-out accuracy."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ablation_table import load_ablation  # a (dataset, candidate) store reads like an ablation store

    frames = []
    for entry in datasets:
        for store_dir in sorted((results / entry["name"]).glob("*")):
            if store_dir.is_dir():
                cells = load_ablation(store_dir).rename(columns={"ablation": "candidate"})
                cells = cells.drop(columns=["dataset"], errors="ignore")  # the report's dataset label: the family name instead
                cells.insert(0, "dataset", entry["name"])
                frames.append(cells)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summarise(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (dataset, candidate, threshold), with the seed count n."""
    if "heldout_safety_accuracy" not in cells:
        cells = cells.assign(heldout_safety_accuracy=float("nan"))
    grouped = cells.groupby(["dataset", "candidate", "threshold"])
    table = grouped[["normalized_reward", "normalized_cost", "heldout_safety_accuracy"]].mean()
    table["n"] = grouped["seed"].nunique()
    return table.reset_index()


def choose(dev: pd.DataFrame, order: list[str]) -> str:
    """THE RULE of the module docstring, on per-(dataset, candidate, threshold) means."""
    stats = dev.groupby("candidate").agg(
        worst_cost=("normalized_cost", "max"), reward=("normalized_reward", "mean"),
        accuracy=("heldout_safety_accuracy", "mean"),
    ).reindex([c for c in order if c in set(dev["candidate"])])
    admissible = stats[stats["worst_cost"] <= 1.0]
    if admissible.empty:
        return str(stats["worst_cost"].idxmin())
    tied = admissible[admissible["reward"] >= admissible["reward"].max() - REWARD_TIE]
    return str(tied["accuracy"].fillna(-1.0).idxmax())


def lodo(summary: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """For each left-out dataset: the candidate the rule picks on the rest, scored on it, beside BC-Safe."""
    rows = []
    presa = summary[summary["candidate"] != BASELINE]
    for left_out in sorted(summary["dataset"].unique()):
        chosen = choose(presa[presa["dataset"] != left_out], order)
        mine = summary[(summary["dataset"] == left_out)]
        for threshold, cell in mine.groupby("threshold"):
            pick = cell[cell["candidate"] == chosen]
            base = cell[cell["candidate"] == BASELINE]
            if pick.empty:
                continue
            p = pick.iloc[0]
            b = base.iloc[0] if len(base) else None
            rows.append({
                "left_out": left_out, "threshold": threshold, "chosen": chosen,
                "reward": p["normalized_reward"], "cost": p["normalized_cost"], "heldout_safety_accuracy": p["heldout_safety_accuracy"],
                "n": int(p["n"]), "bc_safe_reward": None if b is None else b["normalized_reward"],
                "bc_safe_cost": None if b is None else b["normalized_cost"], "bc_safe_n": None if b is None else int(b["n"]),
            })
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, frozen: str) -> str:
    lines = [f"Frozen default (the rule on the whole family): **{frozen}**.", "",
             "| left out | k | chosen on the rest | PreSa reward / cost [n] | held-out safety acc | BC-Safe reward / cost [n] |",
             "|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        star = "*" if r["cost"] > 1.0 else ""
        base = "-" if pd.isna(r["bc_safe_reward"]) else f"{r['bc_safe_reward']:.3f} / {r['bc_safe_cost']:.2f} [{int(r['bc_safe_n'])}]"
        lines.append(f"| {r['left_out']} | {r['threshold']:g} | {r['chosen']} | {r['reward']:.3f} / {r['cost']:.2f}{star} [{r['n']}] "
                     f"| {r['heldout_safety_accuracy']:.2f} | {base} |")
    lines += ["", "* = unsafe (mean normalized cost > 1). Means over seeds of the final checkpoint; n = seeds."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["plan", "family", "run", "table"])
    parser.add_argument("--family", type=Path, default=ROOT / "configs" / "dev-family.yaml")
    parser.add_argument("--candidates", type=Path, default=ROOT / "configs" / "lodo" / "candidates.yaml")
    parser.add_argument("--data-dir", type=Path, help="where the family's datasets live (default: $PRESA_DEV_DATA, else the family file's data_dir)")
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "lodo")
    parser.add_argument("--out", type=Path, help="where table writes lodo.md / lodo.csv (default RESULTS/report)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", help="run: only these candidates (comma-separated; bc-safe is the baseline)")
    args = parser.parse_args(argv)
    directory, datasets = load_family(args.family, args.data_dir)
    if args.action == "plan":
        for entry in datasets:
            state = "present" if (directory / entry["name"]).is_dir() else "missing"
            print(f"{entry['name']} ({state}): {collect_command(entry, directory)}")
        return 0
    if args.action == "family":
        print(family_table(directory, datasets), end="")
        return 0
    if args.action == "run":
        only = [n for n in args.only.split(",") if n] if args.only else None
        return run(args.family, args.candidates, args.results, args.workers, args.data_dir, only)
    order = list(yaml.safe_load(args.candidates.read_text())["candidates"])
    cells = load_cells(args.results, datasets)
    if cells.empty:
        print(f"no LODO store under {args.results}: run `python benchmarks/lodo.py run` first", file=sys.stderr)
        return 2
    summary = summarise(cells)
    table = lodo(summary, order)
    frozen = choose(summary[summary["candidate"] != BASELINE], order)
    out = args.out or args.results / "report"
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "lodo_grid.csv", index=False)
    table.to_csv(out / "lodo.csv", index=False)
    text = markdown(table, frozen)
    (out / "lodo.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
