"""Atomic file writes: a checkpoint or record is either the old file or the complete new one."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import Any


def stage_bytes(path: Path, data: bytes) -> Path:
    """Write data to a hidden temp file next to path (``.<name>.<pid>.tmp``, fsynced); returns it.
    The caller renames it into place (os.replace), or leaves it for `remove_stale_temp_files`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)  # no partial temp file is left behind
        if exc.errno == errno.ENOSPC:
            from bench.errors import BenchError

            raise BenchError(f"no space left on the device to write {path}; free some space and rerun") from exc
        raise
    return tmp


def atomic_write_bytes(path: Path, data: bytes, crash_point: str | None = None) -> None:
    """Write to a hidden temp file in the same directory, fsync, then os.replace.

    ``crash_point`` names the moment between the two for crash injection (bench.faults)."""
    tmp = stage_bytes(path, data)
    if crash_point:
        from bench.faults import crash_point as reach

        reach(crash_point)
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save made atomic (see atomic_write_bytes): checkpoints are never left half-written."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def _numpy_globals() -> list[Any]:
    """What pickled numpy arrays and scalars need (numpy.random.get_state() holds an array)."""
    import numpy as np

    multiarray = np.core.multiarray if hasattr(np, "core") else np._core.multiarray
    numeric = {type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG"}  # numpy >= 1.25 pickles these classes
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *sorted(numeric, key=str)]


def load_torch_file(path: Path | str, map_location: str = "cpu") -> Any:
    """torch.load with ``weights_only=True``: tensors, numpy arrays and plain Python values only, so
    a checkpoint copied from someone else can never run code when loaded. A file that needs more
    is refused (BadInput, exit 2) without running any of it."""
    import pickle

    import torch

    with torch.serialization.safe_globals(_numpy_globals()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            from bench.errors import BadInput

            lines = [line.strip() for line in str(exc).splitlines() if any(w in line for w in ("GLOBAL", "but got", "Unsupported"))]
            why = lines[0] if lines else type(exc).__name__
            raise BadInput(
                f"{path} holds pickled objects other than tensors and plain values ({why[:200]}); it was not "
                "loaded: delete it (a run then starts afresh) or use a checkpoint you made yourself"
            ) from None
