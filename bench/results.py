"""The result store: three plain parquet tables, one file per cell each, read with one pandas call.

Layout under a results directory (default ``results/``)::

    episodes/<cell-id>.parquet   one row per evaluation episode of the cell
    curves/<cell-id>.parquet     its learning curve, long form: step, source ("train"/"eval"), metric, value
    meta/<cell-id>.parquet       ONE row: config JSON and hash, versions, git, timings, provenance, info
    failures/<cell-id>.json      a cell that raised, with its error; removed when it later succeeds
    quarantine/<time>/<table>/   cell files `results check --repair` moved aside (never deleted)
    checkpoints/<cell-id>/       the trainer's checkpoint (resume after a kill)
    feedback/                    the feedback cache

A cell is (task, algorithm, threshold, seed, profile, feedback settings, budget protocol, algorithm
overrides). Every episode and curve row repeats the cell's key columns (cell_id, task, suite,
algorithm, threshold, seed, profile, feedback, budget) and its ``config_hash``, so one
``pd.read_parquet`` call per table is enough to group; integer columns (seed, episode,
episode_seed, length, step, steps) are int64 in every file (fixed schemas, no nulls).

The meta file is the cell's done marker. `write_cell` stages all three files under hidden temp names
(pyarrow ignores hidden, ``.``-prefixed, files when reading a directory; a writer killed meanwhile
leaves the stored cell as it was), then swaps episodes and curves into place (os.replace) and the
meta file LAST; the old meta file is never removed first, so a reader sees the old cell or the new
one, never none. No file is ever seen half-written. A cell is done only when its meta file holds
the config hash AND its episode and curve files read whole with rows of that hash (`is_done`);
otherwise the rerun overwrites its files, and the readers `load_results` / `load_curves` /
`load_meta` skip its rows: they keep only rows whose (cell_id, config_hash) is in the meta table.
The readers read file by file where a file does not read (truncated, not parquet): they skip it
with one warning line that names it and ``presa-bench results check --repair``, which moves the
files of such broken, partial or orphaned cells to ``quarantine/<time>/`` (never deleted) so that
the next run or sweep reruns exactly those cells. A bare ``pd.read_parquet("results/episodes")``
gives the same rows except after a writer was killed between its episodes and meta files (then the
orphan rows of that cell show until it is rerun).

Stores of the old one-table layout (``cells/<cell-id>.parquet``, episode and curve rows in one
schema with a ``kind`` column) are converted by ``presa-bench results migrate`` (`migrate`); the
readers refuse such a store with a one-line pointer to that command.
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

from bench.io import atomic_write_bytes, stage_bytes

EPISODES = "episodes"
CURVES = "curves"
META = "meta"
#: The old one-table layout (before the three tables); `migrate` converts it.
CELLS = "cells"
#: Where `migrate` puts old cell files it cannot convert (never deleted).
UNMIGRATED = "cells-unmigrated"
FAILURES = "failures"
CHECKPOINTS = "checkpoints"
FEEDBACK = "feedback"
#: Key in the meta file's parquet metadata that holds the config hash (read without loading rows).
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
CURVE_COLUMNS = ("step", "source", "metric", "value")
#: Curve sources: the trainer's logged scalars, and the online evaluations during training.
CURVE_SOURCES = ("train", "eval")
#: A curve row without a "source" entry is an evaluation row if it holds one of these metrics.
EVAL_METRICS = ("normalized_reward", "normalized_cost")
#: The cell key columns repeated in every episode, curve and meta row.
KEY_COLUMNS = ("cell_id", "task", "suite", "algorithm", "threshold", "seed", "profile", "feedback", "budget", "config_hash")


def _key_fields():  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return [
        ("cell_id", pa.string()),
        ("task", pa.string()),
        ("suite", pa.string()),
        ("algorithm", pa.string()),
        ("threshold", pa.float64()),
        ("seed", pa.int64()),
        ("profile", pa.string()),
        ("feedback", pa.string()),
        ("budget", pa.string()),
        ("config_hash", pa.string()),
    ]


def episode_schema():  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.schema(
        _key_fields()
        + [
            ("checkpoint", pa.string()),
            ("episode", pa.int64()),
            ("episode_seed", pa.int64()),
            ("return", pa.float64()),
            ("cost", pa.float64()),
            ("length", pa.int64()),
            ("normalized_reward", pa.float64()),
            ("normalized_cost", pa.float64()),
        ]
    )


def curve_schema():  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.schema(
        _key_fields() + [("step", pa.int64()), ("source", pa.string()), ("metric", pa.string()), ("value", pa.float64())]
    )


def meta_schema():  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.schema(
        _key_fields()
        + [
            ("overrides_json", pa.string()),
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
            ("steps_this_process", pa.int64()),
            ("steps_per_second", pa.float64()),
            ("episodes", pa.int64()),
            ("curve_points", pa.int64()),
            ("dataset_path", pa.string()),
            ("dataset_hash", pa.string()),
            ("feedback_provenance_json", pa.string()),
            ("info_json", pa.string()),
            ("migrated_from", pa.string()),
        ]
    )


def _legacy_schema():  # type: ignore[no-untyped-def]
    """The old one-table ``cells/`` schema (read only by `migrate`)."""
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


def overrides_tag(overrides: dict[str, Any] | None, budget: dict[str, Any] | None = None) -> str:
    """Short hash (8 hex digits) of a cell's algorithm overrides; "" without overrides. The keys a
    sweep's budget record sets (its steps_key and batch_key) are left out: the budget protocol
    already names the cell (``__b-...``) and a sweep never lets ``--set`` touch them."""
    budget_keys = {str(budget.get(k) or "") for k in ("steps_key", "batch_key")} if budget else set()
    own = {k: v for k, v in (overrides or {}).items() if k not in budget_keys}
    return config_hash(own)[:8] if own else ""


@dataclass(frozen=True)
class CellKey:
    """The identity of a cell. ``feedback`` is a short tag of the feedback settings ("none" for
    methods that use no feedback, "q10000" for 10,000 synthetic queries, "labels-<hash>" for a file).
    ``overrides`` is `overrides_tag` of the algorithm overrides (``--set``): cells run with other
    overrides get other ids (``...__o-<8 hex>``) and are stored side by side."""

    task: str
    algorithm: str
    threshold: float
    seed: int
    profile: str
    feedback: str = "none"
    #: The sweep's budget protocol ("" = none stated): cells of two protocols coexist in one store.
    budget: str = ""
    overrides: str = ""

    @property
    def cell_id(self) -> str:
        base = f"{self.task}__{self.algorithm}__k{self.threshold:g}__s{self.seed}__{self.profile}__{self.feedback}"
        if self.budget:
            base += "__b-" + "".join(c if c.isalnum() or c in "-." else "-" for c in self.budget)
        if self.overrides:
            base += f"__o-{self.overrides}"
        return base


@dataclass
class CellRecord:
    """Everything stored for one finished cell."""

    key: CellKey
    suite: str
    config: dict[str, Any]
    config_hash: str
    #: Per-episode rows (EvalResult.rows()) each with a "checkpoint" entry: "final" or "best".
    episodes: list[dict[str, Any]]
    #: Learning-curve rows {"step": int, metric: value, ...}, optionally with "source": "train" or
    #: "eval" (without it: "eval" if the row holds an EVAL_METRICS entry, else "train").
    curve: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"
    wall_seconds: float = 0.0
    train_seconds: float = 0.0
    steps: int = 0
    #: Steps this process ran (a resumed run counts only its own); 0 = unknown (then ``steps``).
    steps_this_process: int = 0
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


def table_dir(results_dir: Path | str, table: str) -> Path:
    return Path(results_dir) / table


def episodes_path(results_dir: Path | str, key: CellKey | str) -> Path:
    return Path(results_dir) / EPISODES / f"{_cell_id(key)}.parquet"


def curves_path(results_dir: Path | str, key: CellKey | str) -> Path:
    return Path(results_dir) / CURVES / f"{_cell_id(key)}.parquet"


def meta_path(results_dir: Path | str, key: CellKey | str) -> Path:
    return Path(results_dir) / META / f"{_cell_id(key)}.parquet"


#: The file that marks a cell done (its meta file).
cell_path = meta_path


def _cell_id(key: CellKey | str) -> str:
    return key.cell_id if isinstance(key, CellKey) else str(key)


def checkpoint_dir(results_dir: Path | str, key: CellKey) -> Path:
    return Path(results_dir) / CHECKPOINTS / key.cell_id


def _key_row(record: CellRecord) -> dict[str, Any]:
    return {
        "cell_id": record.key.cell_id,
        "task": record.key.task,
        "suite": record.suite,
        "algorithm": record.key.algorithm,
        "threshold": float(record.key.threshold),
        "seed": int(record.key.seed),
        "profile": record.key.profile,
        "feedback": record.key.feedback,
        "budget": record.key.budget,
        "config_hash": record.config_hash,
    }


def curve_source(point: dict[str, Any]) -> str:
    """"train" or "eval" for one curve row (its "source" entry, else by its metrics)."""
    source = point.get("source")
    if source is None:
        return "eval" if any(name in point for name in EVAL_METRICS) else "train"
    if source not in CURVE_SOURCES:
        raise ValueError(f"curve row source must be 'train' or 'eval', got {source!r}")
    return str(source)


def _episode_rows(record: CellRecord) -> list[dict[str, Any]]:
    key = _key_row(record)
    rows = []
    for ep in record.episodes:
        if ep.get("checkpoint") not in ("final", "best"):
            raise ValueError("every episode row needs checkpoint 'final' or 'best'")
        row = {**key, **{k: ep.get(k) for k in EPISODE_COLUMNS}}
        for name in ("episode", "episode_seed", "length"):
            row[name] = int(row[name]) if row[name] is not None else -1
        rows.append(row)
    return rows


def _curve_rows(record: CellRecord) -> list[dict[str, Any]]:
    key = _key_row(record)
    rows = []
    for point in record.curve:
        step = int(point["step"])
        source = curve_source(point)
        for metric, value in point.items():
            if metric in ("step", "source") or value is None:
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue  # a non-numeric log entry has no place on a curve
            rows.append({**key, "step": step, "source": source, "metric": str(metric), "value": number})
    return rows


def _meta_row(record: CellRecord, episodes: int, curve_points: int) -> dict[str, Any]:
    commit, dirty = git_state()
    own = int(record.steps_this_process) or int(record.steps)
    overrides = record.config.get("overrides") if isinstance(record.config, dict) else None
    return {
        **_key_row(record),
        "overrides_json": to_json(overrides or {}),
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
        "steps_this_process": int(record.steps_this_process),
        # steps this process ran over this process's training seconds (a resume counts its own only)
        "steps_per_second": float(own / record.train_seconds) if record.train_seconds > 0 else None,
        "episodes": int(episodes),
        "curve_points": int(curve_points),
        "dataset_path": record.dataset_path,
        "dataset_hash": record.dataset_hash,
        "feedback_provenance_json": to_json(record.feedback_provenance),
        "info_json": to_json(record.info),
        "migrated_from": "",
    }


def _parquet_bytes(rows: list[dict[str, Any]], schema: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _write_tables(
    results_dir: Path | str, cell_id: str, config_hash_: str, episodes: list[dict[str, Any]],
    curves: list[dict[str, Any]], meta: dict[str, Any],
) -> Path:
    """All three files are staged under hidden temp names first (a writer killed meanwhile leaves the
    stored cell as it was, and a failed staging removes what it staged); then episodes and curves
    are swapped into place and the meta file (the done marker) last, the old one never removed first."""
    meta_file = meta_path(results_dir, cell_id)
    staged: list[tuple[Path, Path]] = []
    try:
        for path, rows, schema in (
            (episodes_path(results_dir, cell_id), episodes, episode_schema()),
            (curves_path(results_dir, cell_id), curves, curve_schema()),
        ):
            staged.append((stage_bytes(path, _parquet_bytes(rows, schema)), path))
    except BaseException:
        for tmp, _ in staged:  # e.g. the disk filled up on the second file: the first goes too
            tmp.unlink(missing_ok=True)
        raise
    meta_bytes = _parquet_bytes([meta], meta_schema().with_metadata({HASH_KEY: config_hash_.encode()}))
    from bench.faults import crash_point

    crash_point("write")  # crash injection (bench.faults): staged, nothing renamed yet
    # Each file is swapped in whole (os.replace): a reader sees the old or the new file, never none.
    # The old meta stays until the new one replaces it, so a rewrite never shows the cell half gone.
    for tmp, path in staged:
        os.replace(tmp, path)
    atomic_write_bytes(meta_file, meta_bytes)
    return meta_file


def write_cell(results_dir: Path | str, record: CellRecord) -> Path:
    """Store a finished cell (episodes, curves, meta last; see the module docstring); clears a
    failure record of the same cell. Returns the meta file's path."""
    episodes = _episode_rows(record)
    curves = _curve_rows(record)
    meta = _meta_row(record, len(episodes), len(curves))
    path = _write_tables(results_dir, record.key.cell_id, record.config_hash, episodes, curves, meta)
    failure = Path(results_dir) / FAILURES / f"{record.key.cell_id}.json"
    failure.unlink(missing_ok=True)
    return path


