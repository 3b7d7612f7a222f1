"""Evaluation: DSRL normalization (checked against dsrl itself), batched == one-env loop, seeding."""

from __future__ import annotations

import numpy as np
import pytest

import bench  # noqa: F401
from bench.envs import make_env, space_shapes
from bench.evaluation import PolicyError, episode_seeds, evaluate_policy
from bench.tasks import get_task


class LinearTanhPolicy:
    def __init__(self, task_name: str, scale: float = 0.3, seed: int = 0) -> None:
        obs_shape, act_shape = space_shapes(get_task(task_name))
        self.weights = np.random.default_rng(seed).normal(size=(obs_shape[0], act_shape[0])) * scale
        self.batch_sizes: list[int] = []

    def act(self, observations: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(observations))
        return np.tanh(observations @ self.weights)


def one_env_loop(policy, task_name: str, episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An independent, plain one-episode-at-a-time evaluation loop (the reference)."""
    env = make_env(get_task(task_name))
    returns, costs = [], []
    for s in episode_seeds(seed, episodes):
        np.random.seed(int(s))
        obs, _ = env.reset(seed=int(s))
        done, ret, cost = False, 0.0, 0.0
        while not done:
            obs, r, terminated, truncated, info = env.step(np.asarray(policy.act(obs[None].astype(np.float32))[0], np.float32))
            ret, cost = ret + r, cost + info["cost"]
            done = terminated or truncated
        returns.append(ret)
        costs.append(cost)
    env.close()
    return np.array(returns), np.array(costs)


@pytest.mark.parametrize("task_name", ["BallCircle", "BallRun", "CarCircle", "PointGoal1", "HopperVelocity"])
@pytest.mark.parametrize("threshold", [0.0, 10.0, 40.0])
def test_normalization_matches_dsrl(task_name, threshold):
    task = get_task(task_name)
    env = make_env(task)
    try:
        env.unwrapped.set_target_cost(threshold)
        rewards = np.array([task.min_episode_reward, task.max_episode_reward, 123.4, -5.0])
        costs = np.array([0.0, 7.0, 55.0, 200.0])
        for r, c in zip(rewards, costs):
            want = env.unwrapped.get_normalized_score(r, c)
            got = task.normalize(r, c, threshold)
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
    finally:
        env.close()


def test_evaluation_scores_are_dsrl_normalized_per_episode():
    task = get_task("BallCircle")
    result = evaluate_policy(LinearTanhPolicy("BallCircle"), task, 20.0, episodes=3, seed=1, num_envs=3)
    env = make_env(task)
    env.unwrapped.set_target_cost(20.0)
    for r, c, nr, nc in zip(result.returns, result.costs, result.normalized_reward, result.normalized_cost):
        assert (nr, nc) == pytest.approx(env.unwrapped.get_normalized_score(r, c))
    env.close()
    assert result.summary()["normalized_cost"] == pytest.approx(result.normalized_cost.mean())
    assert result.costs.max() > 0, "this policy must incur some cost, otherwise the check above is weak"


@pytest.mark.parametrize("task_name", ["BallCircle", "BallRun"])
def test_batched_rollouts_equal_one_env_loop(task_name):
    policy = LinearTanhPolicy(task_name)
    ref_returns, ref_costs = one_env_loop(policy, task_name, episodes=5, seed=3)
    policy.batch_sizes.clear()
    result = evaluate_policy(policy, get_task(task_name), 20.0, episodes=5, seed=3, num_envs=3)
    np.testing.assert_array_equal(result.returns, ref_returns)
    np.testing.assert_array_equal(result.costs, ref_costs)
    assert max(policy.batch_sizes) == 3, "observations of several envs must be batched into one act() call"
    np.testing.assert_array_equal(result.seeds, [3000, 3001, 3002, 3003, 3004])


def test_seeding_same_seed_same_numbers_other_seed_other_numbers():
    task = get_task("BallCircle")
    a = evaluate_policy(LinearTanhPolicy("BallCircle"), task, 20.0, episodes=4, seed=7, num_envs=2)
    b = evaluate_policy(LinearTanhPolicy("BallCircle"), task, 20.0, episodes=4, seed=7, num_envs=4)
    c = evaluate_policy(LinearTanhPolicy("BallCircle"), task, 20.0, episodes=4, seed=8, num_envs=2)
    np.testing.assert_array_equal(a.returns, b.returns)
    assert not np.array_equal(a.returns, c.returns)
    assert len(a.rows()) == 4 and a.rows()[0]["episode_seed"] == 7000


def test_bad_actions_raise_policy_error():
    class WrongShape:
        def act(self, observations):
            return np.zeros((len(observations), 5))

    class NaNs:
        def act(self, observations):
            return np.full((len(observations), 2), np.nan)

    task = get_task("BallRun")
    with pytest.raises(PolicyError, match="shape"):
        evaluate_policy(WrongShape(), task, 20.0, episodes=1)
    with pytest.raises(PolicyError, match="NaN"):
        evaluate_policy(NaNs(), task, 20.0, episodes=1)


class HistoryPolicy(LinearTanhPolicy):
    """A history-dependent policy: acts on the reward it has observed so far (like CDT's return-to-go)."""

    def begin(self, num_envs: int) -> None:
        self.seen_reward = np.zeros(num_envs)
        self.seen_cost = np.zeros(num_envs)
        self.finished: list[tuple[float, float]] = []

    def act(self, observations: np.ndarray) -> np.ndarray:
        assert len(observations) == len(self.seen_reward), "act must get exactly the rows still running"
        base = super().act(observations)
        return np.clip(base + 0.01 * np.tanh(self.seen_reward)[:, None], -1, 1)

    def observe(self, rewards, costs, done) -> None:
        self.seen_reward += rewards
        self.seen_cost += costs
        self.finished += list(zip(self.seen_reward[done], self.seen_cost[done]))
        self.seen_reward, self.seen_cost = self.seen_reward[~done], self.seen_cost[~done]
        self.all_finished = getattr(self, "all_finished", []) + self.finished
        self.finished = []


def test_history_dependent_policy_gets_begin_and_observe():
    policy = HistoryPolicy("BallCircle")
    result = evaluate_policy(policy, get_task("BallCircle"), 20.0, episodes=4, seed=2, num_envs=2)
    # what the policy observed adds up to what the evaluator scored, episode by episode
    seen = sorted(policy.all_finished)
    scored = sorted(zip(result.returns, result.costs))
    assert np.allclose(seen, scored)
    # closed loop matters: the same weights without observe() act differently
    plain = evaluate_policy(LinearTanhPolicy("BallCircle"), get_task("BallCircle"), 20.0, episodes=4, seed=2, num_envs=2)
    assert not np.array_equal(plain.returns, result.returns)
