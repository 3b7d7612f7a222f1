"""Heterogeneous feedback on trajectory segments: preference pairs and safety labels.

A segment is (episode, start offset, length H) in a dataset (see bench.data); it never crosses an
episode end. Feedback comes from one of two sources:

- the scripted teacher of PreSa (arXiv 2512.20173; ../shared/reference/presa-method.md, section
  Feedback): a pair is labelled by the summed ground-truth reward of its two segments (1 if the
  second is larger, 0.5 on ties), a segment is safe iff its summed cost is <= kappa * H / T. The
  noise models of real annotators follow B-Pref (Lee et al., NeurIPS 2021 benchmarks track;
  github.com/rll-research/BPref): mistakes (flipped labels), a Bradley-Terry stochastic teacher,
  and an "equal" band, each scaled by the average segment return as B-Pref does;
- a labels file written by people (schema in docs/feedback.md), validated against the dataset.

`FeedbackSet` holds the labels plus ground-truth diagnostics (segment sums, for `summary` only)
and is stored as parquet with its provenance in the file's metadata. Learners get
`FeedbackSet.view()`, a `FeedbackView`: segment indices and labels, no rewards or costs.
Everything is vectorised over index arrays: no per-segment Python objects or loops.
"""

from __future__ import annotations

import hashlib
import json
import os
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.errors import FeedbackError

if TYPE_CHECKING:
    import pandas as pd

    from bench.data import Dataset
    from bench.tasks import Task

#: Version of the stored layout (columns + metadata); part of the cache key.
FORMAT_VERSION = 1
#: Parquet schema-metadata keys: provenance (shown to learners) and ground-truth diagnostics (not).
PROVENANCE_KEY = b"presa_feedback"
DIAGNOSTICS_KEY = b"presa_feedback_diagnostics"
PREFERENCE = "preference"
SAFETY = "safety"
PAIR_SAMPLING = ("uniform", "disjoint-episodes")
#: Columns of a labels file (docs/feedback.md). Safety rows leave episode_1/start_1 empty.
LABEL_COLUMNS = ("kind", "episode_0", "start_0", "episode_1", "start_1", "length", "label")
OPTIONAL_COLUMNS = ("annotator", "dataset_hash")
#: Ground-truth columns written next to the labels by `FeedbackSet.save` (diagnostics only).
TRUTH_COLUMNS = ("gt_reward_0", "gt_reward_1", "gt_cost")
#: Independent random streams, so that e.g. a noise setting never changes which pairs are drawn.
_STREAMS = ("pairs", "safety_segments", "bradley_terry", "flips", "safety_flips")


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

    def split(self, holdout_fraction: float, seed: int) -> tuple["FeedbackView", "FeedbackView"]:
        """(train, held-out): a seeded random ``holdout_fraction`` of the pairs and, separately, of
        the safety labels is held out. Learners that report held-out accuracies (PreSa's held-out
        safety score, Safe-RLHF's reward/cost models) call this with the same fraction and the cell's
        seed, so they train on exactly the same feedback. A fraction of 0 holds nothing out."""
        if not 0.0 <= holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
        rng = np.random.default_rng([int(seed), 0x5A1E])

        def parts(n: int) -> tuple[np.ndarray, np.ndarray]:
            held = int(round(holdout_fraction * n)) if n > 1 else 0
            order = rng.permutation(n)
            return np.sort(order[held:]), np.sort(order[:held])

        pair_train, pair_held = parts(self.num_pairs)
        safety_train, safety_held = parts(self.num_safety_labels)

        def view(pairs: np.ndarray, labels: np.ndarray, part: str) -> "FeedbackView":
            return FeedbackView(
                segment_length=self.segment_length,
                pair_episode=self.pair_episode[pairs],
                pair_start=self.pair_start[pairs],
                pair_label=self.pair_label[pairs],
                safety_episode=self.safety_episode[labels],
                safety_start=self.safety_start[labels],
                safety_label=self.safety_label[labels],
                provenance={**self.provenance, "split": {"part": part, "holdout_fraction": holdout_fraction, "seed": int(seed)}},
            )

        return view(pair_train, safety_train, "train"), view(pair_held, safety_held, "held-out")


