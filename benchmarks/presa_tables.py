"""Markdown tables from benchmarks/presa_ballcircle.py outputs (docs/presa.md's test tables).

    python benchmarks/presa_tables.py FILE.json [FILE.json ...]

One table of means over seeds (normalized reward / cost, * = unsafe) per method and threshold,
then PreSa's per-seed values and constraint diagnostics (lambda range and end, held-out gap and
accuracies) per cell, and the bar check: PreSa's mean cost <= 1 and mean reward >= BC-Safe's.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np


def fmt(r: float, c: float) -> str:
    return f"{r:.3f} / {c:.2f}{'*' if c > 1 else ''}"


def main(paths: list[str]) -> None:
    rows = []
    for p in paths:
        d = json.load(open(p))
        rows += d["presa"] + d.get("baselines", [])
    by = defaultdict(list)
    for r in rows:
        by[(r["algo"], r["threshold"])].append(r)
    ks = sorted({k for _, k in by})
    algos = [a for a in ("presa", "cpl", "bc-all", "bc-safe") if any(x == a for x, _ in by)]
    print("| method | " + " | ".join(f"k = {k:g}" for k in ks) + " |")
    print("|---|" + "---|" * len(ks))
    mean = {}
    for a in algos:
        cells = []
        for k in ks:
            rs = by.get((a, k), [])
            if not rs:
                cells.append("-")
                continue
            m = (float(np.mean([x["normalized_reward"] for x in rs])), float(np.mean([x["normalized_cost"] for x in rs])))
            mean[(a, k)] = m
            cells.append(fmt(*m) + ("" if len(rs) == 3 else f" ({len(rs)} seeds)"))
        print(f"| {a} | " + " | ".join(cells) + " |")
    print()
    for a in algos:
        for k in ks:
            rs = sorted(by.get((a, k), []), key=lambda x: x["seed"])
            print(f"{a} k={k:g} per seed: " + ", ".join(f"{x['seed']}: {fmt(x['normalized_reward'], x['normalized_cost'])}" for x in rs))
    print()
    for k in ks:
        for x in sorted(by.get(("presa", k), []), key=lambda x: x["seed"]):
            i = x["info"]
            print(f"presa k={k:g} seed {x['seed']}: lambda {i['lambda_range'][0]:.2f}..{i['lambda_range'][1]:.2f} (end {i['final_lambda']:.2f}), "
                  f"held-out gap {i['heldout_constraint_gap']:+.3f}, held-out safety acc {i['heldout_safety_accuracy']:.2f}, "
                  f"pref acc {i['heldout_pref_accuracy']:.2f}")
    print()
    for k in ks:
        if ("presa", k) in mean and ("bc-safe", k) in mean:
            (pr, pc), (br, _) = mean[("presa", k)], mean[("bc-safe", k)]
            print(f"bar k={k:g}: cost {pc:.2f} {'<=' if pc <= 1 else '>'} 1, reward {pr:.3f} vs BC-Safe {br:.3f} "
                  f"({pr - br:+.3f}) -> {'met' if pc <= 1 and pr >= br else 'MISSED'}")


if __name__ == "__main__":
    main(sys.argv[1:])
