"""Building feedback with the scripted teacher: seeded segment draws, labels, provenance."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np

from bench.errors import FeedbackError
from bench.feedback.containers import FeedbackSet
from bench.feedback.provenance import _dataset_provenance, _task_of, _versions
from bench.feedback.schema import FORMAT_VERSION
from bench.feedback.segments import (
    _segment_sums,
    _valid_segments,
    require_memory_for,
    sample_pairs,
    sample_segments,
    sample_segments_by_class,
)
from bench.feedback.settings import FeedbackSettings
from bench.feedback.teacher import noisy_preference_labels, reward_margin, safety_budget, safety_labels

if TYPE_CHECKING:
    from bench.data import Dataset
    from bench.tasks import Task

#: Independent random streams, so that e.g. a noise setting never changes which pairs are drawn.
#: A new stream goes at the end: SeedSequence children are keyed by position, so the others keep their draws.
_STREAMS = ("pairs", "safety_segments", "bradley_terry", "flips", "safety_flips", "safe_share")


def _streams(seed: int) -> dict[str, np.random.Generator]:
    return dict(zip(_STREAMS, (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(len(_STREAMS)))))


def _draw_queries(
    dataset: "Dataset", settings: FeedbackSettings, streams: dict[str, np.random.Generator]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The teacher's segment draws (resolved settings): pair episodes/starts (P, 2), safety episodes/starts (L,)."""
    length = int(settings.segment_length)  # type: ignore[arg-type]
    require_memory_for(settings.num_queries, int(settings.num_safety_labels), length)  # type: ignore[arg-type]
    episode, start = _valid_segments(dataset, length)
    pair_episode, pair_start = sample_pairs(episode, start, settings.num_queries, settings.pair_sampling, streams["pairs"])
    safety_episode, safety_start = sample_segments(episode, start, int(settings.num_safety_labels), streams["safety_segments"])  # type: ignore[arg-type]
    return pair_episode, pair_start, safety_episode, safety_start


def sample_queries(
    dataset: "Dataset", seed: int, settings: FeedbackSettings | None = None, task: "Task | None" = None
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The questions the scripted teacher would label with this seed and these settings, without
    their labels: (H, pair_episode (P, 2), pair_start (P, 2), safety_episode (L,), safety_start (L,)).
    `make_feedback` draws exactly these; the labelling page (bench.labelling) asks people them."""
    task = _task_of(dataset, task)
    settings = (settings or FeedbackSettings()).resolve(task)
    if settings.safe_share is not None:
        raise FeedbackError(
            "safe_share picks the labelled segments by their cost, which the people being asked decide: "
            "use it with the scripted teacher only (unset feedback.safe_share)"
        )
    return (int(settings.segment_length), *_draw_queries(dataset, settings, _streams(seed)))  # type: ignore[arg-type]


def make_feedback(
    dataset: "Dataset",
    threshold: float,
    seed: int,
    settings: FeedbackSettings | None = None,
    task: "Task | None" = None,
) -> FeedbackSet:
    """The scripted teacher's feedback on ``dataset`` (same seed + settings -> identical labels)."""
    task = _task_of(dataset, task)
    if not np.isfinite(threshold) or threshold < 0:
        raise FeedbackError(f"threshold {threshold} is not a valid cost threshold (need a number >= 0)")
    settings = (settings or FeedbackSettings()).resolve(task)
    length = int(settings.segment_length)  # type: ignore[arg-type]
    streams = _streams(seed)
    pair_episode, pair_start, safety_episode, safety_start = _draw_queries(dataset, settings, streams)
    budget = safety_budget(threshold, length, task.episode_length)
    if settings.safe_share is not None:  # redraw the labelled segments with the asked share of safe ones
        episode, start = _valid_segments(dataset, length)
        is_safe = safety_labels(_segment_sums(dataset.costs, dataset, episode, start, length), budget) == 1.0
        safety_episode, safety_start = sample_segments_by_class(
            episode, start, is_safe, int(settings.num_safety_labels), float(settings.safe_share), streams["safe_share"]  # type: ignore[arg-type]
        )

    pair_truth = _segment_sums(dataset.rewards, dataset, pair_episode, pair_start, length)
    safety_truth = _segment_sums(dataset.costs, dataset, safety_episode, safety_start, length)
    margin = reward_margin(dataset, length, task.episode_length)
    if (settings.bt_temperature > 0 or settings.equal_band > 0) and margin == 0:
        raise FeedbackError("the dataset's mean episode return is 0, so bt_temperature/equal_band have no scale; set them to 0")
    pair_label = noisy_preference_labels(
        pair_truth[:, 0], pair_truth[:, 1], settings, margin, streams["bradley_terry"], streams["flips"]
    )
    safety_label = safety_labels(safety_truth, budget)
    if settings.safety_flip_prob > 0:
        flip = streams["safety_flips"].random(len(safety_label)) < settings.safety_flip_prob
        safety_label[flip] = 1.0 - safety_label[flip]

    provenance = {
        "format_version": FORMAT_VERSION,
        "source": "synthetic",
        "teacher": "PreSa scripted teacher (summed segment reward; cost <= kappa*H/T) with B-Pref noise",
        "task": task.name,
        "threshold": float(threshold),
        "episode_length": int(task.episode_length),
        "segment_length": length,
        "safety_budget": budget,
        "seed": int(seed),
        "settings": asdict(settings),
        "dataset": _dataset_provenance(dataset),
        "num_pairs": int(len(pair_label)),
        "num_safety_labels": int(len(safety_label)),
        "versions": _versions(),
    }
    return FeedbackSet(
        segment_length=length,
        pair_episode=pair_episode,
        pair_start=pair_start,
        pair_label=pair_label,
        safety_episode=safety_episode,
        safety_start=safety_start,
        safety_label=safety_label,
        pair_truth=pair_truth,
        safety_truth=safety_truth,
        provenance=provenance,
        diagnostics={"reward_margin": margin},
    )