# --------------------------------------------------------------------------------------------
# Settings of the scripted teacher
# --------------------------------------------------------------------------------------------


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

    def with_overrides(self, overrides: dict[str, Any]) -> "FeedbackSettings":
        """Apply ``--set feedback.KEY=VALUE`` style overrides, converting values to the field types."""
        hints = typing.get_type_hints(FeedbackSettings)
        known = {f.name for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in known:
                raise FeedbackError(f"unknown feedback setting '{key}': choose from {', '.join(sorted(known))}")
            changes[key] = _coerce(key, value, hints[key])
        out = replace(self, **changes)
        out.validate()
        return out


def _coerce(key: str, value: Any, hint: Any) -> Any:
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise FeedbackError(f"feedback setting '{key}' needs a value")
    try:
        if base is int:
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        return base(value)
    except (TypeError, ValueError):
        raise FeedbackError(f"feedback setting '{key}' = {value!r} is not a valid {base.__name__}") from None


# --------------------------------------------------------------------------------------------
# The scripted teacher: pure functions on segment sums
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Segments
# --------------------------------------------------------------------------------------------


def _segment_sums(values: np.ndarray, dataset: "Dataset", episode: np.ndarray, start: np.ndarray, length: int) -> np.ndarray:
    idx = dataset.segment_indices(episode.ravel(), start.ravel(), length)
    return values[idx].astype(np.float64).sum(axis=1).reshape(episode.shape)


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


# --------------------------------------------------------------------------------------------
# FeedbackSet: labels + diagnostics + provenance, stored as parquet
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedbackSet:
    """Labels with the ground truth behind them (for diagnostics only) and their provenance.

    ``pair_truth`` (P, 2) and ``safety_truth`` (L,) are the summed ground-truth reward / cost of
    each segment; they are never part of `view()`. ``diagnostics`` holds other ground-truth derived
    scalars (the safety budget's true outcome, the noise scale m).
    """

    segment_length: int
    pair_episode: np.ndarray
    pair_start: np.ndarray
    pair_label: np.ndarray
    safety_episode: np.ndarray
    safety_start: np.ndarray
    safety_label: np.ndarray
    pair_truth: np.ndarray | None = None
    safety_truth: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def num_pairs(self) -> int:
        return len(self.pair_label)

    @property
    def num_safety_labels(self) -> int:
        return len(self.safety_label)

    def view(self) -> FeedbackView:
        """What a learner may see: segment indices and labels (copies), provenance; no ground truth."""
        return FeedbackView(
            segment_length=int(self.segment_length),
            pair_episode=self.pair_episode.astype(np.int64, copy=True),
            pair_start=self.pair_start.astype(np.int64, copy=True),
            pair_label=self.pair_label.astype(np.float32, copy=True),
            safety_episode=self.safety_episode.astype(np.int64, copy=True),
            safety_start=self.safety_start.astype(np.int64, copy=True),
            safety_label=self.safety_label.astype(np.float32, copy=True),
            provenance=json.loads(json.dumps(self.provenance)),
        )

    def truth_pair_labels(self) -> np.ndarray | None:
        """The paper's noise-free labels of these pairs (None when the ground truth is unknown)."""
        if self.pair_truth is None:
            return None
        return preference_labels(self.pair_truth[:, 0], self.pair_truth[:, 1])

    def truth_safety_labels(self) -> np.ndarray | None:
        budget = self.provenance.get("safety_budget")
        if self.safety_truth is None or budget is None:
            return None
        return safety_labels(self.safety_truth, float(budget))

    def summary(self) -> dict[str, Any]:
        """Counts, label balance, fraction safe and (when the ground truth is known) agreement."""
        pl, sl = self.pair_label, self.safety_label
        out: dict[str, Any] = {
            "source": self.provenance.get("source"),
            "task": self.provenance.get("task"),
            "threshold": self.provenance.get("threshold"),
            "segment_length": int(self.segment_length),
            "num_pairs": self.num_pairs,
            "num_safety_labels": self.num_safety_labels,
            "pairs_second_preferred": _fraction(pl == 1.0),
            "pairs_first_preferred": _fraction(pl == 0.0),
            "pairs_equal": _fraction(pl == 0.5),
            "fraction_safe": _fraction(sl == 1.0),
            "episodes_covered": int(len(np.unique(np.concatenate([self.pair_episode.ravel(), self.safety_episode])))),
        }
        truth_pairs = self.truth_pair_labels()
        if truth_pairs is not None:
            strict = truth_pairs != 0.5
            out["pair_agreement"] = _fraction(pl == truth_pairs)
            out["pair_agreement_strict"] = _fraction(pl[strict] == truth_pairs[strict])
            out["pairs_tied_in_truth"] = _fraction(~strict)
        truth_safe = self.truth_safety_labels()
        if truth_safe is not None:
            out["safety_agreement"] = _fraction(sl == truth_safe)
            out["fraction_safe_in_truth"] = _fraction(truth_safe == 1.0)
        return out

    # ---- storage ----------------------------------------------------------------------------

    def to_frame(self) -> "pd.DataFrame":
        """One table in the labels-file schema (docs/feedback.md) plus the ground-truth columns."""
        import pandas as pd

        p, s, h = self.num_pairs, self.num_safety_labels, int(self.segment_length)
        nan_p, nan_s = np.full(p, np.nan), np.full(s, np.nan)
        pair_truth = self.pair_truth if self.pair_truth is not None else np.full((p, 2), np.nan)
        safety_truth = self.safety_truth if self.safety_truth is not None else nan_s
        second_missing = np.arange(p + s) >= p
        frame = pd.DataFrame(
            {
                "kind": np.array([PREFERENCE] * p + [SAFETY] * s, dtype=object),
                "episode_0": np.concatenate([self.pair_episode[:, 0], self.safety_episode]),
                "start_0": np.concatenate([self.pair_start[:, 0], self.safety_start]),
                # safety rows leave the second segment empty (a masked integer column)
                "episode_1": pd.arrays.IntegerArray(np.concatenate([self.pair_episode[:, 1], np.zeros(s, np.int64)]), second_missing),
                "start_1": pd.arrays.IntegerArray(np.concatenate([self.pair_start[:, 1], np.zeros(s, np.int64)]), second_missing),
                "length": np.full(p + s, h, np.int64),
                "label": np.concatenate([self.pair_label, self.safety_label]).astype(np.float64),
                "gt_reward_0": np.concatenate([pair_truth[:, 0], nan_s]),
                "gt_reward_1": np.concatenate([pair_truth[:, 1], nan_s]),
                "gt_cost": np.concatenate([nan_p, safety_truth]),
            }
        )
        return frame

    def save(self, path: Path | str) -> Path:
        """Write the parquet file atomically (temp file + rename), provenance in its metadata."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(self.to_frame(), preserve_index=False)
        metadata = dict(table.schema.metadata or {})
        metadata[PROVENANCE_KEY] = json.dumps(self.provenance, sort_keys=True).encode()
        metadata[DIAGNOSTICS_KEY] = json.dumps(self.diagnostics, sort_keys=True).encode()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        pq.write_table(table.replace_schema_metadata(metadata), tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path | str) -> "FeedbackSet":
        """Read a file written by `save` (`feedback make` / `feedback import`)."""
        path = Path(path)
        if path.suffix.lower() in (".csv", ".tsv", ".txt"):
            raise FeedbackError(
                f"{path} is a labels file, not a feedback file: turn it into one with "
                f"`presa-bench feedback import {path} --task TASK`"
            )
        frame, provenance, diagnostics = _read_presa_parquet(path)
        if provenance is None:
            raise FeedbackError(
                f"{path} is not a presa-bench feedback file (no provenance in its metadata); "
                "import a labels file with `presa-bench feedback import FILE --task TASK`"
            )
        missing = [c for c in LABEL_COLUMNS + TRUTH_COLUMNS if c not in frame.columns]
        if missing:
            raise FeedbackError(f"feedback file {path} lacks column(s) {', '.join(missing)}; rebuild it with `presa-bench feedback make`")
        pref = frame["kind"].to_numpy() == PREFERENCE
        pairs, safe = frame[pref], frame[~pref]
        pair_truth = np.stack([pairs["gt_reward_0"].to_numpy(np.float64), pairs["gt_reward_1"].to_numpy(np.float64)], axis=1)
        safety_truth = safe["gt_cost"].to_numpy(np.float64)
        return cls(
            segment_length=int(provenance["segment_length"]),
            pair_episode=np.stack([pairs["episode_0"].to_numpy(np.int64), pairs["episode_1"].to_numpy(np.int64)], axis=1),
            pair_start=np.stack([pairs["start_0"].to_numpy(np.int64), pairs["start_1"].to_numpy(np.int64)], axis=1),
            pair_label=pairs["label"].to_numpy(np.float32),
            safety_episode=safe["episode_0"].to_numpy(np.int64),
            safety_start=safe["start_0"].to_numpy(np.int64),
            safety_label=safe["label"].to_numpy(np.float32),
            pair_truth=None if np.isnan(pair_truth).any() else pair_truth,
            safety_truth=None if np.isnan(safety_truth).any() else safety_truth,
            provenance=provenance,
            diagnostics=diagnostics or {},
        )


def _fraction(mask: np.ndarray) -> float | None:
    return float(np.mean(mask)) if len(mask) else None


def _read_presa_parquet(path: Path) -> tuple["pd.DataFrame", dict[str, Any] | None, dict[str, Any] | None]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise FeedbackError(f"feedback file {path} does not exist")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise FeedbackError(f"{path} is not a readable parquet file (truncated or corrupt?): {exc}") from exc
    metadata = table.schema.metadata or {}
    provenance = json.loads(metadata[PROVENANCE_KEY]) if PROVENANCE_KEY in metadata else None
    diagnostics = json.loads(metadata[DIAGNOSTICS_KEY]) if DIAGNOSTICS_KEY in metadata else None
    return table.to_pandas(), provenance, diagnostics


# --------------------------------------------------------------------------------------------
# Provenance helpers
# --------------------------------------------------------------------------------------------


def dataset_hash(dataset: "Dataset") -> str:
    """Content hash of the dataset: the file's sha256 prefix (the same as the run records'
    dataset_hash, cached per file) or, for a dataset built from arrays, that of its arrays."""
    if dataset.path is not None and Path(dataset.path).is_file():
        from bench.results import file_hash

        return file_hash(dataset.path)
    digest = hashlib.sha256()
    for name in ("observations", "actions", "rewards", "costs", "terminals", "timeouts"):
        digest.update(np.ascontiguousarray(getattr(dataset, name)).tobytes())
    return "arrays-" + digest.hexdigest()[:16]


def _versions() -> dict[str, str]:
    import bench

    return {"presa_bench": bench.__version__, "numpy": np.__version__}


def _dataset_provenance(dataset: "Dataset") -> dict[str, Any]:
    return {
        "path": str(Path(dataset.path).resolve()) if dataset.path is not None else None,
        "hash": dataset_hash(dataset),
        "episodes": int(dataset.num_episodes),
        "transitions": int(dataset.num_transitions),
    }


def _task_of(dataset: "Dataset", task: "Task | None") -> "Task":
    task = task or dataset.task
    if task is None:
        raise FeedbackError("the dataset has no task: pass the task (--task) the feedback is for")
    return task


# --------------------------------------------------------------------------------------------
# Building feedback: scripted teacher
# --------------------------------------------------------------------------------------------


def _streams(seed: int) -> dict[str, np.random.Generator]:
    return dict(zip(_STREAMS, (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(len(_STREAMS)))))


def _draw_queries(
    dataset: "Dataset", settings: FeedbackSettings, streams: dict[str, np.random.Generator]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The teacher's segment draws (resolved settings): pair episodes/starts (P, 2), safety episodes/starts (L,)."""
    length = int(settings.segment_length)  # type: ignore[arg-type]
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

    pair_truth = _segment_sums(dataset.rewards, dataset, pair_episode, pair_start, length)
    safety_truth = _segment_sums(dataset.costs, dataset, safety_episode, safety_start, length)
    budget = safety_budget(threshold, length, task.episode_length)
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


