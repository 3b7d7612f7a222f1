"""The one place a `--device auto|cpu|cuda[:N]` choice is checked and resolved."""

from __future__ import annotations

from bench.errors import BadInput


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' if torch sees a GPU else 'cpu'; a GPU asked for but absent is bad input."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise BadInput(f"unknown device '{device}': choose auto, cpu or cuda")
    if device == "cpu":
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise BadInput(f"--device {device} asked for a GPU but torch sees none; use --device cpu or auto")
    return device


#: glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_ALLOCATOR_TUNED = False


def tune_cpu_allocator(limit_bytes: int = 1 << 30) -> bool:
    """Keep freed blocks of up to ``limit_bytes`` in the process heap instead of returning them to the OS.

    A training step allocates and frees the same few (batch, width) activation tensors (megabytes
    each) every step. glibc serves blocks that large with mmap and gives them back on free, so every
    step page-faults its activations afresh (measured: a third of a PreSa run's CPU time went to the
    kernel). Raising the mmap and trim thresholds lets the heap reuse them. It costs only that the
    process keeps its peak heap until it exits. A no-op (False) where the C library is not glibc.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _ALLOCATOR_TUNED = bool(mallopt(_M_MMAP_THRESHOLD, limit_bytes)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 * limit_bytes))
    return _ALLOCATOR_TUNED
