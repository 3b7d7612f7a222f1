"""The seams between the benchmark and the algorithms (see docs/architecture.md).

Data flows one way: Dataset -> FeedbackView -> Algorithm.train -> Policy -> evaluation -> result
record -> report. bench/ talks to every algorithm, PreSa included, only through `Algorithm`;
it has no algorithm-specific branches.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol, Sequence, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from bench.data import Dataset, OfflineData
    from bench.profiles import Profile
    from bench.tasks import Task


@runtime_checkable
class Policy(Protocol):
    """A trained policy: a batch of observations (B, obs_dim) -> deterministic actions (B, act_dim)."""

    def act(self, observations: np.ndarray) -> np.ndarray: ...


# Optional protocol for history-dependent policies (e.g. CDT, conditioned on returns-to-go):
# bench.evaluation calls ``policy.begin(num_envs)`` before a batch of episodes and
# ``policy.observe(rewards, costs, done)`` after every step, with (num_envs,) arrays, when the
# policy defines both methods. Markov policies implement only ``act``.


#: Called by a trainer every log interval with (gradient step, scalar metrics).
LogFn = Callable[[int, dict[str, float]], None]
#: Called by a trainer every eval interval with the current policy; returns evaluation metrics
#: (normalized reward and cost...). The harness supplies it; a trainer may ignore it.
EvalFn = Callable[[Policy], dict[str, float]]


@dataclass
class TrainSpec:
    """Everything about one training run except the data: the cell and its budget."""

    task: "Task"
    threshold: float
    seed: int
    profile: "Profile"
    device: str = "cpu"
    #: Where the trainer keeps its checkpoint; a run that finds one there resumes from it.
    checkpoint_dir: Path | None = None
    #: Algorithm config overrides (field name -> value) from the CLI/sweep.
    overrides: dict[str, Any] = field(default_factory=dict)
    log: LogFn | None = None
    evaluate: EvalFn | None = None


@dataclass
class TrainInputs:
    """The data a run may use. ``dataset`` (with ground-truth reward and cost) is set only for
    algorithms that declare ``uses_ground_truth``; preference learners get ``data`` + ``feedback``."""

    data: "OfflineData"
    feedback: Any | None = None  # bench.feedback.FeedbackView
    dataset: "Dataset | None" = None


@dataclass
class TrainOutput:
    policy: Policy
    #: Final checkpoint's policy is `policy`; `best_policy` is the online-selected one, if any.
    best_policy: Policy | None = None
    #: Learning curve rows: {"step": int, metric: value, ...}.
    curve: list[dict[str, float]] = field(default_factory=list)
    #: Extra numbers for the result record (e.g. reward/cost model held-out accuracy).
    info: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    train_seconds: float = 0.0
    #: Gradient steps this process ran (a resumed run counts only its own), for honest steps/s.
    steps_this_process: int = 0


class Algorithm(ABC):
    """An offline (safe) RL method runnable by `presa-bench run --algo NAME`."""

    #: CLI name, e.g. "presa", "bc-safe".
    name: ClassVar[str]
    #: True for oracle baselines that read the dataset's ground-truth reward and cost.
    uses_ground_truth: ClassVar[bool] = False
    #: True if the method learns from preference pairs / safety labels.
    needs_feedback: ClassVar[bool] = True

    @classmethod
    @abstractmethod
    def config_for(cls, spec: TrainSpec) -> Any:
        """The resolved config dataclass for this cell (defaults, per-suite values, profile, overrides)."""

    @abstractmethod
    def train(self, spec: TrainSpec, inputs: TrainInputs) -> TrainOutput:
        """Train within spec.profile's budget; checkpoint to spec.checkpoint_dir and resume from it."""

    @classmethod
    def train_many(
        cls, specs: Sequence[TrainSpec], inputs_list: Sequence[TrainInputs], ensemble_size: int | None = None
    ) -> list[TrainOutput]:
        """Train several cells that differ only in seed / threshold (hence feedback); one output per spec.

        Optional hook for methods that can batch cells (e.g. PreSa trains them as one ensemble).
        This default trains them one by one, exactly as ``cls().train(spec, inputs)`` would, and
        ignores ``ensemble_size`` (how many cells one batch may hold; None = the method's choice).
        """
        if len(specs) != len(inputs_list):
            raise ValueError("train_many needs one TrainInputs per TrainSpec")
        from bench.runner import seed_everything  # lazy: the runner imports this module

        outputs = []
        for spec, inputs in zip(specs, inputs_list):
            seed_everything(spec.seed)  # as the runner does before a single train(): same numbers
            outputs.append(cls().train(spec, inputs))
        return outputs