# --------------------------------------------------------------------------------------------
# Importing labels written by people
# --------------------------------------------------------------------------------------------


def _read_labels_table(path: Path) -> tuple["pd.DataFrame", dict[str, Any] | None]:
    import pandas as pd

    if not path.is_file():
        raise FeedbackError(f"labels file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        frame, provenance, _ = _read_presa_parquet(path)
        return frame, provenance
    if suffix in (".csv", ".tsv", ".txt"):
        try:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", skipinitialspace=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise FeedbackError(f"labels file {path} is not a readable CSV: {str(exc).splitlines()[0]}") from exc
        return frame, None
    raise FeedbackError(f"labels file {path} has an unknown type '{suffix}': use .csv or .parquet (docs/feedback.md)")


def _bad_row(path: Path, mask: np.ndarray, why: Any, csv: bool) -> FeedbackError | None:
    """FeedbackError for the first row where ``mask`` is set; rows count from 1 after the header."""
    hits = np.flatnonzero(mask)
    if not len(hits):
        return None
    row = int(hits[0])
    where = f"row {row + 1}" + (f" (line {row + 2})" if csv else "")
    more = f"; {len(hits) - 1} more row(s) like it" if len(hits) > 1 else ""
    return FeedbackError(f"labels file {path}, {where}: {why(row) if callable(why) else why}{more}")


def validate_labels(frame: "pd.DataFrame", dataset: "Dataset", path: Path, csv: bool = True) -> dict[str, np.ndarray]:
    """Check a labels table against the dataset; return its columns as arrays. Raises FeedbackError
    naming the first bad row. All checks are vectorised (one mask per rule)."""

    import pandas as pd

    def fail(mask: np.ndarray, why: Any) -> None:
        error = _bad_row(path, mask, why, csv)
        if error is not None:
            raise error

    frame = frame.rename(columns=lambda c: str(c).strip().lower())
    required = ("kind", "episode_0", "start_0", "length", "label")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise FeedbackError(
            f"labels file {path} lacks column(s) {', '.join(missing)}; a labels file needs "
            f"{', '.join(LABEL_COLUMNS)} (docs/feedback.md)"
        )
    if len(frame) == 0:
        raise FeedbackError(f"labels file {path} has no rows")
    for column in ("episode_1", "start_1"):
        if column not in frame.columns:
            frame[column] = np.nan
    kind = frame["kind"].astype(str).str.strip().str.lower().to_numpy()
    fail(~np.isin(kind, [PREFERENCE, SAFETY]), lambda r: f"kind '{frame['kind'].iloc[r]}' is not 'preference' or 'safety'")
    pref = kind == PREFERENCE

    numbers: dict[str, np.ndarray] = {}
    for column in ("episode_0", "start_0", "episode_1", "start_1", "length", "label"):
        # blanks, text and pandas NA all become NaN, reported below with their row
        numbers[column] = pd.to_numeric(frame[column], errors="coerce").astype("Float64").to_numpy(np.float64, na_value=np.nan)
    for column in ("episode_0", "start_0", "length", "label"):
        fail(np.isnan(numbers[column]), f"'{column}' is empty or not a number")
    for column in ("episode_1", "start_1"):
        fail(pref & np.isnan(numbers[column]), f"'{column}' is empty or not a number (a preference row compares two segments)")
        fail(~pref & ~np.isnan(numbers[column]), f"'{column}' is set on a safety row (a safety label is about one segment: leave it empty)")
    for column in ("episode_0", "start_0", "episode_1", "start_1", "length"):
        value = numbers[column]
        fail(~np.isnan(value) & ((value != np.floor(value)) | ~np.isfinite(value)), lambda r, c=column: f"'{c}' = {numbers[c][r]:g} is not a whole number")

    length = numbers["length"]
    fail(length < 1, lambda r: f"length = {length[r]:g}: a segment needs at least 1 step")
    fail(length != length[0], lambda r: f"length = {length[r]:g} but row 1 has {length[0]:g}: all segments of one feedback set share one length H")
    h = int(length[0])

    n_episodes = dataset.num_episodes
    lengths = dataset.episodes.lengths
    sides = (("episode_0", "start_0"), ("episode_1", "start_1"))
    for ep_col, st_col in sides:
        rows = np.ones(len(frame), bool) if ep_col == "episode_0" else pref
        ep, st = numbers[ep_col], numbers[st_col]
        fail(rows & ((ep < 0) | (ep >= n_episodes)), lambda r, c=ep_col, e=ep: f"{c} = {e[r]:g} is out of range (the dataset has episodes 0..{n_episodes - 1})")
        fail(rows & (st < 0), lambda r, c=st_col, s=st: f"{c} = {s[r]:g} is negative")
        ep_len = np.where(rows, lengths[np.where(rows, ep, 0).astype(np.int64)], 0)
        fail(
            rows & (st + h > ep_len),
            lambda r, e=ep, s=st, L=ep_len: f"segment (episode {e[r]:g}, start {s[r]:g}, length {h}) runs past the end of episode {e[r]:g} ({L[r]} steps): its last start is {L[r] - h}",
        )

    label = numbers["label"]
    fail(pref & ~np.isin(label, (0.0, 0.5, 1.0)), lambda r: f"preference label {label[r]:g} is not 0, 0.5 or 1 (1 = the second segment is preferred)")
    fail(~pref & ~np.isin(label, (0.0, 1.0)), lambda r: f"safety label {label[r]:g} is not 0 or 1 (1 = safe)")
    fail(
        pref & (numbers["episode_0"] == numbers["episode_1"]) & (numbers["start_0"] == numbers["start_1"]),
        "the pair compares a segment with itself",
    )

    # Duplicates: the same question asked twice (a pair in either order), per annotator if given.
    seg_a = numbers["episode_0"] * (int(lengths.max()) + 1) + numbers["start_0"]
    seg_b = np.where(pref, numbers["episode_1"] * (int(lengths.max()) + 1) + numbers["start_1"], -1.0)
    key = {"kind": kind, "a": np.where(pref, np.minimum(seg_a, seg_b), seg_a), "b": np.where(pref, np.maximum(seg_a, seg_b), seg_b)}
    if "annotator" in frame.columns:
        key["annotator"] = frame["annotator"].astype(str).to_numpy()
    keys = pd.DataFrame(key)
    duplicated = keys.duplicated(keep="first").to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        first = int(np.flatnonzero((keys == keys.iloc[row]).all(axis=1).to_numpy())[0])
        fail(duplicated, f"repeats the question of row {first + 1} (the same segment(s); a reversed pair counts as the same)")
    return {
        "pref": pref,
        **{c: numbers[c] for c in numbers},
        "annotator": frame["annotator"].astype(str).to_numpy() if "annotator" in frame.columns else None,  # type: ignore[dict-item]
        "dataset_hash": frame["dataset_hash"].astype(str).to_numpy() if "dataset_hash" in frame.columns else None,  # type: ignore[dict-item]
    }


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cohen's kappa of two raters' labels on the same items: (p_o - p_e) / (1 - p_e), p_e from
    each rater's own label frequencies. None when undefined (no items, or both always give one
    same label: p_e = 1)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not len(a):
        return None
    categories = np.union1d(a, b)
    observed = float(np.mean(a == b))
    expected = float(sum(np.mean(a == c) * np.mean(b == c) for c in categories))
    return None if expected >= 1.0 else (observed - expected) / (1.0 - expected)


