"""Deterministic evaluation of a policy in the task's real simulator.

Several envs are stepped in lockstep so that each policy call gets a batch of observations (one
forward pass per step for up to ``num_envs`` episodes). Seeding: episode i uses seed
``seed * 1000 + i`` through reset(seed=...) AND numpy's global RNG, because bullet-safety-gym
ignores reset(seed=...) and draws its initial state from numpy's global RNG. The batched loop gives
exactly the numbers of a one-env-at-a-time loop (tests/test_evaluation.py checks this), so
``num_envs`` changes speed, never results.

Scores follow DSRL: per episode, normalized reward (R - R_min) / (R_max - R_min) and normalized cost
(C + eps) / (kappa + eps) (eps = 1 only for kappa = 0), then averaged; see Task.normalize, checked
against dsrl's own ``env.unwrapped.get_normalized_score``.

History-dependent policies (e.g. CDT, conditioned on the return- and cost-to-go, as in OSRL's
evaluation) may implement two optional methods, called by duck typing:
``begin(num_envs)`` before a batch of episodes starts, and ``observe(rewards, costs, done)`` after
every ``act`` with the rewards, costs and end flags of exactly the rows that ``act`` got; rows with
``done`` leave the batch, so the next ``act`` gets the remaining rows in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from bench.envs import make_env
from bench.errors import BenchError
from bench.interfaces import Policy
from bench.tasks import Task

#: Seeds of consecutive evaluation calls never overlap while episodes < this.
SEED_STRIDE = 1000
#: Environments stepped together in an evaluation (batched policy inference).
EVAL_NUM_ENVS = 10


class PolicyError(BenchError):
    """The policy returned actions the env cannot take (wrong shape, NaN)."""


def episode_seeds(seed: int, episodes: int) -> np.ndarray:
    """The per-episode seeds of an evaluation with base ``seed``."""
    if episodes > SEED_STRIDE:
        raise ValueError(f"at most {SEED_STRIDE} evaluation episodes per call")
    return seed * SEED_STRIDE + np.arange(episodes, dtype=np.int64)


@dataclass
class EvalResult:
    """Per-episode raw and normalized scores (arrays of length `episodes`)."""

    returns: np.ndarray
    costs: np.ndarray
    lengths: np.ndarray
    normalized_reward: np.ndarray
    normalized_cost: np.ndarray
    seeds: np.ndarray | None = None

    def summary(self) -> dict[str, float]:
        return {
            "reward": float(self.returns.mean()),
            "cost": float(self.costs.mean()),
            "normalized_reward": float(self.normalized_reward.mean()),
            "normalized_cost": float(self.normalized_cost.mean()),
            "episode_length": float(self.lengths.mean()),
        }

    def rows(self) -> list[dict[str, float]]:
        """One dict per episode (the result store's per-episode rows)."""
        seeds = self.seeds if self.seeds is not None else np.full(len(self.returns), -1)
        return [
            {
                "episode": i,
                "episode_seed": int(seeds[i]),
                "return": float(self.returns[i]),
                "cost": float(self.costs[i]),
                "length": int(self.lengths[i]),
                "normalized_reward": float(self.normalized_reward[i]),
                "normalized_cost": float(self.normalized_cost[i]),
            }
            for i in range(len(self.returns))
        ]


def _checked_actions(policy: Policy, obs: np.ndarray, act_dim: int) -> np.ndarray:
    actions = np.asarray(policy.act(obs), np.float32)
    if actions.shape != (len(obs), act_dim):
        raise PolicyError(
            f"policy.act returned actions of shape {actions.shape} for {len(obs)} observations; "
            f"expected ({len(obs)}, {act_dim})"
        )
    if not np.all(np.isfinite(actions)):
        raise PolicyError("policy.act returned NaN/inf actions (did training diverge?)")
    return actions


def evaluate_policy(
    policy: Policy,
    task: Task,
    threshold: float,
    episodes: int = 20,
    seed: int = 0,
    num_envs: int = 10,
    watch: Callable[[int, int, Any, bool], None] | None = None,
) -> EvalResult:
    """Roll out ``episodes`` deterministic episodes, ``num_envs`` at a time (20 = the field's default).
    ``watch(episode, step, env, done)``, if given, sees each env before each of its steps and once
    after its episode ends (done=True); e.g. to film it (bench.browse)."""
    if episodes < 1:
        raise ValueError("episodes must be >= 1")
    seeds = episode_seeds(seed, episodes)
    returns, costs, lengths = [], [], []
    envs = [make_env(task) for _ in range(max(1, min(num_envs, episodes)))]
    act_dim = int(envs[0].action_space.shape[0])
    stateful = callable(getattr(policy, "begin", None)) and callable(getattr(policy, "observe", None))
    try:
        for first in range(0, episodes, len(envs)):
            batch = envs[: min(len(envs), episodes - first)]
            obs = []
            for i, env in enumerate(batch):
                episode_seed = int(seeds[first + i])
                np.random.seed(episode_seed)
                o, _ = env.reset(seed=episode_seed)
                obs.append(np.asarray(o, np.float32))
            ret = np.zeros(len(batch))
            cost = np.zeros(len(batch))
            length = np.zeros(len(batch), np.int64)
            alive = np.ones(len(batch), bool)
            obs_arr = np.stack(obs)
            if stateful:
                policy.begin(len(batch))  # type: ignore[attr-defined]
            while alive.any():
                idx = np.flatnonzero(alive)
                actions = _checked_actions(policy, obs_arr[idx], act_dim)
                step_r, step_c, done = np.zeros(len(idx)), np.zeros(len(idx)), np.zeros(len(idx), bool)
                for k, (j, a) in enumerate(zip(idx, actions)):
                    if watch is not None:
                        watch(first + j, int(length[j]), batch[j], False)
                    o, r, terminated, truncated, info = batch[j].step(a)
                    step_r[k], step_c[k] = float(r), float(info.get("cost", 0.0))
                    ret[j] += step_r[k]
                    cost[j] += step_c[k]
                    length[j] += 1
                    obs_arr[j] = o
                    if terminated or truncated:
                        alive[j] = False
                        done[k] = True
                        if watch is not None:
                            watch(first + j, int(length[j]), batch[j], True)
                if stateful:
                    policy.observe(step_r, step_c, done)  # type: ignore[attr-defined]
            returns.append(ret)
            costs.append(cost)
            lengths.append(length)
    finally:
        for env in envs:
            env.close()
    r, c = np.concatenate(returns), np.concatenate(costs)
    nr, nc = task.normalize(r, c, threshold)
    return EvalResult(r, c, np.concatenate(lengths), np.asarray(nr, float), np.asarray(nc, float), seeds)
