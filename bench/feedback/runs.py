"""The feedback of one run: a labels file imported, or the scripted teacher's feedback cached on disk."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import FeedbackError
from bench.feedback.containers import FeedbackSet
from bench.feedback.labels import import_labels
from bench.feedback.provenance import dataset_hash
from bench.feedback.schema import FORMAT_VERSION
from bench.feedback.settings import FeedbackSettings
from bench.feedback.synthetic import make_feedback

if TYPE_CHECKING:
    from bench.data import Dataset
    from bench.tasks import Task


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
            "settings": settings.identity(),
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