def annotator_agreement(columns: dict[str, Any]) -> list[dict[str, Any]]:
    """Agreement between annotators on the questions they both answered, per kind and per pair of
    annotators: how many questions they share, the fraction with the same label, Cohen's kappa.

    ``columns`` as `validate_labels` returns them. A pair asked in the other order counts as the
    same question (its label mirrored: 1 - y)."""
    import pandas as pd

    who = columns.get("annotator")
    if who is None:
        return []
    pref = np.asarray(columns["pref"], bool)
    e0, s0, e1, s1 = (np.nan_to_num(columns[c], nan=-1).astype(np.int64) for c in ("episode_0", "start_0", "episode_1", "start_1"))
    label = np.asarray(columns["label"], np.float64)
    swap = pref & ((e1 < e0) | ((e1 == e0) & (s1 < s0)))
    frame = pd.DataFrame({
        "kind": np.where(pref, PREFERENCE, SAFETY),
        "a": [f"{x}:{y}" for x, y in zip(np.where(swap, e1, e0), np.where(swap, s1, s0))],
        "b": [f"{x}:{y}" if p else "" for x, y, p in zip(np.where(swap, e0, e1), np.where(swap, s0, s1), pref)],
        "who": np.asarray(who).astype(str),
        "label": np.where(swap, 1.0 - label, label),
    })
    out: list[dict[str, Any]] = []
    for kind in (PREFERENCE, SAFETY):
        table = frame[frame["kind"] == kind].pivot_table(index=["a", "b"], columns="who", values="label", aggfunc="first")
        names = sorted(table.columns)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                both = table[[first, second]].dropna()
                x, y = both[first].to_numpy(), both[second].to_numpy()
                out.append({
                    "kind": kind, "annotators": [first, second], "shared": int(len(both)),
                    "agreement": float(np.mean(x == y)) if len(both) else None, "kappa": cohen_kappa(x, y),
                })
    return out


