"""Segments of a dataset: the valid ones, their summed values, and distinct pairs / segments drawn from them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from bench.errors import FeedbackError
from bench.feedback.schema import PAIR_SAMPLING

if TYPE_CHECKING:
    from bench.data import Dataset


def _segment_sums(values: np.ndarray, dataset: "Dataset", episode: np.ndarray, start: np.ndarray, length: int) -> np.ndarray:
    idx = dataset.segment_indices(episode.ravel(), start.ravel(), length)
    return values[idx].astype(np.float64).sum(axis=1).reshape(episode.shape)


#: Bytes the feedback needs at least per segment of length H: its transition indices (int64) and
#: one float32 value gathered per step (`_segment_sums`), plus the draw's own int64 arrays.
BYTES_PER_SEGMENT_STEP = 8 + 4
BYTES_PER_SEGMENT = 32


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable, else the free physical
    pages); None where neither is known."""
    import os

    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def require_memory_for(num_pairs: int, num_segments: int, length: int) -> None:
    """FeedbackError (exit 2) when drawing ``num_pairs`` pairs and ``num_segments`` single segments
    of ``length`` steps would need more memory than is available, before anything is allocated."""
    segments = 2 * int(num_pairs) + int(num_segments)
    needed = segments * (BYTES_PER_SEGMENT + BYTES_PER_SEGMENT_STEP * int(length))
    available = available_memory()
    if available is not None and needed > available:
        raise FeedbackError(
            f"{num_pairs} queries and {num_segments} safety labels of {length} steps need at least "
            f"{needed / 2**30:.1f} GiB of memory but {available / 2**30:.1f} GiB are available: "
            "ask for fewer queries (--num-queries / --queries)"
        )


def _valid_segments(dataset: "Dataset", length: int) -> tuple[np.ndarray, np.ndarray]:
    episode, start = dataset.segment_starts(length)
    if len(episode) == 0:
        longest = int(dataset.episodes.lengths.max()) if dataset.num_episodes else 0
        raise FeedbackError(
            f"no segment of {length} steps fits in any episode (the longest has {longest} steps); "
            "use a smaller --segment-length"
        )
    return episode, start


def sample_pairs(
    episode: np.ndarray, start: np.ndarray, num_pairs: int, how: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(P, 2) episodes and starts of distinct pairs drawn from the valid segments (episode, start),
    which must be grouped by episode as `Dataset.segment_starts` returns them.

    "uniform": the first segment uniform over all segments, the second uniform over the others;
    "disjoint-episodes": the second uniform over the segments of the other episodes. No pair holds
    one segment twice and no two pairs ask the same question (in either order): repeats are
    redrawn, a whole batch at a time, as an annotator would never be asked twice.
    """
    total = len(episode)
    ids, counts = np.unique(episode, return_counts=True)
    if how == "uniform":
        possible = total * (total - 1) // 2
    elif how == "disjoint-episodes":
        possible = (total * total - int(np.sum(counts.astype(np.int64) ** 2))) // 2
    else:
        raise FeedbackError(f"pair_sampling '{how}' is unknown: choose {' or '.join(PAIR_SAMPLING)}")
    if num_pairs > possible:
        raise FeedbackError(
            f"{num_pairs} distinct pairs asked for but the dataset's segments allow only {possible} "
            f"with pair_sampling '{how}': ask for fewer queries or use shorter segments"
        )

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        first = rng.integers(total, size=n)
        if how == "uniform":
            return first, (first + rng.integers(1, total, size=n)) % total
        block_start = np.searchsorted(episode, episode[first])
        block_size = counts[np.searchsorted(ids, episode[first])]
        # a uniform index over the segments outside the first segment's episode block
        other = (rng.random(n) * (total - block_size)).astype(np.int64)
        return first, np.where(other < block_start, other, other + block_size)

    first = np.empty(num_pairs, np.int64)
    second = np.empty(num_pairs, np.int64)
    todo = np.arange(num_pairs)
    for _ in range(1000):  # each round redraws only the repeats; a handful of rounds in practice
        if not len(todo):
            break
        first[todo], second[todo] = draw(len(todo))
        key = np.minimum(first, second) * total + np.maximum(first, second)
        repeat = np.ones(num_pairs, bool)
        repeat[np.unique(key, return_index=True)[1]] = False
        todo = np.flatnonzero(repeat)
    if len(todo):
        raise FeedbackError(f"could not draw {num_pairs} distinct pairs out of {possible}: ask for fewer queries")
    chosen = np.stack([first, second], axis=1)
    return episode[chosen], start[chosen]


def sample_segments(episode: np.ndarray, start: np.ndarray, num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``num`` distinct segments, uniform without replacement (no segment is labelled twice)."""
    if num > len(episode):
        raise FeedbackError(
            f"{num} safety labels asked for but the dataset has only {len(episode)} distinct segments of "
            "this length: ask for fewer (num_safety_labels) or use shorter segments"
        )
    chosen = rng.choice(len(episode), size=num, replace=False)
    return episode[chosen], start[chosen]


def sample_segments_by_class(
    episode: np.ndarray, start: np.ndarray, is_safe: np.ndarray, num: int, share: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``num`` distinct segments of which round(share * num) are safe (``is_safe`` per valid segment),
    each class uniform without replacement, in a random order."""
    wanted = {True: int(round(share * num)), False: num - int(round(share * num))}
    chosen = []
    for safe, count in wanted.items():
        pool = np.flatnonzero(is_safe == safe)
        if count > len(pool):
            kind = "safe" if safe else "unsafe"
            raise FeedbackError(
                f"safe_share {share} asks for {count} {kind} segments but the dataset has only {len(pool)} at "
                "this threshold and segment length: choose another safe_share or fewer num_safety_labels"
            )
        chosen.append(rng.choice(pool, size=count, replace=False))
    index = rng.permutation(np.concatenate(chosen))
    return episode[index], start[index]
