"""The one training loop: every algorithm's `Learner` is trained here.

The loop owns what every method needs around its gradient steps, written once:

- logging: interval means of the learner's per-member metrics every ``profile.log_every`` steps
  (and at a learner's phase ends and the last step) into each member's curve, and to ``spec.log``
  with the interval's steps/s (the live log only: stored curves stay deterministic); each online
  evaluation goes to ``spec.log`` too, with ``"source": "eval"``;
- online evaluation every ``profile.eval_every`` steps and at the last step, with bench.evaluation
  on seeds ``DURING_TRAINING_SEED_OFFSET + seed`` (disjoint from the final evaluation's), with the
  global RNG states saved and restored around it, so that evaluating never changes training numbers;
- best-policy selection by the TraC/OSRL rule (`selection_key`);
- atomic per-cell checkpoints (``<checkpoint_dir>/train.pt``) every ``profile.checkpoint_every``
  steps and at the end, holding the learner's member state, the loop's own state (step, curve, open
  log interval, best policy) and the global RNG states, and resume from them: a killed run resumes
  to exactly the numbers of an uninterrupted one;
- honest throughput: ``TrainOutput.steps_this_process`` and ``train_seconds`` count only this
  process's steps (online evaluation and checkpoint writes excluded).

Control runs one way: bench.runner -> train_many -> Algorithm.learner -> Learner.step.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from bench.errors import BadInput, BenchError
from bench.interfaces import Algorithm, Learner, Policy, TrainInputs, TrainOutput, TrainSpec
from bench.io import atomic_torch_save, load_torch_file
from bench.seeding import global_rng_state, seed_everything, set_global_rng_state

__all__ = ["DURING_TRAINING_SEED_OFFSET", "Learner", "evaluate_online", "run", "selection_key", "train", "train_many"]

#: Online evaluations during training use seeds disjoint from the final evaluation's (base = cell
#: seed), so that selecting the "best" checkpoint never sees the episodes it is scored on.
DURING_TRAINING_SEED_OFFSET = 1_000_000
CHECKPOINT_NAME = "train.pt"
CHECKPOINT_VERSION = 1


def train(algorithm: type[Algorithm], spec: TrainSpec, inputs: TrainInputs) -> TrainOutput:
    """Train one cell (resuming from spec.checkpoint_dir when a checkpoint is there)."""
    return train_many(algorithm, [spec], [inputs])[0]


def train_many(
    algorithm: type[Algorithm], specs: Sequence[TrainSpec], inputs_list: Sequence[TrainInputs], ensemble_size: int | None = None
) -> list[TrainOutput]:
    """Train cells that differ only in seed / threshold; one output per spec, in order.

    Cells are grouped by the step their checkpoint holds (a fresh cell: none), and each group is cut
    into learners of at most ``algorithm.cells_per_learner(specs, ensemble_size)`` cells. The global
    RNGs are seeded with a learner's first cell's seed before it is built, as for a single cell.
    """
    if len(specs) != len(inputs_list) or not specs:
        raise BadInput(f"{algorithm.name}: give one TrainInputs per TrainSpec (and at least one)")
    saved = [load_checkpoint(spec) for spec in specs]
    size = int(algorithm.cells_per_learner(specs, ensemble_size))
    if size < 1:
        raise BadInput(f"{algorithm.name}: ensemble_size must be >= 1, got {size}")
    groups: dict[int, list[int]] = {}
    for i, state in enumerate(saved):
        groups.setdefault(-1 if state is None else int(state["step"]), []).append(i)
    outputs: list[TrainOutput | None] = [None] * len(specs)
    for group in groups.values():
        for begin in range(0, len(group), size):
            members = group[begin : begin + size]
            seed_everything(specs[members[0]].seed)
            learner = algorithm.learner([specs[i] for i in members], [inputs_list[i] for i in members])
            if learner.members != len(members):
                raise BenchError(f"{algorithm.__name__}.learner built {learner.members} members for {len(members)} cells")
            for i, out in zip(members, run(learner, [specs[i] for i in members], [saved[i] for i in members])):
                outputs[i] = out
    return outputs  # type: ignore[return-value]


def selection_key(metrics: Mapping[str, float]) -> tuple[float, float]:
    """TraC/OSRL best-checkpoint rule, lower is better: lowest cost until the normalized cost is
    <= 1, then highest reward."""
    return (max(float(metrics["normalized_cost"]), 1.0), -float(metrics["normalized_reward"]))


def evaluate_online(policy: Policy, spec: TrainSpec) -> dict[str, float]:
    """The online evaluation of a policy during training: spec.profile.eval_episodes_during
    episodes on seeds disjoint from the final evaluation's; the global RNGs are left as they were."""
    from bench.evaluation import EVAL_NUM_ENVS, evaluate_policy

    saved = global_rng_state()
    try:
        result = evaluate_policy(
            policy, spec.task, spec.threshold, episodes=spec.profile.eval_episodes_during,
            seed=DURING_TRAINING_SEED_OFFSET + spec.seed, num_envs=EVAL_NUM_ENVS,
        )
    finally:
        set_global_rng_state(saved)
    return result.summary()


