"""Heterogeneous feedback on trajectory segments: preference pairs and safety labels.

A segment is (episode, start offset, length H) in a dataset (see bench.data). A `FeedbackView` is
what a learner sees: segment indices and labels, no rewards or costs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FeedbackView:
    """Learner-facing feedback: which segments, and their labels. No ground truth.

    Preference pair i compares segment (pair_episode[i, 0], pair_start[i, 0]) with
    (pair_episode[i, 1], pair_start[i, 1]); ``pair_label[i]`` is 1.0 if the SECOND segment is
    preferred, 0.0 if the first is, 0.5 for "equal". Safety label j says whether segment
    (safety_episode[j], safety_start[j]) is safe (1.0) or unsafe (0.0).
    """

    segment_length: int
    pair_episode: np.ndarray  # (P, 2) int64
    pair_start: np.ndarray  # (P, 2) int64
    pair_label: np.ndarray  # (P,) float32 in {0, 0.5, 1}
    safety_episode: np.ndarray  # (L,) int64
    safety_start: np.ndarray  # (L,) int64
    safety_label: np.ndarray  # (L,) float32 in {0, 1}
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def num_pairs(self) -> int:
        return len(self.pair_label)

    @property
    def num_safety_labels(self) -> int:
        return len(self.safety_label)
