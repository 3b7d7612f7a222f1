"""The two oapackage calls osrl-lib's CDT data augmentation makes, in numpy.

osrl.common.dataset.augmentation (CDT's Pareto-frontier augmentation, on by default in OSRL's CDT
configs: augment_percent 0.2) asks oapackage for the Pareto-optimal episodes of the dataset's
(-cost, reward) returns. oapackage has no wheel for numpy 1.x (install-notes.md), so this module
stands in for it -- only when the real package is missing -- with the same meaning: an element is
Pareto optimal when no other element is >= in every objective and > in one (maximisation);
``allindices`` lists all optimal elements, duplicates of an optimal value included. The frontier is
only used through ``np.polyfit`` over these points, so the order of the indices does not matter.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def doubleVector(values: Any) -> tuple[float, ...]:  # noqa: N802 (oapackage's name)
    return tuple(float(v) for v in values)


class ParetoDoubleLong:
    """Collects (objective vector, index) pairs; ``allindices`` returns the Pareto-optimal indices."""

    def __init__(self) -> None:
        self._values: list[tuple[float, ...]] = []
        self._indices: list[int] = []

    def addvalue(self, value: tuple[float, ...], index: int) -> None:
        self._values.append(tuple(value))
        self._indices.append(int(index))

    def allindices(self) -> list[int]:
        if not self._values:
            return []
        v = np.asarray(self._values, np.float64)  # (n, k)
        ge = np.all(v[:, None, :] >= v[None, :, :], axis=2)  # ge[j, i]: j >= i everywhere
        gt = np.any(v[:, None, :] > v[None, :, :], axis=2)
        dominated = np.any(ge & gt, axis=0)
        return [self._indices[i] for i in np.flatnonzero(~dominated)]

    def show(self, verbose: int = 1) -> None:
        pass


def install() -> bool:
    """Give osrl.common.dataset this module as ``oapackage`` if the real one did not import. True if installed."""
    import osrl.common.dataset as osrl_dataset

    if hasattr(osrl_dataset, "oapackage"):
        return False
    import sys

    osrl_dataset.oapackage = sys.modules[__name__]
    return True