def checkpoint_path(spec: TrainSpec) -> Path | None:
    return Path(spec.checkpoint_dir) / CHECKPOINT_NAME if spec.checkpoint_dir is not None else None


def load_checkpoint(spec: TrainSpec) -> dict[str, Any] | None:
    """The cell's checkpoint, or None; a checkpoint of another seed or version is an error."""
    path = checkpoint_path(spec)
    if path is None or not path.is_file():
        return None
    try:
        state = load_torch_file(path)  # weights_only: a checkpoint from elsewhere never runs code
    except BadInput:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise BenchError(f"checkpoint {path} is unreadable ({exc}); delete it to start the run afresh") from exc
    if state.get("version") != CHECKPOINT_VERSION or state.get("seed") != spec.seed:
        raise BenchError(
            f"checkpoint {path} belongs to another seed or checkpoint version; delete it (or use another "
            "checkpoint directory) to start afresh"
        )
    return state


class _Interval:
    """Running sums of the metrics of the open log interval, per member (tensors stay on their device)."""

    def __init__(self, sums: dict[str, Any] | None = None, counts: dict[str, int] | None = None) -> None:
        self.sums: dict[str, Any] = sums or {}
        self.counts: dict[str, int] = counts or {}
        self._restored = bool(self.sums)

    def add(self, metrics: Mapping[str, Any]) -> None:
        if self._restored:  # a resumed interval's tensors go to the device of the new metrics
            self._restored = False
            for key, value in metrics.items():
                if hasattr(value, "detach") and hasattr(self.sums.get(key), "detach"):
                    self.sums[key] = self.sums[key].to(value.device)
        sums, counts = self.sums, self.counts
        for key, value in metrics.items():
            if hasattr(value, "detach"):
                value = value.detach()
                sums[key] = sums[key] + value if key in sums else value.clone()
            else:
                value = np.array(value, dtype=np.float64, ndmin=1)
                sums[key] = sums[key] + value if key in sums else value
            counts[key] = counts.get(key, 0) + 1

    def pop_means(self) -> dict[str, np.ndarray]:
        means = {}
        for key, total in self.sums.items():
            mean = total / self.counts[key]
            means[key] = mean.cpu().numpy() if hasattr(mean, "cpu") else mean
        self.sums, self.counts, self._restored = {}, {}, False
        return means

    def member(self, e: int) -> dict[str, Any]:
        return {k: (v[e].cpu() if hasattr(v, "cpu") else v[e]) for k, v in self.sums.items()}

    @classmethod
    def stacked(cls, members: Sequence[dict[str, Any]], counts: dict[str, int]) -> "_Interval":
        import torch

        sums = {
            k: (torch.stack([m[k] for m in members]) if isinstance(members[0][k], torch.Tensor) else np.stack([m[k] for m in members]))
            for k in members[0]
        }
        return cls(sums, dict(counts))