def import_labels(
    path: Path | str,
    dataset: "Dataset",
    task: "Task | None" = None,
    threshold: float | None = None,
) -> FeedbackSet:
    """Validate a labels file against ``dataset`` and turn it into a FeedbackSet.

    ``threshold`` is the run's cost threshold: it lets `summary` compare the safety labels with the
    ground truth, and a feedback file made for another threshold is refused.
    """
    path = Path(path)
    task = _task_of(dataset, task)
    frame, file_provenance = _read_labels_table(path)
    our_hash = dataset_hash(dataset)
    if file_provenance is not None:
        their_task, their_hash = file_provenance.get("task"), (file_provenance.get("dataset") or {}).get("hash")
        if their_task is not None and their_task != task.name:
            raise FeedbackError(f"labels file {path} was made for task {their_task}, not {task.name}")
        if their_hash is not None and their_hash != our_hash:
            raise FeedbackError(
                f"labels file {path} was made for dataset {their_hash} "
                f"({(file_provenance.get('dataset') or {}).get('path')}), not this one ({our_hash}, {dataset.path}); "
                "use the dataset it was made for (--dataset) or relabel"
            )
        their_threshold = file_provenance.get("threshold")
        if their_threshold is not None and threshold is not None and float(their_threshold) != float(threshold):
            raise FeedbackError(
                f"labels file {path} holds safety labels for threshold {their_threshold:g}, not {float(threshold):g}: "
                "make feedback for this threshold (presa-bench feedback make --threshold)"
            )
    csv = path.suffix.lower() not in (".parquet", ".pq")
    columns = validate_labels(frame, dataset, path, csv=csv)
    hashes = columns["dataset_hash"]
    if hashes is not None:
        error = _bad_row(
            path, hashes != our_hash,
            lambda r: f"dataset_hash '{hashes[r]}' is not this dataset's ({our_hash}, {dataset.path}): the labels were made for another dataset",
            csv=csv,
        )
        if error is not None:
            raise error
    pref = columns["pref"]
    h = int(columns["length"][0])
    # validated: whole numbers everywhere except the empty second segment of safety rows
    as_int = {c: np.where(np.isnan(columns[c]), 0, columns[c]).astype(np.int64) for c in ("episode_0", "start_0", "episode_1", "start_1")}
    pair_episode = np.stack([as_int["episode_0"][pref], as_int["episode_1"][pref]], axis=1)
    pair_start = np.stack([as_int["start_0"][pref], as_int["start_1"][pref]], axis=1)
    safety_episode, safety_start = as_int["episode_0"][~pref], as_int["start_0"][~pref]
    budget = safety_budget(threshold, h, task.episode_length) if threshold is not None else None
    from bench.results import file_hash

    provenance: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "source": "file",
        "labels_file": str(path.resolve()),
        "labels_hash": file_hash(path),
        "task": task.name,
        "threshold": float(threshold) if threshold is not None else None,
        "episode_length": int(task.episode_length),
        "segment_length": h,
        "safety_budget": budget,
        "dataset": _dataset_provenance(dataset),
        "num_pairs": int(pref.sum()),
        "num_safety_labels": int((~pref).sum()),
        "versions": _versions(),
    }
    if columns["annotator"] is not None:
        provenance["annotators"] = sorted(set(columns["annotator"].tolist()))
        provenance["annotator_counts"] = {
            name: {"preference": int(np.sum(pref & (columns["annotator"] == name))), "safety": int(np.sum(~pref & (columns["annotator"] == name)))}
            for name in provenance["annotators"]
        }
        if len(provenance["annotators"]) > 1:
            provenance["annotator_agreement"] = annotator_agreement(columns)
    if file_provenance is not None:
        provenance["file_provenance"] = file_provenance
    return FeedbackSet(
        segment_length=h,
        pair_episode=pair_episode,
        pair_start=pair_start,
        pair_label=columns["label"][pref].astype(np.float32),
        safety_episode=safety_episode,
        safety_start=safety_start,
        safety_label=columns["label"][~pref].astype(np.float32),
        pair_truth=_segment_sums(dataset.rewards, dataset, pair_episode, pair_start, h),
        safety_truth=_segment_sums(dataset.costs, dataset, safety_episode, safety_start, h),
        provenance=provenance,
    )


