"""Test-only algorithms for the harness tests (never registered in bench.algorithms.REGISTRY).

`LinearBC` is a real (if tiny) learner: a linear tanh policy fitted to the dataset's actions by
full-batch gradient descent in numpy. It follows the Algorithm contract the harness relies on:
logs through spec.log, evaluates through spec.evaluate every profile.eval_every steps, keeps an
online-selected best policy, and checkpoints every profile.checkpoint_every steps into
spec.checkpoint_dir (atomically) and resumes from there with identical numbers.

Overrides (``--set``): lr, fail_at_step / fail_seed (a failing cell), sleep (seconds per step: a
slow cell for kill tests).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from bench.errors import BadInput
from bench.interfaces import Algorithm, TrainInputs, TrainOutput, TrainSpec

#: Registry entries to monkeypatch into bench.algorithms.REGISTRY (tests/ is on sys.path).
TEST_ALGORITHMS = {"linear-bc": "_sim_data:LinearBC", "linear-bc-fb": "_sim_data:FeedbackLinearBC"}


def register(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from bench import algorithms

    for name, path in TEST_ALGORITHMS.items():
        monkeypatch.setitem(algorithms.REGISTRY, name, path)


@dataclass
class LinearBCConfig:
    """Test-only config. Defaults are arbitrary small values (no paper behind this algorithm)."""

    #: Gradient-descent step size.
    lr: float = 0.5
    #: Gradient steps (the profile's train_steps unless overridden).
    steps: int = 300
    #: Raise RuntimeError at this step (-1 = never): simulates a crashing cell.
    fail_at_step: int = -1
    #: Raise RuntimeError at the first step when the cell's seed is this (-1 = never): one failing cell of a grid.
    fail_seed: int = -1
    #: Sleep this long per step: makes a cell slow enough to be killed mid-run.
    sleep: float = 0.0


class LinearPolicy:
    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights.copy()

    def act(self, observations: np.ndarray) -> np.ndarray:
        x = np.concatenate([observations, np.ones((len(observations), 1), np.float32)], axis=1)
        return np.tanh(x @ self.weights).astype(np.float32)


class LinearBC(Algorithm):
    name: ClassVar[str] = "linear-bc"
    uses_ground_truth: ClassVar[bool] = False
    needs_feedback: ClassVar[bool] = False

    @classmethod
    def config_for(cls, spec: TrainSpec) -> LinearBCConfig:
        config = LinearBCConfig(steps=spec.profile.train_steps)
        for key, value in spec.overrides.items():
            if not hasattr(config, key):
                raise BadInput(f"unknown override '{key}' for {cls.name}")
            setattr(config, key, type(getattr(config, key))(value))
        return config

    def train(self, spec: TrainSpec, inputs: TrainInputs) -> TrainOutput:
        config = self.config_for(spec)
        data = inputs.data
        x = np.concatenate([data.observations, np.ones((len(data.observations), 1), np.float32)], axis=1).astype(np.float64)
        y = np.clip(data.actions, -0.999, 0.999).astype(np.float64)
        target = np.arctanh(y)
        rng = np.random.default_rng(spec.seed)
        weights = rng.normal(scale=0.01, size=(x.shape[1], y.shape[1]))
        best = weights.copy()
        best_key = (np.inf, -np.inf)
        curve: list[dict[str, float]] = []
        step = 0
        ckpt = Path(spec.checkpoint_dir) / "linear_bc.npz" if spec.checkpoint_dir else None
        if ckpt is not None and ckpt.is_file():
            saved = np.load(ckpt)
            weights, best, step = saved["weights"], saved["best"], int(saved["step"])
            best_key = tuple(saved["best_key"])
            curve = json.loads(str(saved["curve"]))
        resumed_from = step
        started = time.perf_counter()
        scale = 1.0 / (np.abs(x).max(axis=0) ** 2 + 1.0)  # per-feature step sizes keep GD stable
        profile = spec.profile
        while step < config.steps:
            if step == config.fail_at_step or spec.seed == config.fail_seed:
                raise RuntimeError(f"linear-bc was told to fail (seed {spec.seed}, step {step})")
            residual = x @ weights - target
            grad = x.T @ residual / len(x)
            weights = weights - config.lr * scale[:, None] * grad
            step += 1
            if config.sleep:
                time.sleep(config.sleep)
            if step % profile.log_every == 0:
                loss = float(np.mean(residual**2))
                curve.append({"step": step, "loss": loss})
                if spec.log:
                    spec.log(step, {"loss": loss})
            if profile.eval_every and step % profile.eval_every == 0 and spec.evaluate:
                metrics = spec.evaluate(LinearPolicy(weights))
                curve.append({"step": step, **metrics})
                key = (max(metrics["normalized_cost"], 1.0), -metrics["normalized_reward"])
                if key < best_key:
                    best_key, best = key, weights.copy()
            if ckpt is not None and step % profile.checkpoint_every == 0:
                tmp = ckpt.with_name(f".{ckpt.name}.{os.getpid()}.tmp.npz")
                np.savez(tmp, weights=weights, best=best, step=step, best_key=np.asarray(best_key), curve=json.dumps(curve))
                os.replace(tmp, ckpt)
        return TrainOutput(
            policy=LinearPolicy(weights),
            best_policy=LinearPolicy(best) if np.isfinite(best_key[0]) else None,
            curve=curve,
            info={"final_loss": float(np.mean((x @ weights - target) ** 2))},
            steps=step,
            train_seconds=time.perf_counter() - started,
            steps_this_process=step - resumed_from,
        )


class FeedbackLinearBC(LinearBC):
    """LinearBC that declares it needs feedback: the harness must build and pass a FeedbackView."""

    name: ClassVar[str] = "linear-bc-fb"
    needs_feedback: ClassVar[bool] = True

    def train(self, spec: TrainSpec, inputs: TrainInputs) -> TrainOutput:
        if inputs.feedback is None or inputs.dataset is not None:
            raise AssertionError("a feedback learner must get feedback and no ground-truth dataset")
        out = super().train(spec, inputs)
        out.info["num_pairs"] = int(inputs.feedback.num_pairs)
        return out


def episode_scores(results_dir: Path):  # type: ignore[no-untyped-def]
    """The stored per-episode scores of a results store, in a fixed order (pandas frame)."""
    from bench import results as store

    frame = store.load_results(results_dir)
    cols = ["cell_id", "checkpoint", "episode", "normalized_reward", "normalized_cost"]
    return frame[cols].sort_values(["cell_id", "checkpoint", "episode"]).reset_index(drop=True)


def run_group_and_alone(monkeypatch, cls, specs, root: Path):  # type: ignore[no-untyped-def]
    """Train ``specs`` as ONE vectorised group (run_cells, ensemble_size = len(specs); asserts one
    train_many call with all of them) into root/vec, then each cell alone (run_cell) into root/one;
    returns both stores' episode scores."""
    from bench.runner import run_cell, run_cells

    calls = []
    original = cls.train_many.__func__

    def spy(klass, specs, inputs_list, ensemble_size=None):  # type: ignore[no-untyped-def]
        calls.append((len(specs), ensemble_size))
        return original(klass, specs, inputs_list, ensemble_size)

    monkeypatch.setattr(cls, "train_many", classmethod(spy))
    size = len(specs)
    together = run_cells(specs, root / "vec", ensemble_size=size)
    assert calls == [(size, size)], f"the group must be trained by ONE train_many call with one batch of {size}"
    assert [o.status for o in together] == ["done"] * size
    for spec in specs:
        assert run_cell(spec, root / "one").status == "done"
    vec, one = episode_scores(root / "vec"), episode_scores(root / "one")
    assert len(vec) == len(one) > 0 and vec["cell_id"].nunique() == size
    return vec, one
