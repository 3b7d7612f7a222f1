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
