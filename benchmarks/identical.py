"""Are two versions of the code numerically the same? A fixed set of cells, run and compared.

    python benchmarks/identical.py run DIR        # the fixed cells into the store DIR (resumes)
    python benchmarks/identical.py compare A B    # exit 0 iff every stored episode and curve value is equal

The cells (issue 26's list): presa, cpl, bc-all, bc-safe, cdt, bcq-lag and safe-rlhf at the smoke
profile, and PreSa and BC-Safe at the bullet budget (configs/bullet.yaml), all on the shipped
BallCircle at threshold 20, seed 0. Run it once with the old code (a git worktree of the base
commit, PYTHONPATH pointing at it) and once with the new, on the same machine, then compare: a
refactor that promises "no number changes" keeps every episode's return and cost and every curve
value bit-identical. Times, hosts, commits and steps/s are not compared; config hashes are not
either, since a refactor may rename a config key without changing a number.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SMOKE_ALGOS = ("presa", "cpl", "bc-all", "bc-safe", "cdt", "bcq-lag", "safe-rlhf")
BULLET_ALGOS = ("presa", "bc-safe")
TASK, THRESHOLD, SEED = "BallCircle", "20", "0"
#: What identifies a stored row across versions (cell ids carry a config hash, so they may differ).
EPISODE_KEY = ["task", "algorithm", "profile", "checkpoint", "episode"]
CURVE_KEY = ["task", "algorithm", "profile", "source", "metric", "step"]


def run(directory: Path) -> int:
    cli = [sys.executable, "-m", "bench.cli"]
    for algo in SMOKE_ALGOS:
        command = [*cli, "run", "--task", TASK, "--algo", algo, "--threshold", THRESHOLD, "--seed", SEED,
                   "--profile", "smoke", "--results", str(directory / "smoke")]
        if subprocess.run(command).returncode != 0:
            return 1
    command = [*cli, "sweep", "--config", str(ROOT / "configs" / "bullet.yaml"), "--tasks", TASK,
               "--algos", ",".join(BULLET_ALGOS), "--thresholds", THRESHOLD, "--seeds", SEED,
               "--results", str(directory / "bullet"), "--workers", "1"]
    return subprocess.run(command).returncode


def _tables(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from bench import results as store

    episodes, curves = [], []
    for part in ("smoke", "bullet"):
        path = directory / part
        e = store.load_results(path, meta=True)
        c = store.load_curves(path)
        episodes.append(e.assign(part=part))
        curves.append(c.assign(part=part))
    keep_e = ["part", *EPISODE_KEY, "return", "cost", "length", "normalized_reward", "normalized_cost", "episode_seed"]
    keep_c = ["part", *CURVE_KEY, "value"]
    e = pd.concat(episodes)[keep_e].sort_values(["part", *EPISODE_KEY]).reset_index(drop=True)
    c = pd.concat(curves)[keep_c].sort_values(["part", *CURVE_KEY]).reset_index(drop=True)
    return e, c


def compare(a: Path, b: Path) -> int:
    (ea, ca), (eb, cb) = _tables(a), _tables(b)
    same = True
    for name, x, y in (("episodes", ea, eb), ("curves", ca, cb)):
        if x.shape != y.shape or not x.equals(y):
            same = False
            merged = x.merge(y, how="outer", indicator=True, on=list(x.columns))
            print(f"{name} differ: {len(x)} vs {len(y)} rows; rows in one only:")
            print(merged[merged["_merge"] != "both"].head(20).to_string())
        else:
            print(f"{name}: {len(x)} rows, identical")
    cells = sorted(set(zip(ea["part"], ea["algorithm"])))
    print(f"cells compared: {', '.join(f'{algo} ({part})' for part, algo in cells)}")
    return 0 if same else 1


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "run":
        return run(Path(argv[1]))
    if len(argv) == 3 and argv[0] == "compare":
        return compare(Path(argv[1]), Path(argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
