"""Browse and reuse a result store: the cells with their state (`results ls`), one cell's record
(`results show`), and a stored policy evaluated again or filmed in the simulator (`evaluate`).

Read-only: nothing here writes to the store (a re-evaluation is printed, not stored, so that the
store's numbers stay those of the cells' own protocol).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import results as store
from bench.errors import BadInput, BenchError

#: Video formats and the imageio plugin each needs (GIF: pillow, a dependency of imageio; MP4: ffmpeg).
VIDEO_FORMATS = {".gif": "pillow", ".mp4": "imageio_ffmpeg"}


@dataclass
class CellRow:
    """One cell of a store as `results ls` lists it."""

    cell_id: str
    state: str  # done | failed | running | unfinished
    task: str
    algorithm: str
    threshold: float | None
    seed: int | None
    profile: str
    budget: str = ""
    #: finished_at (done), failed_at (failed), else "".
    when: str = ""
    train_seconds: float | None = None
    wall_seconds: float | None = None
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _parse_id(cell_id: str) -> dict[str, Any]:
    """Key fields from a cell id (task__algo__k<threshold>__s<seed>__profile__feedback[...])."""
    parts = cell_id.split("__")
    out: dict[str, Any] = {"task": parts[0], "algorithm": parts[1] if len(parts) > 1 else "", "threshold": None,
                           "seed": None, "profile": parts[4] if len(parts) > 4 else ""}
    try:
        out["threshold"] = float(parts[2][1:])
        out["seed"] = int(parts[3][1:])
    except (IndexError, ValueError):
        pass
    return out


def list_cells(results_dir: Path | str) -> list[CellRow]:
    """Every cell of the store: done (meta), failed (failure record), running (locked) or unfinished
    (a checkpoint directory and nothing else), sorted by cell id."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise BadInput(f"no result store at {results_dir} (run `presa-bench run` or `sweep` first, or pass --results DIR)")
    rows: dict[str, CellRow] = {}
    meta = store.load_meta(results_dir)
    for row in meta.to_dict("records"):
        rows[row["cell_id"]] = CellRow(
            row["cell_id"], "done", row["task"], row["algorithm"], float(row["threshold"]), int(row["seed"]), row["profile"],
            row.get("budget") or "", row.get("finished_at") or "", _number(row.get("train_seconds")),
            _number(row.get("wall_seconds")),
        )
    for failure in store.load_failures(results_dir):
        cell_id = failure["cell_id"]
        if cell_id not in rows:
            rows[cell_id] = CellRow(
                cell_id, "failed", failure.get("task", ""), failure.get("algorithm", ""), failure.get("threshold"),
                failure.get("seed"), failure.get("profile", ""), when=failure.get("failed_at", ""), error=failure.get("error", ""),
            )
    checkpoints = results_dir / store.CHECKPOINTS
    if checkpoints.is_dir():
        for directory in sorted(p for p in checkpoints.iterdir() if p.is_dir()):
            if directory.name not in rows:
                rows[directory.name] = CellRow(directory.name, "running" if store.cell_locked(results_dir, directory.name) else "unfinished",
                                               **_parse_id(directory.name))
    for cell_id, row in rows.items():
        if row.state == "failed" and store.cell_locked(results_dir, cell_id):
            row.state = "running"
    return [rows[k] for k in sorted(rows)]


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def find_cell(results_dir: Path | str, cell: str) -> CellRow:
    """The one cell whose id is ``cell`` or contains it (BadInput naming the candidates otherwise)."""
    cells = list_cells(results_dir)
    exact = [c for c in cells if c.cell_id == cell]
    matches = exact or [c for c in cells if cell in c.cell_id]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        import difflib

        close = difflib.get_close_matches(cell, [c.cell_id for c in cells], n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else " (`presa-bench results ls` lists them)"
        raise BadInput(f"no cell '{cell}' in {results_dir}{hint}")
    shown = ", ".join(c.cell_id for c in matches[:5]) + (", ..." if len(matches) > 5 else "")
    raise BadInput(f"'{cell}' matches {len(matches)} cells in {results_dir}: {shown}; give more of the id")


def cell_record(results_dir: Path | str, cell_id: str) -> dict[str, Any]:
    """What `results show` prints of a cell: meta (config, budget, times...), scores and failure."""
    meta = store.load_meta(results_dir)
    rows = meta[meta["cell_id"] == cell_id].to_dict("records")
    out: dict[str, Any] = {"meta": rows[0] if rows else None, "failure": None, "scores": {}}
    failure = Path(results_dir) / store.FAILURES / f"{cell_id}.json"
    if failure.is_file():
        out["failure"] = json.loads(failure.read_text())
    if rows:
        episodes = store.load_results(results_dir)
        episodes = episodes[episodes["cell_id"] == cell_id]
        for checkpoint, group in episodes.groupby("checkpoint"):
            out["scores"][checkpoint] = {
                "normalized_reward": float(group["normalized_reward"].mean()),
                "normalized_cost": float(group["normalized_cost"].mean()),
                "episodes": int(len(group)),
            }
    return out


def stored_spec(meta: dict[str, Any], labels: Path | None = None) -> Any:
    """The CellSpec that resolves to a stored cell's config (bench.runner.CellSpec)."""
    from bench.feedback import FeedbackSettings
    from bench.runner import FEEDBACK_PREFIX, CellSpec

    config = json.loads(meta["config_json"])
    overrides = dict(config.get("overrides") or {})
    feedback = config.get("feedback") or {}
    if feedback.get("settings"):
        defaults = json.loads(store.to_json(FeedbackSettings().identity()))
        overrides.update({FEEDBACK_PREFIX + k: v for k, v in feedback["settings"].items() if defaults.get(k) != v})
    return CellSpec(
        task=config["task"], algorithm=config["algorithm"], threshold=float(config["threshold"]), seed=int(config["seed"]),
        profile=config["profile"]["name"], dataset=meta["dataset_path"], labels_file=str(labels) if labels else None,
        num_queries=feedback.get("num_queries"), device=config["device"], overrides=tuple(sorted(overrides.items())),
        algorithm_path=config.get("algorithm_class"), budget=tuple(sorted((config.get("budget") or {}).items())),
    )


def stored_policy(results_dir: Path | str, cell_id: str, checkpoint: str = "final", labels: Path | None = None) -> tuple[Any, Any]:
    """(resolved cell, policy) of a stored cell: its learner rebuilt from the same config and data, its
    checkpoint (``<results>/checkpoints/<cell-id>/train.pt``) loaded, its final or best policy taken."""
    from bench import runner, training
    from bench.seeding import seed_everything

    if checkpoint not in ("final", "best"):
        raise BadInput(f"--checkpoint {checkpoint}: choose final or best")
    results_dir = Path(results_dir)
    record = cell_record(results_dir, cell_id)
    if record["meta"] is None:
        raise BadInput(f"cell {cell_id} is not finished in {results_dir}: only a stored (done) cell can be evaluated")
    meta = record["meta"]
    cell = runner.resolve(stored_spec(meta, labels))
    if cell.config_hash != meta["config_hash"]:
        hint = " (its feedback came from a labels file: pass it with --labels FILE)" if (cell.config.get("feedback") or {}).get(
            "labels_hash") is None and json.loads(meta["config_json"]).get("feedback", {}).get("labels_hash") else ""
        raise BenchError(f"cell {cell_id}: its config cannot be rebuilt exactly here{hint}; the dataset, code or "
                         "feedback settings changed since it was stored")
    train_spec, inputs, _ = runner._prepare_training(cell, results_dir, cell.config["device"], False, None)
    state = training.load_checkpoint(train_spec)
    if state is None:
        raise BenchError(f"cell {cell_id} has no checkpoint in {train_spec.checkpoint_dir} (deleted?); rerun it with "
                         "`presa-bench run ... --force` to evaluate it again")
    seed_everything(cell.key.seed)  # as bench.training.train_many before it builds a learner
    learner = cell.algorithm_cls.learner([train_spec], [inputs])
    learner.load_state_dicts([state["learner"]])
    if checkpoint == "best":
        if state.get("best_state") is None:
            raise BadInput(f"cell {cell_id} has no best checkpoint (no online evaluation ran); use --checkpoint final")
        return cell, learner.policy_from_state(0, state["best_state"])
    return cell, learner.policies()[0]


def check_video_path(path: Path) -> None:
    """BadInput for a video format this machine cannot write, before any work starts."""
    import importlib.util

    suffix = path.suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise BadInput(f"--video {path}: use a .gif or .mp4 file name")
    plugin = VIDEO_FORMATS[suffix]
    if importlib.util.find_spec("PIL" if plugin == "pillow" else plugin) is None:
        raise BadInput(f"--video {path}: writing {suffix} needs the Python package {plugin.replace('_', '-')}, which is not "
                       "installed here; write a .gif instead (or pip install it)")


def render_episode(policy: Any, task: Any, seed: int, every: int = 1) -> tuple[list[np.ndarray], float, float]:
    """(frames, return, cost) of one deterministic episode in the real simulator, a frame every ``every``
    steps and one at the end (rgb_array): bench.evaluation's own rollout of episode 0 of base ``seed``."""
    from bench.evaluation import evaluate_policy

    frames: list[np.ndarray] = []

    def film(episode: int, step: int, env: Any, done: bool) -> None:
        if done or step % every == 0:
            frames.append(_frame(env))

    result = evaluate_policy(policy, task, task.middle_threshold, episodes=1, seed=seed, num_envs=1, watch=film)
    return frames, float(result.returns[0]), float(result.costs[0])


def _frame(env: Any) -> np.ndarray:
    """An RGB frame: bullet-safety-gym renders on request (render(mode=...)), gymnasium envs made with
    render_mode="rgb_array" by render()."""
    base = env.unwrapped
    try:
        frame = base.render(mode="rgb_array")
    except TypeError:
        frame = env.render()
    if frame is None or np.asarray(frame).ndim != 3:
        raise BenchError(f"{type(base).__name__} rendered no RGB frame; video is supported for the Bullet tasks")
    return np.asarray(frame, np.uint8)


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    import imageio.v2 as imageio

    check_video_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        imageio.mimsave(path, frames, duration=1000.0 / fps, loop=0)
    else:
        imageio.mimsave(path, frames, fps=fps)
