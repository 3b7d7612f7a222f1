"""FeedbackSettings: how the scripted teacher samples segments and labels them (validated, resolved per task)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.errors import FeedbackError
from bench.feedback.schema import PAIR_SAMPLING
from bench.settings import apply_overrides

if TYPE_CHECKING:
    from bench.tasks import Task

#: Who the feedback settings belong to, in `--set feedback.KEY=VALUE` messages.
OWNER = "the feedback teacher"


@dataclass(frozen=True)
class FeedbackSettings:
    """How the scripted teacher samples segments and labels them. Defaults are the paper's teacher
    (noise-free); the noise fields model real annotators (B-Pref's teachers) and are off by default."""

    #: Preference pairs. PreSa: "about 10,000 pairs per task" (profiles.Profile.num_queries).
    num_queries: int = 10_000
    #: Labelled segments for the safety module; None = as many as preference pairs. The paper gives
    #: no separate count; equal counts give both modules the same annotation budget.
    num_safety_labels: int | None = None
    #: Segment length H in steps; None = round(segment_fraction * T), T the task's episode length.
    segment_length: int | None = None
    #: H as a fraction of the episode length when segment_length is None. PreSa: H is about 20%
    #: of T (BallRun: H = 20 of T = 100).
    segment_fraction: float = 0.2
    #: "uniform": both segments of a pair uniform over all valid segments (never the same segment);
    #: "disjoint-episodes": the two segments come from different episodes.
    pair_sampling: str = "uniform"
    #: B-Pref "mistake" teacher: each strict preference is flipped with this probability.
    flip_prob: float = 0.0
    #: B-Pref "noisy" (Bradley-Terry) teacher: P(second preferred) = sigmoid(dR / (temperature * m)),
    #: m the average segment return (see `reward_margin`); 0 = perfectly rational teacher.
    bt_temperature: float = 0.0
    #: B-Pref "equal" teacher: pairs with |dR| <= equal_band * m are labelled 0.5; 0 = exact ties only.
    equal_band: float = 0.0
    #: Each safety label is flipped with this probability.
    safety_flip_prob: float = 0.0
    #: Share of safe segments among the safety labels (the paper's "ratio of safe labels" ablation):
    #: the teacher draws round(share * L) labelled segments from the dataset's safe segments and the
    #: rest from its unsafe ones, each uniform without replacement. None = uniform draws over all
    #: segments, so the share is whatever the dataset and threshold give.
    safe_share: float | None = field(default=None, metadata={"hashed_when_set": True})

    def validate(self) -> None:
        """Raise FeedbackError naming the first invalid field."""
        if int(self.num_queries) < 0:
            raise FeedbackError(f"num_queries must be >= 0, got {self.num_queries}")
        if self.num_safety_labels is not None and int(self.num_safety_labels) < 0:
            raise FeedbackError(f"num_safety_labels must be >= 0, got {self.num_safety_labels}")
        if self.segment_length is not None and int(self.segment_length) < 1:
            raise FeedbackError(f"segment_length must be >= 1 step, got {self.segment_length}")
        if not 0.0 < self.segment_fraction <= 1.0:
            raise FeedbackError(f"segment_fraction must be in (0, 1], got {self.segment_fraction}")
        if self.pair_sampling not in PAIR_SAMPLING:
            raise FeedbackError(f"pair_sampling '{self.pair_sampling}' is unknown: choose {' or '.join(PAIR_SAMPLING)}")
        for name in ("flip_prob", "safety_flip_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise FeedbackError(f"{name} must be a probability in [0, 1], got {value}")
        if self.safe_share is not None and not 0.0 <= float(self.safe_share) <= 1.0:
            raise FeedbackError(f"safe_share must be a share in [0, 1] or unset, got {self.safe_share}")
        for name in ("bt_temperature", "equal_band"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0.0):
                raise FeedbackError(f"{name} must be >= 0, got {value}")

    def resolve(self, task: "Task") -> "FeedbackSettings":
        """The same settings with segment_length and num_safety_labels filled in for ``task``."""
        self.validate()
        length = self.segment_length if self.segment_length is not None else max(
            1, int(round(self.segment_fraction * task.episode_length))
        )
        labels = self.num_safety_labels if self.num_safety_labels is not None else self.num_queries
        return replace(self, segment_length=int(length), num_safety_labels=int(labels), num_queries=int(self.num_queries))

    def identity(self) -> dict[str, Any]:
        """The fields that name these settings in config hashes and feedback cache keys. A field added
        after results were stored (metadata ``hashed_when_set``) enters only when it differs from its
        default, so stored cells and cached feedback made before it existed stay valid."""
        out = asdict(self)
        for f in fields(self):
            if f.metadata.get("hashed_when_set") and out[f.name] == f.default:
                del out[f.name]
        return out

    def with_overrides(self, overrides: dict[str, Any]) -> "FeedbackSettings":
        """Apply ``--set feedback.KEY=VALUE`` overrides by the one coercion rule (bench.settings), then validate."""
        out = apply_overrides(self, overrides, OWNER, key_prefix="feedback.", error=FeedbackError)
        out.validate()
        return out
