"""Simulator speed alone: env steps per second with random actions (a benchmark, not a test).

    python benchmarks/env_speed.py --tasks AntRun,AntCircle --seconds 5

Steps each task's simulator (bench.envs.make_env, the one evaluation uses) with uniformly random
actions for the given wall time on the calling thread, resetting at episode ends, and prints
steps/s. It bounds what a collection budget costs: PPO training can step no faster.
"""

from __future__ import annotations

import argparse
import time

from bench.envs import make_env
from bench.tasks import get_task


def steps_per_second(task_name: str, seconds: float, seed: int = 0) -> float:
    env = make_env(get_task(task_name))
    env.reset(seed=seed)
    env.action_space.seed(seed)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - started
    env.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="AntRun,AntCircle", help="comma-separated task names")
    parser.add_argument("--seconds", type=float, default=5.0, help="wall time per task")
    args = parser.parse_args()
    for name in args.tasks.split(","):
        print(f"{name}: {steps_per_second(name.strip(), args.seconds):,.0f} env steps/s (random actions, {args.seconds:g} s)")


if __name__ == "__main__":
    main()