# --------------------------------------------------------------------------------------------
# For the run command
# --------------------------------------------------------------------------------------------


def feedback_for_run(
    task: "Task",
    dataset: "Dataset",
    threshold: float,
    seed: int,
    num_queries: int,
    cache_dir: Path,
    settings: FeedbackSettings | None = None,
    labels_file: Path | None = None,
    **overrides: Any,
) -> FeedbackSet:
    """The feedback of one run: ``labels_file`` imported, or the scripted teacher's feedback loaded
    from ``cache_dir`` (keyed by dataset hash, settings, threshold and seed) or made and cached.

    ``overrides`` are FeedbackSettings fields (``--set feedback.KEY=VALUE``); ``num_queries`` wins
    over settings.num_queries. Learners must get ``.view()`` of the result, never the set itself.
    """
    if labels_file is not None:
        if overrides or settings is not None:
            raise FeedbackError("feedback settings apply to synthetic labels only, not to a labels file: drop them or the labels file")
        return import_labels(labels_file, dataset, task, threshold)
    settings = (settings or FeedbackSettings()).with_overrides({**overrides, "num_queries": num_queries}).resolve(task)
    from bench.results import config_hash

    key = config_hash(
        {
            "format_version": FORMAT_VERSION,
            "task": task.name,
            "dataset_hash": dataset_hash(dataset),
            "threshold": float(threshold),
            "seed": int(seed),
            "settings": asdict(settings),
        }
    )
    path = Path(cache_dir) / f"{task.name}-k{float(threshold):g}-s{int(seed)}-{key}.parquet"
    if path.is_file():
        try:
            cached = FeedbackSet.load(path)
        except FeedbackError:
            cached = None  # a damaged cache entry is rebuilt below
        if cached is not None and cached.provenance.get("cache_key") == key:
            return cached
    made = make_feedback(dataset, threshold, seed, settings, task)
    made.provenance["cache_key"] = key
    made.save(path)
    return made
