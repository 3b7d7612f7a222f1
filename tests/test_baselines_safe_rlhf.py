"""safe-rlhf: loss values by hand, calibration, end to end on real BallRun data with the scripted
teacher's feedback (no ground truth handed to the learner), phase checkpoint, stage-2 choice, bad input;
and a baseline of each kind (safe-rlhf, bc-safe) run through the harness by its registry name."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import bench  # noqa: F401
from baselines.safe_rlhf import SafeRLHF, preference_loss, safety_logit
from bench.data import Dataset
from bench.errors import BadInput, FeedbackError
from bench.evaluation import evaluate_policy
from bench.feedback import FeedbackSettings, FeedbackView, make_feedback
from bench.interfaces import TrainInputs, TrainSpec
from bench.profiles import Profile

torch.set_num_threads(1)
THRESHOLD = 20.0
TINY = {"hidden_sizes": [32, 32], "model_steps": 150, "model_batch_size": 64, "model_lr": 3e-3,
        "rl.update_steps": 6, "rl.batch_size": 32, "rl.a_hidden_sizes": [32, 32], "rl.c_hidden_sizes": [32, 32]}
#: BCQ-Lag (the default stage 2) also has a VAE.
TINY_VAE = {"rl.vae_hidden_sizes": 32}


@pytest.fixture(scope="module")
def feedback(sim_dataset: Dataset) -> FeedbackView:
    return make_feedback(sim_dataset, THRESHOLD, seed=0, settings=FeedbackSettings(num_queries=400)).view()


def spec_for(ds: Dataset, tmp: Path | None, vae: bool = True, **overrides: Any) -> TrainSpec:
    profile = Profile("tiny", 20, 0.3, 2, 0, 2, 3, 1000, 400)
    return TrainSpec(task=ds.task, threshold=THRESHOLD, seed=1, profile=profile, checkpoint_dir=tmp,
                     overrides={**TINY, **(TINY_VAE if vae else {}), **overrides})


def test_preference_loss_by_hand_and_sign() -> None:
    r0 = torch.tensor([1.0], requires_grad=True)
    r1 = torch.tensor([2.0], requires_grad=True)
    loss = preference_loss(r0, r1, torch.tensor([1.0]))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)))
    loss.backward()
    assert r1.grad.item() < 0 < r0.grad.item()  # descent raises the preferred segment's return
    tie = preference_loss(torch.tensor([0.5]), torch.tensor([0.5]), torch.tensor([0.5]))
    assert tie.item() == pytest.approx(math.log(2.0))


def test_safety_logit_flips_at_the_segment_budget() -> None:
    budget = 20.0 * 20 / 100  # kappa * H / T for BallRun at kappa 20
    logits = safety_logit(torch.tensor([4.0, 3.0, 6.0]), budget, 0.5)
    assert logits.tolist() == pytest.approx([0.0, 2.0, -4.0])


def test_end_to_end_learns_from_feedback_only(sim_dataset: Dataset, feedback: FeedbackView, tmp_path: Path) -> None:
    inputs = TrainInputs(data=sim_dataset.learner_view(), feedback=feedback, dataset=None)
    out = SafeRLHF().train(spec_for(sim_dataset, tmp_path), inputs)
    info = out.info
    assert info["held_out_pairs"] == 40 and info["held_out_labels"] == 40
    assert info["reward_model_accuracy"] > 0.75 and info["cost_model_accuracy"] > 0.75
    # the relabelled episode cost is on the scale of the true one (what the threshold is compared to)
    true_mean = float(sim_dataset.episode_costs.mean())
    assert 0.5 * true_mean < info["relabelled_mean_episode_cost"] < 1.5 * true_mean
    assert info["offline_rl"] == "bcq-lag" and out.steps == 6
    summary = evaluate_policy(out.policy, sim_dataset.task, THRESHOLD, episodes=2, seed=0).summary()
    assert np.isfinite(summary["normalized_reward"])
    assert (tmp_path / "safe_rlhf_models.pt").is_file() and (tmp_path / "safe_rlhf_rl.pt").is_file()


def test_rerun_loads_the_models_and_matches(sim_dataset: Dataset, feedback: FeedbackView, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = TrainInputs(data=sim_dataset.learner_view(), feedback=feedback)
    spec = spec_for(sim_dataset, tmp_path, model_steps=40, **{"rl.update_steps": 4})
    first = SafeRLHF().train(spec, inputs)
    (tmp_path / "safe_rlhf_rl.pt").unlink()  # stage 2 starts over; stage 1 must come from its checkpoint

    def refit(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the reward/cost models were trained again")

    monkeypatch.setattr(SafeRLHF, "_fit", staticmethod(refit))
    second = SafeRLHF().train(spec, inputs)
    obs = sim_dataset.observations[:30]
    np.testing.assert_array_equal(first.policy.act(obs), second.policy.act(obs))
    assert second.info["reward_model_accuracy"] == first.info["reward_model_accuracy"]


def test_stage_two_is_selectable(sim_dataset: Dataset, feedback: FeedbackView) -> None:
    spec = spec_for(sim_dataset, None, vae=False, model_steps=10, offline_rl="coptidice", **{"rl.update_steps": 3})
    out = SafeRLHF().train(spec, TrainInputs(data=sim_dataset.learner_view(), feedback=feedback))
    assert out.info["offline_rl"] == "coptidice" and out.steps == 3
    # the budget keys every baseline takes are stage 2's
    budget = spec_for(sim_dataset, None, update_steps=7)
    assert SafeRLHF.config_for(budget).rl["update_steps"] == 6  # rl.update_steps (TINY) wins
    del budget.overrides["rl.update_steps"]
    assert SafeRLHF.config_for(budget).rl["update_steps"] == 7


def test_bad_input(sim_dataset: Dataset, feedback: FeedbackView) -> None:
    with pytest.raises(BadInput, match="offline_rl must be one of"):
        SafeRLHF.config_for(spec_for(sim_dataset, None, offline_rl="sac"))
    with pytest.raises(BadInput, match="unknown setting 'criticlr'"):
        SafeRLHF.config_for(spec_for(sim_dataset, None, **{"rl.criticlr": 1.0}))
    with pytest.raises(FeedbackError, match="got no feedback"):
        SafeRLHF().train(spec_for(sim_dataset, None), TrainInputs(data=sim_dataset.learner_view()))


@pytest.mark.parametrize("algo", ["bc-safe", "safe-rlhf"])
def test_runs_through_the_harness(algo: str, sim_dataset_path: Path, tmp_path: Path) -> None:
    """Registry name -> runner -> feedback (safe-rlhf) / ground truth (bc-safe) -> stored cell with our info."""
    from bench import algorithms, runner

    assert algorithms.get_algorithm(algo).name == algo
    sets = {"update_steps": 4}
    if algo == "safe-rlhf":
        sets.update({"model_steps": 20, "hidden_sizes": [16], "rl.batch_size": 16, "rl.a_hidden_sizes": [16],
                     "rl.c_hidden_sizes": [16], "rl.vae_hidden_sizes": 16})
    else:
        sets.update({"batch_size": 16, "a_hidden_sizes": [16]})
    spec = runner.CellSpec(task="BallRun", algorithm=algo, threshold=THRESHOLD, profile="smoke",
                           dataset=str(sim_dataset_path), num_queries=100, device="cpu",
                           overrides=tuple(sorted(sets.items())))
    outcome = runner.run_cell(spec, tmp_path)
    assert outcome.status == "done" and np.isfinite(outcome.summary["final"]["normalized_cost"])
    if algo == "safe-rlhf":
        import json

        import pandas as pd

        info = json.loads(pd.read_parquet(outcome.path).iloc[0].info_json)
        assert 0.0 <= info["reward_model_accuracy"] <= 1.0 and info["offline_rl"] == "bcq-lag"
