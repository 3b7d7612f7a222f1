"""Real simulators of the DSRL tasks (through dsrl's gymnasium ids)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from bench.tasks import Task


def make_env(task: Task) -> Any:
    """A gymnasium env of the task's real simulator, wrapped by dsrl (time limit included)."""
    task.require_supported()
    import gymnasium as gym

    import dsrl  # noqa: F401  (registers the Offline* ids; bench.compat patched its imports)

    return gym.make(task.env_id)


@lru_cache(maxsize=None)
def space_shapes(task: Task) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(observation shape, action shape) of the task's env."""
    env = make_env(task)
    try:
        return tuple(env.observation_space.shape), tuple(env.action_space.shape)
    finally:
        env.close()
