"""Filtered behaviour cloning from feedback: clone what people preferred or called safe.

The "filtered BC" baseline of preference-based RL (e.g. %BC in CPL, Hejna et al. 2024): keep the
winning segment of every strict preference pair and every segment labelled safe, drop every segment
labelled unsafe, and fit a deterministic tanh-MLP policy to the kept actions by mean squared error.
It reads the feedback only (no reward or cost). docs/extending.md walks through this file; run it with
`presa-bench run --algo examples/filtered_bc.py:FilteredBC`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from bench.errors import BadInput
from bench.interfaces import Algorithm, Learner, TrainInputs, TrainSpec
from bench.settings import apply_overrides


@dataclass
class FilteredBCConfig:
    #: Adam step size (OSRL's BC: actor_lr 1e-3).
    lr: float = 1e-3
    #: Transitions per gradient step.
    batch_size: int = 256
    #: Units of each of the policy's two hidden layers.
    hidden: int = 256


class MLPPolicy:
    """A frozen copy of the network: observations (B, obs_dim) -> actions in [-1, 1]."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = copy.deepcopy(net).eval()

    def act(self, observations: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.net(torch.as_tensor(observations, dtype=torch.float32)).numpy()

    def state_dict(self) -> dict[str, Any]:
        return self.net.state_dict()


class FilteredBCLearner(Learner):
    def __init__(self, spec: TrainSpec, config: FilteredBCConfig, inputs: TrainInputs) -> None:
        data, fb = inputs.data, inputs.feedback
        strict = fb.pair_label != 0.5  # the winner of a pair: column 1 if the second segment won
        winner = (fb.pair_label[strict] == 1.0).astype(int)
        rows = np.arange(int(strict.sum()))
        wins = (fb.pair_episode[strict][rows, winner], fb.pair_start[strict][rows, winner])
        safe, unsafe = fb.safety_label == 1.0, fb.safety_label == 0.0

        def steps(episode: np.ndarray, start: np.ndarray) -> np.ndarray:
            return data.segment_indices(episode, start, fb.segment_length).ravel()

        keep = np.setdiff1d(
            np.union1d(steps(*wins), steps(fb.safety_episode[safe], fb.safety_start[safe])),
            steps(fb.safety_episode[unsafe], fb.safety_start[unsafe]),
        )
        if not len(keep):
            raise BadInput("filtered-bc: the feedback keeps no segment (no strict preference, no safe label)")
        self.obs = torch.as_tensor(data.observations[keep], dtype=torch.float32)
        self.act = torch.as_tensor(np.clip(data.actions[keep], -1.0, 1.0), dtype=torch.float32)
        self.config, self.total_steps = config, spec.profile.train_steps
        width = config.hidden
        self.net = torch.nn.Sequential(
            torch.nn.Linear(data.obs_dim, width), torch.nn.ReLU(), torch.nn.Linear(width, width), torch.nn.ReLU(),
            torch.nn.Linear(width, data.act_dim), torch.nn.Tanh(),
        )
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.generator = torch.Generator().manual_seed(spec.seed)  # the learner's own RNG

    def step(self, step: int) -> dict[str, torch.Tensor]:
        batch = torch.randint(len(self.obs), (self.config.batch_size,), generator=self.generator)
        loss = torch.mean((self.net(self.obs[batch]) - self.act[batch]) ** 2)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"bc_loss": loss.detach().reshape(1)}  # one value per member

    def policies(self) -> list[MLPPolicy]:
        return [MLPPolicy(self.net)]

    def policy_from_state(self, member: int, state: Any) -> MLPPolicy:
        policy = MLPPolicy(self.net)
        policy.net.load_state_dict(state)
        return policy

    def state_dicts(self) -> list[dict[str, Any]]:
        return [{"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "rng": self.generator.get_state()}]

    def load_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        self.net.load_state_dict(states[0]["net"])
        self.optimizer.load_state_dict(states[0]["optimizer"])
        self.generator.set_state(states[0]["rng"])

    def info(self, member: int, curve: Sequence[dict[str, float]]) -> dict[str, Any]:
        return {"kept_transitions": len(self.obs)}


class FilteredBC(Algorithm):
    name: ClassVar[str] = "filtered-bc"
    uses_ground_truth: ClassVar[bool] = False
    needs_feedback: ClassVar[bool] = True

    @classmethod
    def config_for(cls, spec: TrainSpec) -> FilteredBCConfig:
        return apply_overrides(FilteredBCConfig(), spec.overrides, cls.name)

    @classmethod
    def learner(cls, specs: Sequence[TrainSpec], inputs_list: Sequence[TrainInputs]) -> Learner:
        (spec,), (inputs,) = specs, inputs_list  # one cell per learner (the default cells_per_learner)
        return FilteredBCLearner(spec, cls.config_for(spec), inputs)
