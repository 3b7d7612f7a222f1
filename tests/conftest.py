"""Shared fixtures: a small REAL simulator dataset (BallRun rollouts), written as a DSRL file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bench  # noqa: F401  (compat patches first)
from bench.data import Dataset, load_dataset, write_dsrl_hdf5
from bench.envs import make_env
from bench.tasks import get_task


def rollout_arrays(task_name: str = "BallRun", episodes: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """Episodes of a noisy 'push forward' controller with varied noise, so returns and costs vary."""
    task = get_task(task_name)
    env = make_env(task)
    rng = np.random.default_rng(seed)
    keys = ("observations", "next_observations", "actions", "rewards", "costs", "terminals", "timeouts")
    out: dict[str, list] = {k: [] for k in keys}
    act_dim = env.action_space.shape[0]
    for ep in range(episodes):
        np.random.seed(seed * 1000 + ep)
        obs, _ = env.reset(seed=seed * 1000 + ep)
        drive = rng.uniform(-1.0, 1.0, act_dim) * rng.uniform(0.0, 0.6)
        noise = rng.uniform(0.0, 1.0)
        done = False
        while not done:
            action = np.clip(drive + noise * rng.standard_normal(act_dim), -1, 1).astype(np.float32)
            nxt, r, terminated, truncated, info = env.step(action)
            out["observations"].append(obs)
            out["next_observations"].append(nxt)
            out["actions"].append(action)
            out["rewards"].append(r)
            out["costs"].append(info.get("cost", 0.0))
            out["terminals"].append(terminated)
            out["timeouts"].append(truncated and not terminated)
            obs, done = nxt, terminated or truncated
    env.close()
    return {k: np.asarray(v) for k, v in out.items()}


@pytest.fixture(scope="session")
def sim_dataset_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DSRL-format file of 40 real BallRun episodes (named the way DSRL names files)."""
    task = get_task("BallRun")
    arrays = rollout_arrays("BallRun", episodes=40, seed=0)
    directory = tmp_path_factory.mktemp("dsrl")
    n_episodes = int(np.sum(arrays["terminals"] | arrays["timeouts"]))
    return write_dsrl_hdf5(directory / task.dataset_filename(n_episodes), arrays)


@pytest.fixture(scope="session")
def sim_dataset(sim_dataset_path: Path) -> Dataset:
    return load_dataset(sim_dataset_path, get_task("BallRun"))


def load_benchmark_script(name: str):
    """A script of benchmarks/ (not a package) imported as a module, for its tests."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ablation_table():
    return load_benchmark_script("ablation_table")


@pytest.fixture(scope="module")
def lodo():
    return load_benchmark_script("lodo")
