"""FeedbackView (what a learner sees) and FeedbackSet (labels + ground-truth diagnostics + provenance,
stored as parquet with the provenance in the file's metadata)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.errors import FeedbackError
from bench.feedback.schema import DIAGNOSTICS_KEY, LABEL_COLUMNS, PREFERENCE, PROVENANCE_KEY, SAFETY, TRUTH_COLUMNS
from bench.feedback.teacher import preference_labels, safety_labels

if TYPE_CHECKING:
    import pandas as pd

#: How `FeedbackView.split` holds feedback out; part of every feedback-using run's config (bench.runner),
#: so runs trained on the earlier split of segments are not taken for runs on this one.
SPLIT_BY = "episode"


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
        """(train, held-out), split by EPISODE so that no step of a held-out segment lies in any
        training segment (segments never cross an episode end): a seeded random set of the labelled
        episodes, holding about ``holdout_fraction`` of the labelled segments, is held out. A safety
        label goes with its segment's episode; a pair is held out when both its segments lie in
        held-out episodes, trains when neither does, and is dropped when it straddles the two (a
        split of segments leaked: held-out segments overlapped training ones almost entirely).
        Held-out pairs are therefore fewer than ``holdout_fraction`` of the pairs (about its square
        under uniform pair sampling). Learners that report held-out accuracies (PreSa's held-out
        safety score, Safe-RLHF's reward/cost models) call this with the same fraction and the cell's
        seed, so they train on exactly the same feedback. A fraction of 0 holds nothing out."""
        if not 0.0 <= holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
        rng = np.random.default_rng([int(seed), 0x5A1E])
        episodes, weight = np.unique(np.concatenate([self.pair_episode.ravel(), self.safety_episode]), return_counts=True)
        order = rng.permutation(len(episodes))
        covered = np.concatenate([[0], np.cumsum(weight[order])])
        # the prefix of the shuffled episodes whose labelled segments come closest to the fraction,
        # always leaving one episode to train on
        count = int(np.argmin(np.abs(covered[: max(len(episodes), 1)] - holdout_fraction * covered[-1])))
        held_episodes = episodes[order[:count]]
        pair_held = np.isin(self.pair_episode, held_episodes)
        pairs = {"train": np.flatnonzero(~pair_held.any(axis=1)), "held-out": np.flatnonzero(pair_held.all(axis=1))}
        label_held = np.isin(self.safety_episode, held_episodes)
        labels = {"train": np.flatnonzero(~label_held), "held-out": np.flatnonzero(label_held)}
        detail = {
            "holdout_fraction": holdout_fraction, "seed": int(seed), "by": SPLIT_BY, "held_out_episodes": count,
            "dropped_pairs": int(self.num_pairs - len(pairs["train"]) - len(pairs["held-out"])),
        }

        def view(part: str) -> "FeedbackView":
            return FeedbackView(
                segment_length=self.segment_length,
                pair_episode=self.pair_episode[pairs[part]],
                pair_start=self.pair_start[pairs[part]],
                pair_label=self.pair_label[pairs[part]],
                safety_episode=self.safety_episode[labels[part]],
                safety_start=self.safety_start[labels[part]],
                safety_label=self.safety_label[labels[part]],
                provenance={**self.provenance, "split": {"part": part, **detail}},
            )

        return view("train"), view("held-out")


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
