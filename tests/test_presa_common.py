"""Shared helpers of the PreSa tests (no tests here): ground-truth feedback for a small dataset.

bench.feedback has no label synthesiser yet, so the tests build a FeedbackView directly from the
dataset's ground truth the way the paper describes it: preference y = 1[sum r(second) > sum r(first)]
(0.5 on ties), safety z = 1[sum c(segment) <= kappa * H / T]. Only the labels reach the learner.
"""

from __future__ import annotations

import numpy as np

from bench.data import Dataset
from bench.feedback import FeedbackView


def ground_truth_feedback(dataset: Dataset, threshold: float, segment_length: int, queries: int, seed: int) -> FeedbackView:
    rng = np.random.default_rng(seed)
    episode, start = dataset.segment_starts(segment_length)
    pick = rng.integers(len(episode), size=(queries, 2))
    pair_episode, pair_start = episode[pick], start[pick]
    idx = dataset.segment_indices(pair_episode.reshape(-1), pair_start.reshape(-1), segment_length)
    returns = dataset.rewards[idx].sum(axis=1).reshape(queries, 2)
    label = np.where(returns[:, 1] > returns[:, 0], 1.0, np.where(returns[:, 1] < returns[:, 0], 0.0, 0.5))
    safe_pick = rng.integers(len(episode), size=queries)
    s_idx = dataset.segment_indices(episode[safe_pick], start[safe_pick], segment_length)
    budget = threshold * segment_length / dataset.task.episode_length
    safe = (dataset.costs[s_idx].sum(axis=1) <= budget).astype(np.float32)
    return FeedbackView(
        segment_length=segment_length,
        pair_episode=pair_episode,
        pair_start=pair_start,
        pair_label=label.astype(np.float32),
        safety_episode=episode[safe_pick],
        safety_start=start[safe_pick],
        safety_label=safe,
        provenance={"source": "ground truth (test helper)"},
    )
