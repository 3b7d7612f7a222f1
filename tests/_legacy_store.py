"""A frozen copy of the result store writer before the three-table layout (main up to issue 13):
one ``cells/<cell-id>.parquet`` per cell, episode and curve rows in one schema with a ``kind``
column, every row repeating the metadata. Only the migration tests use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import results as store


def _schema():  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.schema(
        [
            ("cell_id", pa.string()), ("task", pa.string()), ("suite", pa.string()), ("algorithm", pa.string()),
            ("threshold", pa.float64()), ("seed", pa.int64()), ("profile", pa.string()), ("feedback", pa.string()),
            ("config_hash", pa.string()), ("kind", pa.string()), ("checkpoint", pa.string()), ("episode", pa.int64()),
            ("episode_seed", pa.int64()), ("return", pa.float64()), ("cost", pa.float64()), ("length", pa.int64()),
            ("normalized_reward", pa.float64()), ("normalized_cost", pa.float64()), ("step", pa.int64()),
            ("metric", pa.string()), ("value", pa.float64()), ("config_json", pa.string()), ("versions_json", pa.string()),
            ("git_commit", pa.string()), ("git_dirty", pa.bool_()), ("device", pa.string()), ("hostname", pa.string()),
            ("finished_at", pa.string()), ("wall_seconds", pa.float64()), ("train_seconds", pa.float64()),
            ("steps", pa.int64()), ("steps_per_second", pa.float64()), ("dataset_path", pa.string()),
            ("dataset_hash", pa.string()), ("feedback_provenance_json", pa.string()), ("info_json", pa.string()),
        ]
    )


EPISODE_COLUMNS = ("checkpoint", "episode", "episode_seed", "return", "cost", "length", "normalized_reward", "normalized_cost")


def old_cell_id(key: store.CellKey) -> str:
    base = f"{key.task}__{key.algorithm}__k{key.threshold:g}__s{key.seed}__{key.profile}__{key.feedback}"
    if not key.budget:
        return base
    return base + "__b-" + "".join(c if c.isalnum() or c in "-." else "-" for c in key.budget)


def _record_rows(record: store.CellRecord) -> list[dict[str, Any]]:
    common = {
        "cell_id": old_cell_id(record.key), "task": record.key.task, "suite": record.suite,
        "algorithm": record.key.algorithm, "threshold": float(record.key.threshold), "seed": int(record.key.seed),
        "profile": record.key.profile, "feedback": record.key.feedback, "config_hash": record.config_hash,
        "config_json": store.to_json(record.config), "versions_json": store.to_json({"numpy": "1.0"}),
        "git_commit": "abc123", "git_dirty": True, "device": record.device, "hostname": "old-host",
        "finished_at": "2026-01-01T00:00:00Z", "wall_seconds": float(record.wall_seconds),
        "train_seconds": float(record.train_seconds), "steps": int(record.steps),
        "steps_per_second": float(record.steps / record.train_seconds) if record.train_seconds > 0 else None,
        "dataset_path": record.dataset_path, "dataset_hash": record.dataset_hash,
        "feedback_provenance_json": store.to_json(record.feedback_provenance), "info_json": store.to_json(record.info),
    }
    rows = []
    for ep in record.episodes:
        rows.append({**common, "kind": "episode", **{k: ep.get(k) for k in EPISODE_COLUMNS}})
    for point in record.curve:
        step = int(point["step"])
        for metric, value in point.items():
            if metric == "step" or value is None:
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            rows.append({**common, "kind": "curve", "step": step, "metric": str(metric), "value": number})
    return rows


def write_old_cell(results_dir: Path, record: store.CellRecord) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema().with_metadata({b"presa.config_hash": record.config_hash.encode()})
    table = pa.Table.from_pylist(_record_rows(record), schema=schema)
    path = Path(results_dir) / "cells" / f"{old_cell_id(record.key)}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path
