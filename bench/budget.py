"""Budget accounting shared by run, sweep, live view and report.

configs/budgets.yaml names an algorithm's step count, batch size and CPU cap by dotted keys into
its config (``steps_key``, ``batch_key``, ``cap_key``, e.g. ``"trainer.update_steps"``); every
reader of a budget resolves those keys here, the one way.
"""

from __future__ import annotations

from typing import Any


def dotted(config: Any, key: str) -> Any:
    """The value at ``key`` ("a.b.c") in nested dicts, or None where the key is empty or any part
    is missing (a budget entry may name a key an old stored config does not have)."""
    if not key:
        return None
    value = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value
