"""safe-rlhf: losses by hand; the cost model's calibration learned from the labels alone (a threshold it
is never told, identical models whatever the run's threshold); training on FeedbackView.split's train
part (the held-out part only scores); relabelled rewards that keep their sign; end to end on real
BallRun data with the scripted teacher's feedback (no ground truth handed to the learner), phase
checkpoint, stage-2 choice, bad input; and a baseline of each kind (safe-rlhf, bc-safe) run through the
harness by its registry name."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import bench  # noqa: F401
from baselines import safe_rlhf
from baselines.safe_rlhf import CostCalibration, SafeRLHF, preference_loss, relabel_rewards, safety_logit
from bench import training
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
    return make_feedback(sim_dataset, THRESHOLD, seed=0, settings=FeedbackSettings(num_queries=2000)).view()


def spec_for(ds: Dataset, tmp: Path | None, vae: bool = True, threshold: float = THRESHOLD, **overrides: Any) -> TrainSpec:
    profile = Profile("tiny", 20, 0.3, 2, 0, 2, 3, 1000, 400)
    return TrainSpec(task=ds.task, threshold=threshold, seed=1, profile=profile, checkpoint_dir=tmp,
                     overrides={**TINY, **(TINY_VAE if vae else {}), **overrides})


def held_out_indices(feedback: FeedbackView, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which pairs / labels FeedbackView.split holds out: split the view with each label replaced by its index."""
    p, s = feedback.num_pairs, feedback.num_safety_labels
    index_view = replace(feedback, pair_label=np.arange(p, dtype=np.float32), safety_label=np.arange(s, dtype=np.float32))
    _, held = index_view.split(fraction, seed)
    return held.pair_label.astype(np.int64), held.safety_label.astype(np.int64)


def test_preference_loss_by_hand_and_sign() -> None:
    r0 = torch.tensor([1.0], requires_grad=True)
    r1 = torch.tensor([2.0], requires_grad=True)
    loss = preference_loss(r0, r1, torch.tensor([1.0]))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)))
    loss.backward()
    assert r1.grad.item() < 0 < r0.grad.item()  # descent raises the preferred segment's return
    tie = preference_loss(torch.tensor([0.5]), torch.tensor([0.5]), torch.tensor([0.5]))
    assert tie.item() == pytest.approx(math.log(2.0))


def test_safety_logit_and_the_calibration_by_hand() -> None:
    logits = safety_logit(torch.tensor([4.0, 3.0, 6.0]), 4.0, 2.0)
    assert logits.tolist() == pytest.approx([0.0, 2.0, -4.0])
    calibration = CostCalibration(segment_length=20, device="cpu")  # starts at b = H / 2, k = 1
    assert calibration.budget().item() == pytest.approx(10.0) and calibration.slope().item() == pytest.approx(1.0)
    assert calibration.logit(torch.tensor([7.0])).item() == pytest.approx(3.0)
    with torch.no_grad():
        calibration.beta.fill_(50.0)  # the budget stays inside (0, H], the range of H costs in (0, 1)
    assert calibration.budget().item() == pytest.approx(20.0)


@pytest.mark.parametrize("hidden_threshold", [10.0, 40.0])
def test_cost_model_learns_a_threshold_it_is_never_told(sim_dataset: Dataset, hidden_threshold: float) -> None:
    """Labels from the teacher's rule at a kappa the learner never sees (its spec says 999, which would
    call every segment safe if it calibrated at kappa H / T): the learned budget separates held-out
    safe and unsafe segments, and the derived episode limit b T / H separates the relabelled episodes
    the way the hidden kappa separates the true ones."""
    fb = make_feedback(sim_dataset, hidden_threshold, seed=0, settings=FeedbackSettings(num_queries=2000)).view()
    assert 0.3 < fb.safety_label.mean() < 0.7  # both classes: accuracy is not the majority share
    spec = spec_for(sim_dataset, None, threshold=999.0)
    stage1 = SafeRLHF().stage_one(spec, TrainInputs(data=sim_dataset.learner_view(), feedback=fb))
    assert stage1.info["cost_model_accuracy"] >= 0.85
    _, costs = SafeRLHF._relabel(stage1.reward_model, stage1.cost_model, sim_dataset.learner_view(), "cpu")
    relabelled = np.add.reduceat(costs.astype(np.float64), sim_dataset.episodes.starts)
    limit = stage1.episode_cost_limit(sim_dataset.task.episode_length)
    assert limit == pytest.approx(stage1.info["stage2_cost_limit"])
    assert np.mean((relabelled <= limit) == (sim_dataset.episode_costs <= hidden_threshold)) >= 0.8


