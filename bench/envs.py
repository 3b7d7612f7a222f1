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
def _spaces(task: Task) -> tuple[Any, Any]:
    """(observation space, action space) of the task's env (one env made per task and process)."""
    env = make_env(task)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def space_shapes(task: Task) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(observation shape, action shape) of the task's env."""
    observation, action = _spaces(task)
    return tuple(observation.shape), tuple(action.shape)


def action_bounds(task: Task) -> tuple[Any, Any]:
    """(low, high) arrays of the task's action space (bench.data refuses actions far outside them)."""
    action = _spaces(task)[1]
    return action.low.copy(), action.high.copy()
