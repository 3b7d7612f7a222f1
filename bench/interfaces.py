"""The seams between the benchmark and the algorithms (see docs/architecture.md).

Data flows one way: Dataset -> FeedbackView -> Learner (trained by bench.training's one loop) ->
Policy -> evaluation -> result record -> report. bench/ talks to every algorithm, PreSa included,
only through `Algorithm` and the `Learner` it builds; it has no algorithm-specific branches.
This module imports no other bench module at run time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from bench.data import Dataset, OfflineData
    from bench.feedback.containers import FeedbackView
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


#: Called by the training loop every log interval with (gradient step, scalar metrics).
LogFn = Callable[[int, dict[str, float]], None]


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


@dataclass
class TrainInputs:
    """The data a run may use. ``dataset`` (with ground-truth reward and cost) is set only for
    algorithms that declare ``uses_ground_truth``; preference learners get ``data`` + ``feedback``."""

    data: "OfflineData"
    feedback: "FeedbackView | None" = None
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


class Learner(ABC):
    """One model that trains ``members`` cells at once, one gradient step per `step` call.

    The cells share config and data and differ in seed / threshold (hence feedback); most learners
    have one member, PreSa's ensemble and batched BC have several. bench.training's loop owns
    everything around the steps: interval means of the metrics, the learning curve, online
    evaluation and best-policy selection, checkpoints and resume, throughput. A learner owns only
    its model, its optimizers and its own RNGs.
    """

    #: Cells trained together (member e is the e-th spec given to `Algorithm.learner`).
    members: int = 1
    #: Gradient steps of the whole run.
    total_steps: int
    #: Steps after which the open log interval closes early, before the next step (a phase change,
    #: e.g. the end of a warm-up: the next steps log other metrics).
    phase_ends: tuple[int, ...] = ()

    @abstractmethod
    def step(self, step: int) -> Mapping[str, Any]:
        """One gradient step (``step`` = steps done before it) -> metrics, each a per-member array of
        shape (members,). Torch tensors may stay on the device: the loop sums them there and reads
        them only at a log step; other values are summed in float64."""

    @abstractmethod
    def policies(self) -> list[Policy]:
        """Each member's current policy, frozen (later steps never change it), with ``state_dict()``."""

    @abstractmethod
    def policy_from_state(self, member: int, state: Any) -> Policy:
        """The policy whose ``state_dict()`` was ``state`` (the loop keeps the best policy as a state)."""

    @abstractmethod
    def state_dicts(self) -> list[dict[str, Any]]:
        """Per member, everything later steps depend on (parameters, optimizer slots, own RNGs, ...),
        as torch.save-able values; the global RNGs are the loop's to save."""

    @abstractmethod
    def load_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        """Inverse of `state_dicts` (one per member, all saved at the same step); raise
        bench.errors.BenchError for a state of another config."""

    def log_row(self, member: int, means: dict[str, float]) -> dict[str, float]:
        """Member ``member``'s curve row at a log step, from its interval means (add phase, multipliers...)."""
        return means

    def info(self, member: int, curve: Sequence[dict[str, float]]) -> dict[str, Any]:
        """Extra numbers for member ``member``'s result record, at the end of the run."""
        return {}


class Algorithm(ABC):
    """An offline (safe) RL method runnable by `presa-bench run --algo NAME`.

    bench.training.train / train_many train it: `learner` builds the model for a group of cells,
    the loop runs it.
    """

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

    @classmethod
    @abstractmethod
    def learner(cls, specs: Sequence[TrainSpec], inputs_list: Sequence[TrainInputs]) -> Learner:
        """A fresh learner whose members are these cells (at most `cells_per_learner` of them, same
        config and data); raise bench.errors.BadInput for inputs it cannot train on."""

    @classmethod
    def cells_per_learner(cls, specs: Sequence[TrainSpec], requested: int | None) -> int:
        """How many of these cells one learner may train together. ``requested``: the caller's cap
        (``--ensemble-size``; None = the method's choice). Default: one cell per learner."""
        return 1
