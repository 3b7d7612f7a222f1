"""Where does a clone of a BallRun file settle? The mean forward action per forward-velocity bin.

    .venv/bin/python benchmarks/velocity_field.py FILE [FILE ...]

For each file: the observation dimension most correlated with the per-step reward (the forward
velocity, signed so that reward grows with it), the velocity at which per-step cost starts
(5th percentile over the steps with cost), and for 20 equal-count velocity bins: the share of steps
with cost, and the mean forward action (action 0) of the steps of safe episodes (cost <= 20),
of costly ones (cost > 40) and of all. A deterministic clone (BC-All) is driven by roughly the
"all" column (roughly: it also sees the other observation dimensions). docs/datasets.md, "BallRun:
the new file".
"""

from __future__ import annotations

import sys

import h5py
import numpy as np


def main(paths: list[str]) -> None:
    for path in paths:
        with h5py.File(path, "r") as f:
            obs, act = f["observations"][()], f["actions"][()]
            rew, cost = f["rewards"][()], f["costs"][()]
            ends = np.flatnonzero(f["timeouts"][()] | f["terminals"][()])
        corr = [abs(np.corrcoef(obs[:, k], rew)[0, 1]) if obs[:, k].std() > 0 else 0.0 for k in range(obs.shape[1])]
        j = int(np.argmax(corr))
        v = obs[:, j] * np.sign(np.corrcoef(obs[:, j], rew)[0, 1])
        ep_cost = np.zeros(len(rew))
        for s, e in zip(np.r_[0, ends[:-1] + 1], ends):
            ep_cost[s: e + 1] = cost[s: e + 1].sum()
        print(f"{path}: velocity = obs[{j}], per-step cost starts at about {np.percentile(v[cost > 0.5], 5):.3f}")
        edges = np.quantile(v, np.linspace(0, 1, 21))
        for lo, hi in zip(edges[:-1], edges[1:]):
            m = (v >= lo) & (v < hi)
            safe, costly = m & (ep_cost <= 20), m & (ep_cost > 40)

            def mean(mask: np.ndarray) -> str:
                return f"{act[mask, 0].mean():6.2f}" if mask.any() else "     -"

            print(f"  v {lo:5.2f}..{hi:5.2f}  steps {m.sum():5d}  cost/step {cost[m].mean():.2f}  "
                  f"safe {safe.sum():5d} a0 {mean(safe)}  costly {costly.sum():5d} a0 {mean(costly)}  all a0 {mean(m)}")


if __name__ == "__main__":
    main(sys.argv[1:])
