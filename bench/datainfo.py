"""Dataset summaries and the (episode cost, episode reward) scatter plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.data import Dataset


def summary(ds: Dataset) -> dict[str, Any]:
    ret, cost = ds.episode_returns, ds.episode_costs
    out: dict[str, Any] = {
        "path": str(ds.path),
        "episodes": ds.num_episodes,
        "transitions": ds.num_transitions,
        "dropped_transitions": ds.dropped_transitions,
        "episode_length_mean": float(ds.episodes.lengths.mean()),
        "return_min": float(ret.min()),
        "return_mean": float(ret.mean()),
        "return_max": float(ret.max()),
        "cost_min": float(cost.min()),
        "cost_mean": float(cost.mean()),
        "cost_max": float(cost.max()),
    }
    if ds.task is not None:
        for k in ds.task.thresholds:
            out[f"episodes_cost_le_{k:g}"] = int((cost <= k).sum())
    return out


def summary_table(ds: Dataset):  # type: ignore[no-untyped-def]
    from rich.table import Table

    s = summary(ds)
    title = f"{ds.task.name if ds.task else 'dataset'}: {s['path']}"
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("episodes", str(s["episodes"]))
    table.add_row("transitions", str(s["transitions"]))
    if s["dropped_transitions"]:
        table.add_row("dropped (unfinished last episode)", str(s["dropped_transitions"]))
    table.add_row("episode length (mean)", f"{s['episode_length_mean']:.1f}")
    table.add_row("episode return min / mean / max", f"{s['return_min']:.1f} / {s['return_mean']:.1f} / {s['return_max']:.1f}")
    table.add_row("episode cost min / mean / max", f"{s['cost_min']:.1f} / {s['cost_mean']:.1f} / {s['cost_max']:.1f}")
    if ds.task is not None:
        for k in ds.task.thresholds:
            n = s[f"episodes_cost_le_{k:g}"]
            table.add_row(f"episodes with cost <= {k:g}", f"{n} ({100 * n / s['episodes']:.0f}%)")
    return table


def scatter_plot(ds: Dataset, path: Path) -> Path:
    """Episodes on the (cost, reward) plane with the task's threshold lines, as DSRL plots them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    ax.scatter(ds.episode_costs, ds.episode_returns, s=6, alpha=0.6)
    if ds.task is not None:
        for k in ds.task.thresholds:
            ax.axvline(k, color="red", linestyle="--", linewidth=0.8)
            ax.text(k, np.max(ds.episode_returns), f" {k:g}", color="red", va="top", fontsize=8)
    ax.set_xlabel("episode cost")
    ax.set_ylabel("episode reward")
    ax.set_title(f"{ds.task.name if ds.task else 'dataset'}: {ds.num_episodes} episodes")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
