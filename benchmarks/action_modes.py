"""Why does cloning a dataset give a timid policy? Per cost band: episodes, reward, how noisy the
actions are, and how far the costly episodes' actions differ from the safe ones' at the same states.

    .venv/bin/python benchmarks/action_modes.py --task BallRun [--dataset FILE]

Printed (docs/datasets.md, "BallRun"):
- per cost band: episodes, reward median / q90, episodes with reward > 600, and the share of
  episodes per estimated action-noise level (std of consecutive action differences / sqrt 2: the
  behaviour policy's mean moves slowly, so this estimates the Gaussian noise std of the rollout);
- the mean action spread among each sampled state's 30 nearest neighbours (standardized
  observations) against the dataset's overall action spread (close = the action at a state is
  mostly noise / several behaviours);
- the steps above the limit (cost 1): the share made by episodes with reward > 600 and the mean
  forward action of each kind there;
- at the same states, the mean forward action (action 0) of episodes with cost > 40 minus that of
  episodes with cost <= 20.
"""

from __future__ import annotations

import argparse

import numpy as np

import bench  # noqa: F401
from bench.data import load_task_dataset
from bench.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="BallRun")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--states", type=int, default=1500, help="states sampled for the neighbour statistics")
    parser.add_argument("--pushes", default="", help="also roll out constant forward pushes, e.g. 1,0.5,0.2,0.15,0.1")
    args = parser.parse_args()
    task = get_task(args.task)
    if args.pushes:
        constant_pushes(task, [float(x) for x in args.pushes.split(",")])
    ds = load_task_dataset(task, args.dataset)
    R, C, ep, a = ds.episode_returns, ds.episode_costs, ds.episodes, ds.actions
    noise = np.array([np.std(np.diff(a[s:e], axis=0)) / np.sqrt(2) for s, e in zip(ep.starts, ep.ends)])
    edges = [-1.0, *task.thresholds, task.max_episode_cost]
    levels = [0.0, 0.1, 0.25, 0.45, np.inf]
    print(f"{ds.path}: {ds.num_episodes} episodes")
    print("cost band | episodes | reward median / q90 | reward > 600 | share by est. noise <0.1 / 0.1-0.25 / 0.25-0.45 / >0.45")
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (C > lo) & (C <= hi)
        if not m.any():
            continue
        share = np.histogram(noise[m], levels)[0] / m.sum()
        print(f"({max(lo, 0):g},{hi:g}] | {m.sum()} | {np.median(R[m]):.0f} / {np.quantile(R[m], 0.9):.0f} | "
              f"{int((R[m] > 600).sum())} | " + " / ".join(f"{x:.2f}" for x in share))
    low = noise < 0.1
    if low.any():
        print(f"nearly noise-free episodes (est. < 0.1): {low.sum()}, cost median {np.median(C[low]):.0f}, "
              f"reward median {np.median(R[low]):.0f}")
    print(f"episodes with reward < 100 (untrained snapshots): {(R < 100).sum()} ({100 * (R < 100).mean():.1f}%)")

    # the steps above the limit (cost 1): who makes them, and what do they do there
    over = ds.costs > 0
    ep_reward = R[ep.episode_of()]
    fast = ep_reward > 600
    print(f"steps with cost: {over.sum()}; from episodes with reward > 600: {100 * (over & fast).sum() / max(over.sum(), 1):.0f}%; "
          f"mean action 0 there: reward > 600 {a[over & fast, 0].mean() if (over & fast).any() else float('nan'):.2f}, "
          f"others {a[over & ~fast, 0].mean():.2f}")
    z = (ds.observations - ds.observations.mean(0)) / (ds.observations.std(0) + 1e-8)
    rng = np.random.default_rng(0)
    sample = rng.choice(len(z), min(args.states, len(z)), replace=False)
    ep_cost = C[ep.episode_of()]
    costly, safe = ep_cost > 40, ep_cost <= task.thresholds[1]
    spreads, gaps = [], []
    for chunk in np.array_split(sample, max(1, len(sample) // 100)):
        d2 = ((z[chunk, None, :] - z[None, :, :]) ** 2).sum(-1)
        for row in np.argsort(d2, axis=1)[:, 1:31]:
            spreads.append(a[row].std(0).mean())
            hi_, lo_ = row[costly[row]], row[safe[row]]
            if len(hi_) >= 3 and len(lo_) >= 3:
                gaps.append(a[hi_, 0].mean() - a[lo_, 0].mean())
    print(f"action std among 30 nearest states: {np.mean(spreads):.3f} (whole dataset: {a.std(0).mean():.3f})")
    print(f"same states, mean action 0 of cost > 40 minus cost <= {task.thresholds[1]:g} episodes: "
          f"{np.mean(gaps):.3f} over {len(gaps)} states")


def constant_pushes(task, pushes: list[float]) -> None:  # type: ignore[no-untyped-def]
    """One episode (seed 0) per constant action [push, 0, ...]: what speed costs on this task."""
    from bench.envs import make_env

    env = make_env(task)
    for push in pushes:
        np.random.seed(0)
        env.reset(seed=0)
        action = np.zeros(env.action_space.shape, np.float32)
        action[0] = push
        ret = cost = 0.0
        done = False
        while not done:
            _, r, terminated, truncated, info = env.step(action)
            ret, cost, done = ret + r, cost + info.get("cost", 0.0), terminated or truncated
        print(f"constant push {push:g}: reward {ret:.0f}, cost {cost:.0f}")
    env.close()


if __name__ == "__main__":
    main()
