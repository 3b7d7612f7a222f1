"""Deterministic evaluation of a policy in the task's real simulator.

Several envs are stepped in lockstep so that each policy call gets a batch of observations.
Seeding: episode i uses seed ``seed * 1000 + i`` through reset(seed=...) AND numpy's global RNG,
because bullet-safety-gym ignores reset(seed=...) and draws from numpy's global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.envs import make_env
from bench.interfaces import Policy
from bench.tasks import Task


@dataclass
class EvalResult:
    """Per-episode raw and normalized scores."""

    returns: np.ndarray
    costs: np.ndarray
    lengths: np.ndarray
    normalized_reward: np.ndarray
    normalized_cost: np.ndarray

    def summary(self) -> dict[str, float]:
        return {
            "reward": float(self.returns.mean()),
            "cost": float(self.costs.mean()),
            "normalized_reward": float(self.normalized_reward.mean()),
            "normalized_cost": float(self.normalized_cost.mean()),
            "episode_length": float(self.lengths.mean()),
        }


def evaluate_policy(
    policy: Policy,
    task: Task,
    threshold: float,
    episodes: int = 20,
    seed: int = 0,
    num_envs: int = 10,
) -> EvalResult:
    """Roll out ``episodes`` deterministic episodes, ``num_envs`` at a time."""
    returns, costs, lengths = [], [], []
    envs = [make_env(task) for _ in range(min(num_envs, episodes))]
    try:
        for first in range(0, episodes, len(envs)):
            batch = envs[: min(len(envs), episodes - first)]
            obs = []
            for i, env in enumerate(batch):
                episode_seed = seed * 1000 + first + i
                np.random.seed(episode_seed)
                o, _ = env.reset(seed=episode_seed)
                obs.append(np.asarray(o, np.float32))
            ret = np.zeros(len(batch))
            cost = np.zeros(len(batch))
            length = np.zeros(len(batch), np.int64)
            alive = np.ones(len(batch), bool)
            obs_arr = np.stack(obs)
            while alive.any():
                idx = np.flatnonzero(alive)
                actions = np.asarray(policy.act(obs_arr[idx]), np.float32)
                for j, a in zip(idx, actions):
                    o, r, terminated, truncated, info = batch[j].step(a)
                    ret[j] += float(r)
                    cost[j] += float(info.get("cost", 0.0))
                    length[j] += 1
                    obs_arr[j] = o
                    if terminated or truncated:
                        alive[j] = False
            returns.append(ret)
            costs.append(cost)
            lengths.append(length)
    finally:
        for env in envs:
            env.close()
    r, c = np.concatenate(returns), np.concatenate(costs)
    nr, nc = task.normalize(r, c, threshold)
    return EvalResult(r, c, np.concatenate(lengths), np.asarray(nr), np.asarray(nc))