def _meta_hash(path: Path) -> str | None:
    import pyarrow.parquet as pq

    if not path.is_file():
        return None
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:  # noqa: BLE001 - an unreadable file is treated as not done
        return None
    value = meta.get(HASH_KEY)
    return value.decode() if value else None


def stored_hash(results_dir: Path | str, key: CellKey) -> str | None:
    """The config hash of a stored (done) cell, or None if absent or unreadable (then it is rerun)."""
    require_migrated(results_dir)
    return _meta_hash(meta_path(results_dir, key))


def require_writable(results_dir: Path | str) -> None:
    """BadInput (exit 2) when a cell could not be stored in ``results_dir``: the store or one of its
    folders is a file, or not writable. Called before training, so no training is wasted."""
    from bench.errors import BadInput

    root = Path(results_dir)
    for path in (root, *(root / name for name in (EPISODES, CURVES, META, FAILURES, CHECKPOINTS))):
        if path.exists() and not path.is_dir():
            raise BadInput(f"{path} is a file, but the result store needs a folder there; move the file away or choose another --results")
        if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
            raise BadInput(f"cannot write to {path}; fix its permissions or choose another --results")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create the result store {root}: {exc.strerror}; choose another --results") from None


def is_done(results_dir: Path | str, key: CellKey, config_hash_: str) -> bool:
    """Whether the cell is stored with this config: its meta file holds the hash AND its episode and
    curve files read whole with rows of that hash only (a truncated or stale table means rerun)."""
    if stored_hash(results_dir, key) != config_hash_:
        return False
    return _table_hashes(episodes_path(results_dir, key)) == {config_hash_} and _table_hashes(
        curves_path(results_dir, key)
    ) in ({config_hash_}, set())  # a cell may have logged no curve