def run(learner: Learner, specs: Sequence[TrainSpec], saved: Sequence[dict[str, Any] | None] | None = None) -> list[TrainOutput]:
    """Train ``learner`` (member e = specs[e]) to ``learner.total_steps``, resuming from ``saved``
    (the members' checkpoints, all of one step, or all None); one TrainOutput per member."""
    members = learner.members
    profile = specs[0].profile
    total = int(learner.total_steps)
    step = 0
    curves: list[list[dict[str, float]]] = [[] for _ in range(members)]
    best_keys: list[tuple[float, float]] = [(math.inf, math.inf)] * members
    best_states: list[Any] = [None] * members
    interval = _Interval()
    saved = list(saved) if saved is not None else [None] * members
    if saved[0] is not None:
        if any(s is None or s["step"] != saved[0]["step"] for s in saved):
            raise BenchError("the members of one learner must resume from checkpoints of one step")
        learner.load_state_dicts([s["learner"] for s in saved])  # type: ignore[index]
        step = int(saved[0]["step"])
        curves = [[dict(r) for r in s["curve"]] for s in saved]  # type: ignore[index]
        best_keys = [tuple(s["best_key"]) for s in saved]  # type: ignore[index,misc]
        best_states = [s["best_state"] for s in saved]  # type: ignore[index]
        interval = _Interval.stacked([s["interval"] for s in saved], saved[0]["interval_counts"])  # type: ignore[index]
        set_global_rng_state(saved[0]["rng"])
    resumed_from = step
    phase_ends = set(learner.phase_ends)
    paused = 0.0  # seconds of online evaluation and checkpoint writes: not training
    started = time.perf_counter()
    interval_started, interval_steps = started, 0

    def flush() -> None:
        nonlocal interval_started, interval_steps
        if not interval.counts:
            return
        means = interval.pop_means()
        now = time.perf_counter()
        steps_per_second = interval_steps / max(now - interval_started, 1e-9)
        for e, spec in enumerate(specs):
            row = {"step": step, "source": "train", **learner.log_row(e, {k: float(v[e]) for k, v in means.items()})}
            curves[e].append(row)
            if spec.log is not None:
                # throughput goes to the live log only: the stored curve stays deterministic
                live = {k: v for k, v in row.items() if k != "source"}
                spec.log(step, {**live, "steps_per_second": steps_per_second})
        interval_started, interval_steps = now, 0

    def evaluate() -> None:
        for e, (spec, policy) in enumerate(zip(specs, learner.policies())):
            metrics = evaluate_online(policy, spec)
            curves[e].append({"step": step, "source": "eval", **metrics})
            if spec.log is not None:  # the live log sees every curve the store keeps (bench.live)
                spec.log(step, {"source": "eval", **metrics})
            key = selection_key(metrics)
            if key < best_keys[e]:
                best_keys[e], best_states[e] = key, policy.state_dict()  # type: ignore[attr-defined]

    def save() -> None:
        paths = [checkpoint_path(spec) for spec in specs]
        if all(path is None for path in paths):
            return
        states = learner.state_dicts()
        rng = global_rng_state()
        for e, (spec, path) in enumerate(zip(specs, paths)):
            if path is None:
                continue
            atomic_torch_save(
                {
                    "version": CHECKPOINT_VERSION,
                    "seed": spec.seed,
                    "threshold": float(spec.threshold),
                    "step": step,
                    "learner": states[e],
                    "curve": curves[e],
                    "interval": interval.member(e),
                    "interval_counts": dict(interval.counts),
                    "best_key": list(best_keys[e]),
                    "best_state": best_states[e],
                    "rng": rng,
                },
                path,
            )

    while step < total:
        if step in phase_ends:
            flush()
        interval.add(learner.step(step))
        step += 1
        interval_steps += 1
        if step % profile.log_every == 0 or step == total:
            flush()
        due_eval = bool(profile.eval_every) and (step % profile.eval_every == 0 or step == total)
        due_save = step % profile.checkpoint_every == 0 or step == total
        if due_eval or due_save:
            pause_started = time.perf_counter()
            if due_eval:
                evaluate()
            if due_save:
                save()
            pause = time.perf_counter() - pause_started
            paused += pause
            interval_started += pause
    seconds = time.perf_counter() - started - paused
    policies = learner.policies()
    return [
        TrainOutput(
            policy=policies[e],
            best_policy=learner.policy_from_state(e, best_states[e]) if best_states[e] is not None else None,
            curve=[dict(r) for r in curves[e]],
            info=learner.info(e, curves[e]),
            steps=step,
            train_seconds=seconds,
            steps_this_process=step - resumed_from,
        )
        for e in range(members)
    ]
