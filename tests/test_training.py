"""bench.training's one loop, driven with a tiny real Learner: resume is bit-exact, online evaluation
uses seeds disjoint from the final ones and never perturbs training, the best policy is the one the
TraC/OSRL rule picks, and throughput counts only this process's steps."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, Sequence

import numpy as np
import pytest
import torch

import bench.evaluation
from bench import training
from bench.evaluation import episode_seeds
from bench.interfaces import Algorithm, Learner, TrainInputs, TrainSpec
from bench.profiles import get_profile


class WalkPolicy:
    def __init__(self, x: float) -> None:
        self.x = float(x)

    def act(self, observations: np.ndarray) -> np.ndarray:
        return np.full((len(observations), 1), np.tanh(self.x), np.float32)

    def state_dict(self) -> dict[str, float]:
        return {"x": self.x}


class Walk(Learner):
    """One random walk per member; a step draws from the member's own generator AND numpy's global
    RNG (as OSRL's samplers do), and logs a device-side tensor and a host float."""

    def __init__(self, seeds: Sequence[int], total_steps: int, drift: float = 0.0) -> None:
        self.members, self.total_steps, self.drift = len(seeds), total_steps, drift
        self.rngs = [np.random.default_rng(s) for s in seeds]
        self.x = np.zeros(self.members)

    def step(self, step: int) -> dict[str, Any]:
        noise = np.array([rng.normal() for rng in self.rngs]) + np.random.normal(size=self.members)
        self.x = self.x + noise + self.drift
        return {"x": torch.tensor(self.x, dtype=torch.float32), "noise": noise}

    def policies(self) -> list[WalkPolicy]:
        return [WalkPolicy(x) for x in self.x]

    def policy_from_state(self, member: int, state: Any) -> WalkPolicy:
        return WalkPolicy(state["x"])

    def state_dicts(self) -> list[dict[str, Any]]:
        return [{"x": float(self.x[e]), "rng": self.rngs[e].bit_generator.state} for e in range(self.members)]

    def load_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        self.x = np.array([s["x"] for s in states])
        for rng, s in zip(self.rngs, states):
            rng.bit_generator.state = s["rng"]


class WalkAlgorithm(Algorithm):
    name: ClassVar[str] = "walk"
    needs_feedback: ClassVar[bool] = False

    @classmethod
    def config_for(cls, spec: TrainSpec) -> dict[str, Any]:
        return dict(spec.overrides)

    @classmethod
    def learner(cls, specs: Sequence[TrainSpec], inputs_list: Sequence[TrainInputs]) -> Walk:
        return Walk([s.seed for s in specs], specs[0].profile.train_steps, specs[0].overrides.get("drift", 0.0))

    @classmethod
    def cells_per_learner(cls, specs: Sequence[TrainSpec], requested: int | None) -> int:
        return requested or 1


def make_spec(seed: int = 0, steps: int = 30, eval_every: int = 0, checkpoint_dir: Path | None = None, **kw: Any) -> TrainSpec:
    profile = dataclasses.replace(get_profile("smoke"), train_steps=steps, log_every=5, eval_every=eval_every, checkpoint_every=10)
    return TrainSpec(task=None, threshold=20.0, seed=seed, profile=profile, checkpoint_dir=checkpoint_dir, **kw)  # type: ignore[arg-type]


NO_DATA = TrainInputs(data=None)  # type: ignore[arg-type]


@pytest.fixture
def evaluations(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """bench.evaluation.evaluate_policy replaced by a scripted one that records its calls, consumes
    and reseeds numpy's global RNG (as the real one does) and scores a walk by its position."""
    calls: list[dict[str, Any]] = []

    def scripted(policy: WalkPolicy, task: Any, threshold: float, episodes: int, seed: int, num_envs: int) -> Any:
        calls.append({"x": policy.x, "seed": seed, "episodes": episodes})
        np.random.seed(seed)
        np.random.random(100)
        score = {"normalized_reward": float(np.tanh(policy.x)), "normalized_cost": float(abs(policy.x) / 3)}
        return SimpleNamespace(summary=lambda: score)

    monkeypatch.setattr(bench.evaluation, "evaluate_policy", scripted)
    return calls


def test_killed_run_resumes_to_identical_numbers(tmp_path: Path, evaluations: list[dict[str, Any]]) -> None:
    whole = training.train(WalkAlgorithm, make_spec(eval_every=10, checkpoint_dir=tmp_path / "whole"), NO_DATA)

    def kill(step: int, metrics: dict[str, float]) -> None:
        if step == 25:  # after the checkpoint at step 20, inside an open log interval
            raise KeyboardInterrupt

    spec = make_spec(eval_every=10, checkpoint_dir=tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        training.train(WalkAlgorithm, dataclasses.replace(spec, log=kill), NO_DATA)
    resumed = training.train(WalkAlgorithm, spec, NO_DATA)
    assert resumed.curve == whole.curve and resumed.policy.x == whole.policy.x
    assert resumed.best_policy.state_dict() == whole.best_policy.state_dict()
    assert (whole.steps, whole.steps_this_process) == (30, 30)
    assert (resumed.steps, resumed.steps_this_process) == (30, 10), "a resumed run counts only its own steps"
    assert resumed.train_seconds > 0


def test_batched_members_resume_to_identical_numbers(tmp_path: Path) -> None:
    specs = [make_spec(seed=s, checkpoint_dir=tmp_path / str(s)) for s in (1, 2)]
    whole = training.train_many(WalkAlgorithm, [dataclasses.replace(s, checkpoint_dir=None) for s in specs], [NO_DATA] * 2, 2)

    def kill(step: int, metrics: dict[str, float]) -> None:
        if step == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train_many(WalkAlgorithm, [dataclasses.replace(s, log=kill) for s in specs], [NO_DATA] * 2, ensemble_size=2)
    together = training.train_many(WalkAlgorithm, specs, [NO_DATA] * 2, ensemble_size=2)
    for a, b in zip(whole, together):
        assert a.policy.x == b.policy.x and a.curve == b.curve and b.steps_this_process == 20
    assert whole[0].policy.x != whole[1].policy.x


def test_online_evaluation_seeds_are_disjoint_from_the_final_ones(evaluations: list[dict[str, Any]]) -> None:
    spec = make_spec(seed=3, eval_every=10)
    training.train(WalkAlgorithm, spec, NO_DATA)
    assert [c["seed"] for c in evaluations] == [training.DURING_TRAINING_SEED_OFFSET + 3] * 3
    assert {c["episodes"] for c in evaluations} == {spec.profile.eval_episodes_during}
    during = set(episode_seeds(evaluations[0]["seed"], spec.profile.eval_episodes_during))
    final = set(episode_seeds(spec.seed, spec.profile.eval_episodes))  # what bench.runner evaluates on
    assert during and final and not during & final


def test_evaluation_never_changes_the_training_numbers(evaluations: list[dict[str, Any]]) -> None:
    np.random.seed(0)  # the loop seeds before building the learner anyway
    quiet = training.train(WalkAlgorithm, make_spec(eval_every=0), NO_DATA)
    evaluated = training.train(WalkAlgorithm, make_spec(eval_every=5), NO_DATA)
    assert len(evaluations) == 6
    assert evaluated.policy.x == quiet.policy.x
    assert [r for r in evaluated.curve if "x" in r] == quiet.curve


def test_best_policy_follows_the_trac_rule(evaluations: list[dict[str, Any]]) -> None:
    """Cost x/3 and reward tanh(x): lowest cost until the normalized cost is <= 1, then highest reward."""
    out = training.train(WalkAlgorithm, make_spec(steps=40, eval_every=5, overrides={"drift": 1.0}), NO_DATA)
    scored = [(row["step"], row) for row in out.curve if "normalized_cost" in row]
    assert len(scored) == 8 and out.best_policy is not None
    # the store files each row by its source: evaluations "eval", logged training means "train"
    assert all(r["source"] == ("eval" if "normalized_cost" in r else "train") for r in out.curve)
    keys = {step: (max(r["normalized_cost"], 1.0), -r["normalized_reward"]) for step, r in scored}
    best_step = min(keys, key=lambda s: keys[s])
    best_x = next(c["x"] for c, (step, _) in zip(evaluations, scored) if step == best_step)
    assert out.best_policy.state_dict() == {"x": best_x}
    assert training.selection_key({"normalized_cost": 0.4, "normalized_reward": 0.2}) < training.selection_key(
        {"normalized_cost": 0.9, "normalized_reward": 0.1}
    ) < training.selection_key({"normalized_cost": 1.5, "normalized_reward": 0.9})


def test_logs_are_interval_means_and_live_throughput_stays_out_of_the_curve() -> None:
    logged: list[tuple[int, dict[str, float]]] = []
    out = training.train(WalkAlgorithm, make_spec(steps=12, log=lambda s, m: logged.append((s, m))), NO_DATA)
    assert [row["step"] for row in out.curve] == [5, 10, 12]
    np.random.seed(0)
    walk = Walk([0], 12)
    noise = [walk.step(i)["noise"][0] for i in range(12)]
    assert out.curve[2]["noise"] == pytest.approx(np.mean(noise[10:]), rel=1e-12)
    assert all("steps_per_second" in m for _, m in logged) and all("steps_per_second" not in r for r in out.curve)


def test_a_checkpoint_of_another_seed_is_refused(tmp_path: Path) -> None:
    training.train(WalkAlgorithm, make_spec(seed=1, checkpoint_dir=tmp_path), NO_DATA)
    with pytest.raises(training.BenchError, match="another seed"):
        training.train(WalkAlgorithm, make_spec(seed=2, checkpoint_dir=tmp_path), NO_DATA)