def _table_hashes(path: Path) -> set[str] | None:
    """The config hashes of a cell's episode or curve file (read whole); None if absent or unreadable."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception:  # noqa: BLE001 - absent, truncated or not parquet: the table does not read
        return None
    if "config_hash" not in table.column_names:
        return None
    return {str(h) for h in table.column("config_hash").to_pylist()}


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


def legacy_cells(results_dir: Path | str) -> list[Path]:
    """The cell files of the old one-table layout (``cells/*.parquet``) still in a store."""
    directory = Path(results_dir) / CELLS
    return sorted(directory.glob("*.parquet")) if directory.is_dir() else []


def require_migrated(results_dir: Path | str) -> None:
    """BadInput (exit 2) when the store still holds cells of the old one-table layout."""
    old = legacy_cells(results_dir)
    if old:
        from bench.errors import BadInput

        raise BadInput(
            f"{results_dir} holds {len(old)} cell(s) in the old one-table layout ({CELLS}/); "
            f"convert them first with: presa-bench results migrate --results {results_dir}"
        )


#: Broken files already reported by this process (path, size, mtime): one warning line each.
_WARNED: set[tuple[str, int, int]] = set()


def _warn_broken(path: Path, exc: Exception) -> None:
    """One line on stderr naming an unreadable cell file and the command that moves it aside."""
    import sys

    try:
        stat = path.stat()
        seen = (str(path), stat.st_size, stat.st_mtime_ns)
    except OSError:
        seen = (str(path), -1, -1)
    if seen in _WARNED:
        return
    _WARNED.add(seen)
    results_dir = path.parent.parent
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
    print(
        f"warning: skipped unreadable cell file {path} ({reason}); "
        f"run: presa-bench results check --repair --results {results_dir}",
        file=sys.stderr,
    )


def _read_files(files: list[Path], schema: Any, names: list[str] | None):  # type: ignore[no-untyped-def]
    """One pyarrow table of the readable files among ``files``: all in one call when they all read,
    else file by file, skipping (with one warning each) those that do not."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    try:
        return ds.dataset([str(f) for f in files], schema=schema, format="parquet").to_table(columns=names)
    except Exception:  # noqa: BLE001 - find the broken file(s) below
        pass
    tables = []
    for path in files:
        try:
            tables.append(ds.dataset(str(path), schema=schema, format="parquet").to_table(columns=names))
        except FileNotFoundError:
            continue  # moved aside meanwhile (`results check --repair`)
        except Exception as exc:  # noqa: BLE001 - one broken cell must not hide the others
            _warn_broken(path, exc)
    empty = schema.empty_table()
    return pa.concat_tables(tables) if tables else (empty.select(names) if names else empty)


def _table_files(results_dir: Path | str, table: str) -> list[Path]:
    directory = table_dir(results_dir, table)
    return sorted(directory.glob("*.parquet")) if directory.is_dir() else []


def _read_table(results_dir: Path | str, table: str, schema: Any, columns: Iterable[str] | None = None):  # type: ignore[no-untyped-def]
    names = list(columns) if columns else None
    return _read_files(_table_files(results_dir, table), schema, names).to_pandas()


def _done_only(frame, meta, results_dir: Path | str):  # type: ignore[no-untyped-def]
    """(rows of done cells, meta): rows whose (cell_id, config_hash) is in the meta table. The meta
    of a cell whose rows and meta disagree is read again once: a writer may have swapped its
    files between the two reads (episodes and curves first, meta last)."""
    import pandas as pd

    done = dict(zip(meta["cell_id"], meta["config_hash"]))
    stale = sorted(set(frame.loc[frame["cell_id"].map(done).ne(frame["config_hash"]), "cell_id"]) & set(done))
    if stale:
        again = _read_files([meta_path(results_dir, c) for c in stale], meta_schema(), list(meta.columns)).to_pandas()
        meta = pd.concat([meta[~meta["cell_id"].isin(again["cell_id"])], again], ignore_index=True)
        done = dict(zip(meta["cell_id"], meta["config_hash"]))
    keep = frame["cell_id"].map(done).eq(frame["config_hash"]).to_numpy(dtype=bool)
    return frame[keep].reset_index(drop=True), meta


def load_meta(results_dir: Path | str, columns: Iterable[str] | None = None):  # type: ignore[no-untyped-def]
    """One row per finished cell: key, config and hash, versions, git, timings, provenance, info."""
    require_migrated(results_dir)
    names = list(columns) if columns else None
    if names is not None:
        names = list(dict.fromkeys(["cell_id", "config_hash", *names]))
    return _read_table(results_dir, META, meta_schema(), names).reset_index(drop=True)


def load_results(results_dir: Path | str, columns: Iterable[str] | None = None, meta: bool = False):  # type: ignore[no-untyped-def]
    """Every evaluation episode of every finished cell, one row each (episodes of cells without a
    meta file are skipped). ``meta=True`` joins each row with its cell's meta columns."""
    require_migrated(results_dir)
    names = list(dict.fromkeys(["cell_id", "config_hash", *columns])) if columns else None
    cells = load_meta(results_dir)
    frame, cells = _done_only(_read_table(results_dir, EPISODES, episode_schema(), names), cells, results_dir)
    if meta:
        extra = [c for c in cells.columns if c not in frame.columns or c in ("cell_id", "config_hash")]
        frame = frame.merge(cells[extra], on=["cell_id", "config_hash"], how="left", validate="many_to_one")
    if columns and not meta:
        frame = frame[list(columns)]
    return frame.reset_index(drop=True)


def load_curves(results_dir: Path | str, columns: Iterable[str] | None = None):  # type: ignore[no-untyped-def]
    """Every learning-curve point of every finished cell (long form: step, source, metric, value)."""
    require_migrated(results_dir)
    names = list(dict.fromkeys(["cell_id", "config_hash", *columns])) if columns else None
    frame, _ = _done_only(_read_table(results_dir, CURVES, curve_schema(), names), load_meta(results_dir), results_dir)
    return frame[list(columns)].reset_index(drop=True) if columns else frame


def remove_stale_temp_files(results_dir: Path | str) -> int:
    """Delete the temp files of `atomic_write_bytes` (``.<name>.<pid>.tmp``) anywhere under the
    store whose writer is gone (killed mid-write). Returns how many."""
    removed = 0
    if not Path(results_dir).is_dir():
        return 0
    for root, _, names in os.walk(results_dir):
        for name in names:
            if not (name.startswith(".") and name.endswith(".tmp")):
                continue
            try:
                pid = int(name.rsplit(".", 2)[-2])
            except (ValueError, IndexError):
                continue
            if pid != os.getpid() and not _pid_alive(pid):
                (Path(root) / name).unlink(missing_ok=True)
                removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs. A zombie does not: a worker killed with its sweep is
    reparented to init, and an init that never reaps (a container's) keeps it as a zombie, which
    kill(pid, 0) still finds."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (not Linux), or the process just went
        return True
    return stat[stat.rindex(")") + 2 :].split()[0] not in ("Z", "X")
    return True


# --- checking and repairing a store ---------------------------------------------------------------

#: Where `repair` moves the files of broken cells (never deleted): ``quarantine/<timestamp>/<table>/``.
QUARANTINE = "quarantine"


@dataclass
class CellProblem:
    """A cell whose files do not make a done cell: ``files`` are all of its table files present."""

    cell_id: str
    reason: str
    files: list[Path]


def cell_locked(results_dir: Path | str, cell_id: str) -> bool:
    """Whether a process holds the cell's run lock (bench.runner's flock): its files are in flux."""
    import fcntl

    path = Path(results_dir) / CHECKPOINTS / f".{cell_id}.lock"
    if not path.is_file():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _cell_problem(results_dir: Path | str, cell_id: str) -> str | None:
    """Why the cell's files are not a done cell (unreadable, partial, orphaned), or None if they are."""
    paths = {EPISODES: episodes_path(results_dir, cell_id), CURVES: curves_path(results_dir, cell_id)}
    meta_file = meta_path(results_dir, cell_id)
    hashes = {table: _table_hashes(path) for table, path in paths.items() if path.exists()}
    if not meta_file.exists():
        return f"orphaned: {', '.join(f'{t}/' for t in hashes)} without its {META}/ file"
    try:
        _read_whole(meta_file, meta_schema())
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"unreadable {META}/ file ({type(exc).__name__})"
    wanted = _meta_hash(meta_file)
    for table, path in paths.items():
        if table not in hashes:
            return f"partial: no {table}/ file"
        if hashes[table] is None:
            return f"unreadable {table}/ file"
        if hashes[table] - {wanted}:
            return f"partial: {table}/ rows of another config than its {META}/ file"
    return None


def _read_whole(path: Path, schema: Any) -> None:
    """Read a parquet file whole (raises when it does not read)."""
    import pyarrow.dataset as ds

    ds.dataset(str(path), schema=schema, format="parquet").to_table()


def check_store(results_dir: Path | str) -> list[CellProblem]:
    """Every cell whose table files are unreadable, partial (a table missing, or rows of another
    config than its meta) or orphaned (episodes/curves without meta). Cells a process is running
    right now (their run lock is held) are left out: their files are being replaced."""
    ids = sorted({p.stem for table in (EPISODES, CURVES, META) for p in _table_files(results_dir, table)})
    problems = []
    for cell_id in ids:
        reason = _cell_problem(results_dir, cell_id)
        if reason and not cell_locked(results_dir, cell_id):
            files = [p(results_dir, cell_id) for p in (episodes_path, curves_path, meta_path)]
            problems.append(CellProblem(cell_id, reason, [f for f in files if f.exists()]))
    return problems


def quarantine(results_dir: Path | str, problems: list[CellProblem]) -> Path:
    """Move the files of the broken cells to ``quarantine/<UTC timestamp>/<table>/`` (never delete):
    the cells are then not done, and the next run or sweep reruns exactly them. Returns the folder."""
    stamp = Path(results_dir) / QUARANTINE / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside, n = stamp, 1
    while aside.exists():  # a second repair within the same second gets its own folder
        aside, n = stamp.with_name(f"{stamp.name}-{n}"), n + 1
    for problem in problems:
        for path in problem.files:
            target = aside / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    return aside


# --- migration of the old one-table layout -------------------------------------------------------


@dataclass
class Migration:
    migrated: list[str] = field(default_factory=list)
    #: (file, reason) of old cell files left in place.
    kept: list[tuple[str, str]] = field(default_factory=list)


def _legacy_tables(frame, path: Path) -> tuple[str, str, list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:  # type: ignore[no-untyped-def]
    """(new cell id, config hash, episode rows, curve rows, meta row) of one old cell file."""
    if frame.empty:
        raise ValueError("no rows")
    first = frame.iloc[0]
    if frame["cell_id"].nunique() != 1 or frame["config_hash"].nunique() != 1:
        raise ValueError("rows of more than one cell")
    config = json.loads(first["config_json"] or "{}")
    overrides = config.get("overrides") or {}
    budget = str((config.get("budget") or {}).get("protocol") or "")
    old_id = str(first["cell_id"])
    tag = overrides_tag(overrides, config.get("budget"))
    # the old ids had no overrides part: cells run with --set get theirs, as a new run would name them
    new_id = old_id if not tag or old_id.endswith(f"__o-{tag}") else f"{old_id}__o-{tag}"
    key = {
        "cell_id": new_id, "task": first["task"], "suite": first["suite"], "algorithm": first["algorithm"],
        "threshold": float(first["threshold"]), "seed": int(first["seed"]), "profile": first["profile"],
        "feedback": first["feedback"], "budget": budget, "config_hash": str(first["config_hash"]),
    }
    episodes = []
    for row in frame[frame["kind"] == "episode"].to_dict("records"):
        out = {**key, **{k: row[k] for k in EPISODE_COLUMNS}}
        for name in ("episode", "episode_seed", "length"):
            out[name] = int(out[name])
        episodes.append(out)
    curves = []
    eval_names = {"reward", "cost", "normalized_reward", "normalized_cost", "episode_length"}
    for step, points in frame[frame["kind"] == "curve"].groupby("step", sort=False):
        # an evaluation logged {reward, cost, normalized_*, episode_length} at its step; a training
        # row at the same step never holds normalized_* (EvalResult.summary() is the only source)
        metrics = set(points["metric"])
        is_eval_step = bool(metrics & set(EVAL_METRICS))
        for row in points.to_dict("records"):
            source = "eval" if is_eval_step and row["metric"] in eval_names else "train"
            curves.append({**key, "step": int(step), "source": source, "metric": row["metric"], "value": float(row["value"])})
    train_seconds = float(first["train_seconds"]) if first["train_seconds"] == first["train_seconds"] else 0.0
    meta = {
        **key,
        "overrides_json": to_json(overrides),
        **{name: first[name] for name in (
            "config_json", "versions_json", "git_commit", "git_dirty", "device", "hostname", "finished_at",
            "wall_seconds", "train_seconds", "dataset_path", "dataset_hash", "feedback_provenance_json", "info_json")},
        "steps": int(first["steps"]),
        "steps_this_process": 0,  # unknown in the old layout
        "steps_per_second": None if first["steps_per_second"] != first["steps_per_second"] else float(first["steps_per_second"]),
        "episodes": len(episodes),
        "curve_points": len(curves),
        "migrated_from": f"{CELLS}/{path.name}",
    }
    meta["train_seconds"] = train_seconds
    meta["git_dirty"] = bool(meta["git_dirty"]) if meta["git_dirty"] is not None else False
    return new_id, key["config_hash"], episodes, curves, meta


def migrate(results_dir: Path | str) -> Migration:
    """Convert ``cells/*.parquet`` (the old one-table layout) into episodes/, curves/ and meta/.

    Per cell: the three new files are written (meta last, atomically), then the old file is
    removed. Running it again continues where a killed run stopped (a cell whose new meta file
    already holds its config hash only loses its old file). An old file that cannot be read, or of
    a cell stored meanwhile by a newer run (another config hash; the newer run is left as it is),
    is never deleted: it is moved to ``cells-unmigrated/`` and named in ``kept``.
    """
    import pyarrow.parquet as pq

    report = Migration()

    def keep(path: Path, reason: str) -> None:
        aside = Path(results_dir) / UNMIGRATED / path.name
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, aside)
        report.kept.append((str(aside), reason))

    for path in legacy_cells(results_dir):
        try:
            frame = pq.read_table(path, schema=_legacy_schema()).to_pandas()
            cell_id, hash_, episodes, curves, meta = _legacy_tables(frame, path)
        except Exception as exc:  # noqa: BLE001 - an unreadable old file is kept, never deleted
            keep(path, f"not readable as an old cell file: {type(exc).__name__}: {exc}")
            continue
        current = _meta_hash(meta_path(results_dir, cell_id))
        if current is not None and current != hash_:
            keep(path, f"cell {cell_id} is stored by a newer run (config {current}); the old file is kept aside")
            continue
        if current is None:
            _write_tables(results_dir, cell_id, hash_, episodes, curves, meta)
        if _meta_hash(meta_path(results_dir, cell_id)) == hash_:
            path.unlink()
            report.migrated.append(cell_id)
    directory = Path(results_dir) / CELLS
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
    return report
