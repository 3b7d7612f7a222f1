"""Labels written by people: read a labels file, validate it against the dataset, turn it into a FeedbackSet."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.errors import FeedbackError
from bench.feedback.agreement import annotator_agreement
from bench.feedback.containers import FeedbackSet, _read_presa_parquet
from bench.feedback.provenance import _dataset_provenance, _task_of, _versions, dataset_hash
from bench.feedback.schema import FORMAT_VERSION, LABEL_COLUMNS, PREFERENCE, SAFETY
from bench.feedback.segments import _segment_sums
from bench.feedback.teacher import safety_budget

if TYPE_CHECKING:
    import pandas as pd

    from bench.data import Dataset
    from bench.tasks import Task


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
