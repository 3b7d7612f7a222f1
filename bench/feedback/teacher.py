"""The scripted teacher of PreSa with B-Pref's noise models: pure functions on segment sums."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from bench.feedback.settings import FeedbackSettings

if TYPE_CHECKING:
    from bench.data import Dataset


def safety_budget(threshold: float, segment_length: int, episode_length: int) -> float:
    """The length-reshaped cost threshold kappa * H / T of PreSa (BallRun, kappa 20, H 20: 4.0)."""
    return float(threshold) * float(segment_length) / float(episode_length)


def preference_labels(reward_0: np.ndarray, reward_1: np.ndarray, equal_margin: float = 0.0) -> np.ndarray:
    """Noise-free teacher: 1.0 if the second segment's reward sum is larger, 0.0 if smaller, 0.5 when
    |difference| <= equal_margin (0 = exact ties only, the paper's teacher)."""
    diff = np.asarray(reward_1, np.float64) - np.asarray(reward_0, np.float64)
    labels = (diff > 0).astype(np.float32)
    labels[np.abs(diff) <= equal_margin] = 0.5
    return labels


def safety_labels(cost: np.ndarray, budget: float) -> np.ndarray:
    """1.0 (safe) iff the segment's summed cost is <= budget (the boundary itself is safe)."""
    return (np.asarray(cost, np.float64) <= budget).astype(np.float32)


def noisy_preference_labels(
    reward_0: np.ndarray,
    reward_1: np.ndarray,
    settings: FeedbackSettings,
    margin: float,
    bt_rng: np.random.Generator,
    flip_rng: np.random.Generator,
) -> np.ndarray:
    """B-Pref's simulated annotator: Bradley-Terry or rational choice, then mistakes, then the
    equal band (B-Pref's order: equal pairs are 0.5 whatever the draws said)."""
    diff = np.asarray(reward_1, np.float64) - np.asarray(reward_0, np.float64)
    if settings.bt_temperature > 0:
        beta = 1.0 / (settings.bt_temperature * margin)
        prob_second = 0.5 * (1.0 + np.tanh(0.5 * beta * diff))  # sigmoid(beta * diff), overflow-free
        second = bt_rng.random(len(diff)) < prob_second
    else:
        second = diff > 0
    if settings.flip_prob > 0:
        second ^= flip_rng.random(len(diff)) < settings.flip_prob
    labels = second.astype(np.float32)
    labels[np.abs(diff) <= settings.equal_band * margin] = 0.5
    return labels


def reward_margin(dataset: "Dataset", segment_length: int, episode_length: int) -> float:
    """B-Pref's scale m of the noise models: the average episode return times H / T (the return of
    an average segment; B-Pref's ``new_margin``), in absolute value."""
    return abs(float(np.mean(dataset.episode_returns))) * segment_length / episode_length
