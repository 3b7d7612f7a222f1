"""Seeding of the global RNGs (python, numpy, torch) and saving / restoring their states."""

from __future__ import annotations

import random
from typing import Any

import numpy as np


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # a numpy-only algorithm needs no torch
        pass


def global_rng_state() -> dict[str, Any]:
    """The states of python's, numpy's and torch's global RNGs (CUDA's too where there is one)."""
    import torch

    state = {"numpy": np.random.get_state(), "python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `global_rng_state`."""
    import torch

    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
