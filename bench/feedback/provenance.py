"""Provenance of feedback: the dataset's content hash and description, versions, the task of a dataset."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.errors import FeedbackError

if TYPE_CHECKING:
    from bench.data import Dataset
    from bench.tasks import Task


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