def test_stage_one_reads_no_threshold(sim_dataset: Dataset, feedback: FeedbackView) -> None:
    """Two runs that differ only in the threshold (and one without the teacher's budget in the
    feedback's provenance) fit the same models and the same stage-2 cost limit."""
    fits = []
    for threshold, fb in [(5.0, feedback), (50.0, replace(feedback, provenance={}))]:
        spec = spec_for(sim_dataset, None, threshold=threshold, model_steps=40)
        fits.append(SafeRLHF().stage_one(spec, TrainInputs(data=sim_dataset.learner_view(), feedback=fb)))
    a, b = fits
    for ma, mb in [(a.reward_model, b.reward_model), (a.cost_model, b.cost_model)]:
        for (name, ta), tb in zip(ma.net.state_dict().items(), mb.net.state_dict().values()):
            assert torch.equal(ta, tb), name
    assert a.calibration.state_dict()["beta"] == b.calibration.state_dict()["beta"]
    assert a.info == b.info and a.episode_cost_limit(100) == b.episode_cost_limit(100)


def test_trains_on_the_shared_split_and_scores_on_its_held_out_part(sim_dataset: Dataset, feedback: FeedbackView) -> None:
    """The held-out part is FeedbackView.split(holdout_fraction, seed)'s (PreSa's): flipping exactly its
    labels leaves the models unchanged and turns each accuracy a into 1 - a."""
    spec = spec_for(sim_dataset, None, model_steps=60)
    pairs, labels = held_out_indices(feedback, 0.1, spec.seed)
    flipped_pairs, flipped_labels = feedback.pair_label.copy(), feedback.safety_label.copy()
    flipped_pairs[pairs] = 1.0 - flipped_pairs[pairs]  # ties stay ties
    flipped_labels[labels] = 1.0 - flipped_labels[labels]
    flipped = replace(feedback, pair_label=flipped_pairs, safety_label=flipped_labels)
    fits = [SafeRLHF().stage_one(spec, TrainInputs(data=sim_dataset.learner_view(), feedback=fb)) for fb in (feedback, flipped)]
    a, b = fits
    for ta, tb in zip(a.cost_model.net.state_dict().values(), b.cost_model.net.state_dict().values()):
        assert torch.equal(ta, tb)
    for ta, tb in zip(a.reward_model.net.state_dict().values(), b.reward_model.net.state_dict().values()):
        assert torch.equal(ta, tb)
    assert a.info["held_out_pairs"] == len(pairs) > 0 and a.info["held_out_labels"] == len(labels) > 0
    assert a.info["feedback_split"] == {"holdout_fraction": 0.1, "seed": spec.seed}
    assert b.info["cost_model_accuracy"] == pytest.approx(1.0 - a.info["cost_model_accuracy"])
    assert b.info["reward_model_accuracy"] == pytest.approx(1.0 - a.info["reward_model_accuracy"])
    assert a.info["cost_model_accuracy"] > 0.5 and a.info["reward_model_accuracy"] > 0.5


def test_relabelled_rewards_keep_their_sign() -> None:
    """Positive affine in the model's output (Bradley-Terry's ordering kept, its free shift and scale
    removed) and never negative, so ending an episode early never adds return."""
    raw = np.random.default_rng(0).normal(-3.0, 2.0, 500)  # a BT head that came out mostly negative
    r = relabel_rewards(raw)
    assert r.min() == 0.0 and np.all(r >= 0)
    assert r.std() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_array_equal(np.argsort(r, kind="stable"), np.argsort(raw, kind="stable"))
    np.testing.assert_allclose(relabel_rewards(3.0 * raw + 7.0), r, atol=1e-5)  # same for any BT-equivalent head
    episode = r[:100]
    assert np.all(np.diff(np.cumsum(episode)) >= 0)  # every prefix (an early end) returns no more than the whole


