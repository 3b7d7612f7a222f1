"""Agreement between annotators of a labels file: shared questions, raw agreement, Cohen's kappa."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.feedback.schema import PREFERENCE, SAFETY


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cohen's kappa of two raters' labels on the same items: (p_o - p_e) / (1 - p_e), p_e from
    each rater's own label frequencies. None when undefined (no items, or both always give one
    same label: p_e = 1)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not len(a):
        return None
    categories = np.union1d(a, b)
    observed = float(np.mean(a == b))
    expected = float(sum(np.mean(a == c) * np.mean(b == c) for c in categories))
    return None if expected >= 1.0 else (observed - expected) / (1.0 - expected)


def annotator_agreement(columns: dict[str, Any]) -> list[dict[str, Any]]:
    """Agreement between annotators on the questions they both answered, per kind and per pair of
    annotators: how many questions they share, the fraction with the same label, Cohen's kappa.

    ``columns`` as `validate_labels` returns them. A pair asked in the other order counts as the
    same question (its label mirrored: 1 - y)."""
    import pandas as pd

    who = columns.get("annotator")
    if who is None:
        return []
    pref = np.asarray(columns["pref"], bool)
    e0, s0, e1, s1 = (np.nan_to_num(columns[c], nan=-1).astype(np.int64) for c in ("episode_0", "start_0", "episode_1", "start_1"))
    label = np.asarray(columns["label"], np.float64)
    swap = pref & ((e1 < e0) | ((e1 == e0) & (s1 < s0)))
    frame = pd.DataFrame({
        "kind": np.where(pref, PREFERENCE, SAFETY),
        "a": [f"{x}:{y}" for x, y in zip(np.where(swap, e1, e0), np.where(swap, s1, s0))],
        "b": [f"{x}:{y}" if p else "" for x, y, p in zip(np.where(swap, e0, e1), np.where(swap, s0, s1), pref)],
        "who": np.asarray(who).astype(str),
        "label": np.where(swap, 1.0 - label, label),
    })
    out: list[dict[str, Any]] = []
    for kind in (PREFERENCE, SAFETY):
        table = frame[frame["kind"] == kind].pivot_table(index=["a", "b"], columns="who", values="label", aggfunc="first")
        names = sorted(table.columns)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                both = table[[first, second]].dropna()
                x, y = both[first].to_numpy(), both[second].to_numpy()
                out.append({
                    "kind": kind, "annotators": [first, second], "shared": int(len(both)),
                    "agreement": float(np.mean(x == y)) if len(both) else None, "kappa": cohen_kappa(x, y),
                })
    return out
