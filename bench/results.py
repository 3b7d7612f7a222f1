"""The result store: one parquet file per cell, written atomically, read back with one pandas call.

Layout under a results directory (default ``results/``)::

    cells/<cell-id>.parquet      one finished cell (episodes + learning curve + metadata)
    failures/<cell-id>.json      a cell that raised, with its error; removed when it later succeeds
    checkpoints/<cell-id>/       the trainer's checkpoint (resume after a kill)
    feedback/                    the feedback cache

A cell is (task, algorithm, threshold, seed, profile, feedback settings). Its file holds rows of two
kinds in ONE fixed schema (so ``pd.read_parquet(cells_dir)`` never has to reconcile schemas):

- ``kind == "episode"``: one evaluation episode of the ``final`` or online-selected ``best``
  checkpoint (column ``checkpoint``): raw return/cost/length and DSRL-normalized reward/cost;
- ``kind == "curve"``: one logged scalar of the learning curve in long form (step, metric, value).

Every row repeats the cell's metadata (config JSON and hash, package versions, git commit, wall
time, steps/s, dataset path and hash, feedback provenance); parquet's dictionary encoding makes
the repetition nearly free. Files are written to a hidden temp name and ``os.replace``d, so a
killed writer leaves either the old file or the new one, never a partial one; pyarrow ignores
hidden (``.``-prefixed) files when reading a directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from bench.io import atomic_torch_save, atomic_write_bytes  # noqa: F401  (re-exported: the store's writers)

CELLS = "cells"
FAILURES = "failures"
CHECKPOINTS = "checkpoints"
FEEDBACK = "feedback"
#: Key in the parquet file metadata that holds the config hash (read without loading the rows).
HASH_KEY = b"presa.config_hash"
#: Packages whose versions go into every record.
VERSIONED_PACKAGES = (
    "presa-bench",
    "torch",
    "numpy",
    "dsrl",
    "osrl-lib",
    "fast-safe-rl",
    "gymnasium",
    "safety-gymnasium",
    "bullet-safety-gym",
    "pandas",
)

EPISODE_COLUMNS = ("checkpoint", "episode", "episode_seed", "return", "cost", "length", "normalized_reward", "normalized_cost")
CURVE_COLUMNS = ("step", "metric", "value")


def _schema():  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.schema(
        [
            ("cell_id", pa.string()),
            ("task", pa.string()),
            ("suite", pa.string()),
            ("algorithm", pa.string()),
            ("threshold", pa.float64()),
            ("seed", pa.int64()),
            ("profile", pa.string()),
            ("feedback", pa.string()),
            ("config_hash", pa.string()),
            ("kind", pa.string()),
            ("checkpoint", pa.string()),
            ("episode", pa.int64()),
            ("episode_seed", pa.int64()),
            ("return", pa.float64()),
            ("cost", pa.float64()),
            ("length", pa.int64()),
            ("normalized_reward", pa.float64()),
            ("normalized_cost", pa.float64()),
            ("step", pa.int64()),
            ("metric", pa.string()),
            ("value", pa.float64()),
            ("config_json", pa.string()),
            ("versions_json", pa.string()),
            ("git_commit", pa.string()),
            ("git_dirty", pa.bool_()),
            ("device", pa.string()),
            ("hostname", pa.string()),
            ("finished_at", pa.string()),
            ("wall_seconds", pa.float64()),
            ("train_seconds", pa.float64()),
            ("steps", pa.int64()),
            ("steps_per_second", pa.float64()),
            ("dataset_path", pa.string()),
            ("dataset_hash", pa.string()),
            ("feedback_provenance_json", pa.string()),
            ("info_json", pa.string()),
        ]
    )


@dataclass(frozen=True)
class CellKey:
    """The identity of a cell. ``feedback`` is a short tag of the feedback settings ("none" for
    methods that use no feedback, "q10000" for 10,000 synthetic queries, "labels-<hash>" for a file)."""

    task: str
    algorithm: str
    threshold: float
    seed: int
    profile: str
    feedback: str = "none"
    #: The sweep's budget protocol ("" = none stated): cells of two protocols coexist in one store.
    budget: str = ""

    @property
    def cell_id(self) -> str:
        base = f"{self.task}__{self.algorithm}__k{self.threshold:g}__s{self.seed}__{self.profile}__{self.feedback}"
        if not self.budget:
            return base
        return base + "__b-" + "".join(c if c.isalnum() or c in "-." else "-" for c in self.budget)


@dataclass
class CellRecord:
    """Everything stored for one finished cell."""

    key: CellKey
    suite: str
    config: dict[str, Any]
    config_hash: str
    #: Per-episode rows (EvalResult.rows()) each with a "checkpoint" entry: "final" or "best".
    episodes: list[dict[str, Any]]
    #: Learning-curve rows {"step": int, metric: value, ...}.
    curve: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"
    wall_seconds: float = 0.0
    train_seconds: float = 0.0
    steps: int = 0
    dataset_path: str = ""
    dataset_hash: str = ""
    feedback_provenance: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def to_json(value: Any) -> str:
    """Canonical JSON (sorted keys; numpy scalars, paths and other objects as strings)."""

    def default(obj: Any) -> Any:
        if hasattr(obj, "item") and callable(obj.item):
            try:
                return obj.item()
            except (TypeError, ValueError):
                pass
        if hasattr(obj, "tolist"):
            return obj.tolist()
        return str(obj)

    return json.dumps(value, sort_keys=True, default=default, separators=(",", ":"))


def config_hash(config: dict[str, Any]) -> str:
    """Hash of the canonical JSON of a resolved config: same config -> same hash."""
    return hashlib.sha256(to_json(config).encode()).hexdigest()[:16]


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_hash(path: Path | str) -> str:
    """sha256 (first 16 hex digits) of a file's bytes, cached per (path, size, mtime)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        _FILE_HASHES[key] = digest.hexdigest()[:16]
    return _FILE_HASHES[key]


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@lru_cache(maxsize=None)
def git_state(directory: str | None = None) -> tuple[str, bool]:
    """(commit, dirty) of the repository holding presa-bench; ("unknown", False) outside git."""
    where = directory or str(Path(__file__).resolve().parent.parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return commit or "unknown", bool(status.strip())


def cells_dir(results_dir: Path | str) -> Path:
    return Path(results_dir) / CELLS


def cell_path(results_dir: Path | str, key: CellKey) -> Path:
    return cells_dir(results_dir) / f"{key.cell_id}.parquet"


def checkpoint_dir(results_dir: Path | str, key: CellKey) -> Path:
    return Path(results_dir) / CHECKPOINTS / key.cell_id


def _record_rows(record: CellRecord) -> list[dict[str, Any]]:
    commit, dirty = git_state()
    common = {
        "cell_id": record.key.cell_id,
        "task": record.key.task,
        "suite": record.suite,
        "algorithm": record.key.algorithm,
        "threshold": float(record.key.threshold),
        "seed": int(record.key.seed),
        "profile": record.key.profile,
        "feedback": record.key.feedback,
        "config_hash": record.config_hash,
        "config_json": to_json(record.config),
        "versions_json": to_json(package_versions()),
        "git_commit": commit,
        "git_dirty": dirty,
        "device": record.device,
        "hostname": socket.gethostname(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_seconds": float(record.wall_seconds),
        "train_seconds": float(record.train_seconds),
        "steps": int(record.steps),
        "steps_per_second": float(record.steps / record.train_seconds) if record.train_seconds > 0 else None,
        "dataset_path": record.dataset_path,
        "dataset_hash": record.dataset_hash,
        "feedback_provenance_json": to_json(record.feedback_provenance),
        "info_json": to_json(record.info),
    }
    rows = []
    for ep in record.episodes:
        if ep.get("checkpoint") not in ("final", "best"):
            raise ValueError("every episode row needs checkpoint 'final' or 'best'")
        rows.append({**common, "kind": "episode", **{k: ep.get(k) for k in EPISODE_COLUMNS}})
    for point in record.curve:
        step = int(point["step"])
        for metric, value in point.items():
            if metric == "step" or value is None:
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue  # a non-numeric log entry has no place on a curve
            rows.append({**common, "kind": "curve", "step": step, "metric": str(metric), "value": number})
    return rows


def write_cell(results_dir: Path | str, record: CellRecord) -> Path:
    """Store a finished cell atomically; clears a failure record of the same cell."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema().with_metadata({HASH_KEY: record.config_hash.encode()})
    table = pa.Table.from_pylist(_record_rows(record), schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    path = cell_path(results_dir, record.key)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    failure = Path(results_dir) / FAILURES / f"{record.key.cell_id}.json"
    failure.unlink(missing_ok=True)
    return path


def stored_hash(results_dir: Path | str, key: CellKey) -> str | None:
    """The config hash of a stored cell, or None if absent or unreadable (then it is rerun)."""
    import pyarrow.parquet as pq

    path = cell_path(results_dir, key)
    if not path.is_file():
        return None
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:  # noqa: BLE001 - an unreadable file is treated as not done
        return None
    value = meta.get(HASH_KEY)
    return value.decode() if value else None


def is_done(results_dir: Path | str, key: CellKey, config_hash_: str) -> bool:
    return stored_hash(results_dir, key) == config_hash_


def write_failure(results_dir: Path | str, key: CellKey, error: str, traceback_text: str = "") -> Path:
    path = Path(results_dir) / FAILURES / f"{key.cell_id}.json"
    payload = {
        "cell_id": key.cell_id,
        "task": key.task,
        "algorithm": key.algorithm,
        "threshold": key.threshold,
        "seed": key.seed,
        "profile": key.profile,
        "feedback": key.feedback,
        "error": error,
        "traceback": traceback_text,
        "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_bytes(path, json.dumps(payload, indent=1).encode())
    return path


def load_failures(results_dir: Path | str) -> list[dict[str, Any]]:
    directory = Path(results_dir) / FAILURES
    if not directory.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def _read(results_dir: Path | str, kind: str, columns: Iterable[str] | None = None):  # type: ignore[no-untyped-def]
    import pandas as pd

    directory = cells_dir(results_dir)
    if not directory.is_dir() or not any(directory.glob("*.parquet")):
        return pd.DataFrame({name: pd.Series(dtype=object) for name in _schema().names})
    return pd.read_parquet(
        directory, filters=[("kind", "==", kind)], columns=list(columns) if columns else None, schema=_schema()
    )


def load_results(results_dir: Path | str, columns: Iterable[str] | None = None):  # type: ignore[no-untyped-def]
    """Every stored evaluation episode of every cell, as one DataFrame (one pandas call)."""
    return _read(results_dir, "episode", columns).reset_index(drop=True)


def load_curves(results_dir: Path | str):  # type: ignore[no-untyped-def]
    """Every stored learning-curve point (long form: step, metric, value) of every cell."""
    return _read(results_dir, "curve").reset_index(drop=True)


def remove_stale_temp_files(results_dir: Path | str) -> int:
    """Delete temp files left by killed writers (their pid is gone). Returns how many."""
    removed = 0
    for directory in (cells_dir(results_dir), Path(results_dir) / FAILURES):
        if not directory.is_dir():
            continue
        for tmp in directory.glob(".*.tmp"):
            try:
                pid = int(tmp.name.rsplit(".", 2)[-2])
            except (ValueError, IndexError):
                continue
            if pid != os.getpid() and not _pid_alive(pid):
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