@pytest.mark.slow
def test_end_to_end_learns_from_feedback_only(sim_dataset: Dataset, feedback: FeedbackView, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    limits: list[float] = []
    real = safe_rlhf.constrained_learner

    def recording(kind: str, spec: TrainSpec, *args: Any, **kwargs: Any) -> Any:
        limits.append(spec.threshold)
        return real(kind, spec, *args, **kwargs)

    monkeypatch.setattr(safe_rlhf, "constrained_learner", recording)
    inputs = TrainInputs(data=sim_dataset.learner_view(), feedback=feedback, dataset=None)
    out = training.train(SafeRLHF, spec_for(sim_dataset, tmp_path), inputs)
    info = out.info
    pairs, labels = held_out_indices(feedback, 0.1, 1)
    assert info["held_out_pairs"] == len(pairs) > 0 and info["held_out_labels"] == len(labels) > 0
    assert info["reward_model_accuracy"] > 0.75 and info["cost_model_accuracy"] > 0.75
    # stage 2 gets the learned limit b T / H, not the run's threshold
    assert limits == [pytest.approx(info["segment_cost_budget"] * 100 / feedback.segment_length)]
    assert limits[0] == pytest.approx(info["stage2_cost_limit"]) and limits[0] != THRESHOLD
    # the relabelled episodes are safe about as often as the true ones under the real threshold
    true_share = float(np.mean(sim_dataset.episode_costs <= THRESHOLD))
    assert abs(info["relabelled_safe_episode_share"] - true_share) < 0.2
    assert info["offline_rl"] == "bcq-lag" and out.steps == 6
    summary = evaluate_policy(out.policy, sim_dataset.task, THRESHOLD, episodes=2, seed=0).summary()
    assert np.isfinite(summary["normalized_reward"])
    assert (tmp_path / "safe_rlhf_models.pt").is_file() and (tmp_path / training.CHECKPOINT_NAME).is_file()


@pytest.mark.slow
def test_rerun_loads_the_models_and_matches(sim_dataset: Dataset, feedback: FeedbackView, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = TrainInputs(data=sim_dataset.learner_view(), feedback=feedback)
    spec = spec_for(sim_dataset, tmp_path, model_steps=40, **{"rl.update_steps": 4})
    first = training.train(SafeRLHF, spec, inputs)
    (tmp_path / training.CHECKPOINT_NAME).unlink()  # stage 2 starts over; stage 1 must come from its checkpoint

    def refit(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the reward/cost models were trained again")

    monkeypatch.setattr(SafeRLHF, "_fit", staticmethod(refit))
    second = training.train(SafeRLHF, spec, inputs)
    obs = sim_dataset.observations[:30]
    np.testing.assert_array_equal(first.policy.act(obs), second.policy.act(obs))
    assert second.info["reward_model_accuracy"] == first.info["reward_model_accuracy"]
    assert second.info["stage2_cost_limit"] == first.info["stage2_cost_limit"]
    # a stage-1 checkpoint of the old format (calibrated at the threshold) is refused, not reused
    saved = torch.load(tmp_path / "safe_rlhf_models.pt", weights_only=False)
    del saved["format"], saved["calibration"]
    torch.save(saved, tmp_path / "safe_rlhf_models.pt")
    with pytest.raises(FeedbackError, match="older version"):
        training.train(SafeRLHF, spec, inputs)


def test_stage_two_is_selectable(sim_dataset: Dataset, feedback: FeedbackView) -> None:
    spec = spec_for(sim_dataset, None, vae=False, model_steps=10, offline_rl="coptidice", **{"rl.update_steps": 3})
    out = training.train(SafeRLHF, spec, TrainInputs(data=sim_dataset.learner_view(), feedback=feedback))
    assert out.info["offline_rl"] == "coptidice" and out.steps == 3
    # the budget keys every baseline takes are stage 2's
    budget = spec_for(sim_dataset, None, update_steps=7)
    assert SafeRLHF.config_for(budget).rl["update_steps"] == 6  # rl.update_steps (TINY) wins
    del budget.overrides["rl.update_steps"]
    assert SafeRLHF.config_for(budget).rl["update_steps"] == 7


def test_bad_input(sim_dataset: Dataset, feedback: FeedbackView) -> None:
    with pytest.raises(BadInput, match="offline_rl must be one of"):
        SafeRLHF.config_for(spec_for(sim_dataset, None, offline_rl="sac"))
    with pytest.raises(BadInput, match=r"bad --set criticlr=1.0 for safe-rlhf's .* \(rl\.\*\): unknown setting"):
        SafeRLHF.config_for(spec_for(sim_dataset, None, **{"rl.criticlr": 1.0}))
    with pytest.raises(BadInput, match=r"bad --set calibration_lr=0.0 for safe-rlhf: expected a learning rate > 0"):
        SafeRLHF.config_for(spec_for(sim_dataset, None, calibration_lr=0.0))
    with pytest.raises(BadInput, match="bad --set cost_temperature=1.0 for safe-rlhf: unknown setting"):  # replaced by the learned slope
        SafeRLHF.config_for(spec_for(sim_dataset, None, cost_temperature=1.0))
    with pytest.raises(FeedbackError, match="got no feedback"):
        training.train(SafeRLHF, spec_for(sim_dataset, None), TrainInputs(data=sim_dataset.learner_view()))


@pytest.mark.slow
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


def test_stage_two_steps_come_from_the_profile_or_protocol_not_a_fixed_cap(sim_dataset: Dataset) -> None:
    """Stage 2 (BCQ-Lag) runs the profile's train_steps or the protocol's update_steps on CPU; BCQ-Lag's
    own 1,000-step CPU cap no longer cuts it (an explicit cpu_max_steps still does, and says so)."""
    from baselines import osrl_common as oc
    from baselines.safe_rlhf import CONSTRAINED
    from bench.profiles import get_profile

    def stage_two_steps(**overrides: Any) -> tuple[int, int, str]:
        spec = TrainSpec(task=sim_dataset.task, threshold=THRESHOLD, seed=0, profile=get_profile("quick"), overrides=overrides)
        config = SafeRLHF.config_for(spec)
        return oc.resolve_steps(CONSTRAINED[config.offline_rl][0](**config.rl), spec, "safe-rlhf", "a GPU")

    assert stage_two_steps() == (10_000, 10_000, "")  # the quick profile's train_steps
    assert stage_two_steps(update_steps=2_500) == (2_500, 2_500, "")  # a budget protocol's steps
    steps, planned, note = stage_two_steps(update_steps=2_500, cpu_max_steps=500)
    assert (steps, planned) == (500, 2_500) and "running 500 steps on CPU" in note
