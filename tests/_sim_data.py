"""Test-only algorithms for the harness tests (never registered in bench.algorithms.REGISTRY).

`LinearBC` is a real (if tiny) learner: a linear tanh policy fitted to the dataset's actions by
full-batch gradient descent in numpy, behind the `bench.interfaces.Learner` protocol; bench's loop
(bench.training) logs, evaluates, selects the best policy, checkpoints and resumes it.

Overrides (``--set``): lr, fail_at_step / fail_seed (a failing cell), sleep (seconds per step: a
slow cell for kill tests).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from bench.errors import BadInput
from bench.interfaces import Algorithm, Learner, TrainInputs, TrainSpec

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

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights}


class LinearBCLearner(Learner):
    """One cell: full-batch gradient descent on the arctanh of the actions; logs the squared error."""

    def __init__(self, spec: TrainSpec, config: LinearBCConfig, inputs: TrainInputs) -> None:
        data = inputs.data
        self.seed, self.config, self.total_steps = spec.seed, config, config.steps
        self.x = np.concatenate([data.observations, np.ones((len(data.observations), 1), np.float32)], axis=1).astype(np.float64)
        self.target = np.arctanh(np.clip(data.actions, -0.999, 0.999).astype(np.float64))
        self.scale = 1.0 / (np.abs(self.x).max(axis=0) ** 2 + 1.0)  # per-feature step sizes keep GD stable
        self.weights = np.random.default_rng(spec.seed).normal(scale=0.01, size=(self.x.shape[1], self.target.shape[1]))

    def step(self, step: int) -> dict[str, np.ndarray]:
        config = self.config
        if step == config.fail_at_step or self.seed == config.fail_seed:
            raise RuntimeError(f"linear-bc was told to fail (seed {self.seed}, step {step})")
        residual = self.x @ self.weights - self.target
        self.weights = self.weights - config.lr * self.scale[:, None] * (self.x.T @ residual / len(self.x))
        if config.sleep:
            time.sleep(config.sleep)
        return {"loss": np.array([np.mean(residual**2)])}

    def policies(self) -> list[LinearPolicy]:
        return [LinearPolicy(self.weights)]

    def policy_from_state(self, member: int, state: Any) -> LinearPolicy:
        return LinearPolicy(state["weights"])

    def state_dicts(self) -> list[dict[str, Any]]:
        return [{"weights": self.weights.copy()}]

    def load_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        self.weights = np.array(states[0]["weights"])

    def info(self, member: int, curve: Sequence[dict[str, float]]) -> dict[str, Any]:
        return {"final_loss": float(np.mean((self.x @ self.weights - self.target) ** 2))}


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

    @classmethod
    def learner(cls, specs: Sequence[TrainSpec], inputs_list: Sequence[TrainInputs]) -> LinearBCLearner:
        (spec,), (inputs,) = specs, inputs_list
        return LinearBCLearner(spec, cls.config_for(spec), inputs)


class FeedbackLinearBCLearner(LinearBCLearner):
    def __init__(self, spec: TrainSpec, config: LinearBCConfig, inputs: TrainInputs) -> None:
        if inputs.feedback is None or inputs.dataset is not None:
            raise AssertionError("a feedback learner must get feedback and no ground-truth dataset")
        super().__init__(spec, config, inputs)
        self.num_pairs = int(inputs.feedback.num_pairs)

    def info(self, member: int, curve: Sequence[dict[str, float]]) -> dict[str, Any]:
        return {**super().info(member, curve), "num_pairs": self.num_pairs}


class FeedbackLinearBC(LinearBC):
    """LinearBC that declares it needs feedback: the harness must build and pass a FeedbackView."""

    name: ClassVar[str] = "linear-bc-fb"
    needs_feedback: ClassVar[bool] = True

    @classmethod
    def learner(cls, specs: Sequence[TrainSpec], inputs_list: Sequence[TrainInputs]) -> FeedbackLinearBCLearner:
        (spec,), (inputs,) = specs, inputs_list
        return FeedbackLinearBCLearner(spec, cls.config_for(spec), inputs)


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
    from bench import training
    from bench.runner import run_cell, run_cells

    calls = []
    original = training.train_many

    def spy(algorithm, specs, inputs_list, ensemble_size=None):  # type: ignore[no-untyped-def]
        assert algorithm is cls
        calls.append((len(specs), ensemble_size))
        return original(algorithm, specs, inputs_list, ensemble_size)

    monkeypatch.setattr(training, "train_many", spy)
    size = len(specs)
    together = run_cells(specs, root / "vec", ensemble_size=size)
    assert calls == [(size, size)], f"the group must be trained by ONE train_many call with one batch of {size}"
    assert [o.status for o in together] == ["done"] * size
    for spec in specs:
        assert run_cell(spec, root / "one").status == "done"
    vec, one = episode_scores(root / "vec"), episode_scores(root / "one")
    assert len(vec) == len(one) > 0 and vec["cell_id"].nunique() == size
    return vec, one
