"""Ground-truth baselines (osrl-lib wrappers): same numbers as osrl called like its example scripts,
end-to-end runs on real BallRun data, checkpoint/resume, CDT acting vs OSRL's rollout, bad input."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import bench  # noqa: F401  (compat patches before osrl)
from baselines import osrl_common as oc
from baselines.bc import BCAll, BCSafe
from baselines.cdt import CDT, PER_TASK, CDTPolicy, dataset_target_return, resolve_target_return
from baselines.constrained import CPQ, BCQLag, COptiDICE
from baselines.oapackage_shim import ParetoDoubleLong, doubleVector
from bench import evaluation, training
from bench.data import Dataset, from_arrays
from bench.envs import make_env
from bench.errors import BadInput
from bench.evaluation import evaluate_policy
from bench.interfaces import TrainInputs, TrainSpec
from bench.profiles import Profile, get_profile

torch.set_num_threads(1)
THRESHOLD = 20.0
#: Tiny networks/batches so that each run takes about a second.
TINY = {
    "bc-safe": {"batch_size": 64, "a_hidden_sizes": [32, 32]},
    "bc-all": {"batch_size": 64, "a_hidden_sizes": [32, 32]},
    "bcq-lag": {"batch_size": 32, "a_hidden_sizes": [32, 32], "c_hidden_sizes": [32, 32], "vae_hidden_sizes": 32},
    "cpq": {"batch_size": 32, "a_hidden_sizes": [32, 32], "c_hidden_sizes": [32, 32], "vae_hidden_sizes": 32},
    "coptidice": {"batch_size": 32, "a_hidden_sizes": [32, 32], "c_hidden_sizes": [32, 32]},
    "cdt": {"batch_size": 16, "embedding_dim": 16, "num_layers": 1, "num_heads": 2, "augment_percent": 0.0},
}
ALGOS = {"bc-all": BCAll, "bc-safe": BCSafe, "cdt": CDT, "bcq-lag": BCQLag, "cpq": CPQ, "coptidice": COptiDICE}


def tiny_profile(checkpoint_every: int = 1000, eval_every: int = 0, log_every: int = 5) -> Profile:
    return Profile("tiny", 20, 0.3, 2, eval_every, 2, log_every, checkpoint_every, 100)


def make_spec(ds: Dataset, algo: str, steps: int, tmp: Path | None, **kw: Any) -> TrainSpec:
    profile = kw.pop("profile", tiny_profile())
    overrides = {"update_steps": steps, **TINY[algo], **kw.pop("overrides", {})}
    return TrainSpec(task=ds.task, threshold=THRESHOLD, seed=kw.pop("seed", 3), profile=profile,
                     checkpoint_dir=tmp, overrides=overrides, **kw)


def dsrl_dict(ds: Dataset) -> dict[str, np.ndarray]:
    """What env.get_dataset() gives for this data (built here independently of the wrappers)."""
    return {k: np.array(getattr(ds, k)) for k in
            ("observations", "next_observations", "actions", "rewards", "costs", "terminals", "timeouts")}


@pytest.fixture(scope="module")
def doubled_dataset(sim_dataset: Dataset) -> Dataset:
    """The 40 episodes twice: OSRL's CDT augmentation grid-filters bins with < 2 episodes."""
    arrays = {k: np.concatenate([v, v]) for k, v in dsrl_dict(sim_dataset).items()}
    return from_arrays(arrays, sim_dataset.task)


# ------------------------------------------------------------------ same numbers as osrl directly
def test_bc_safe_matches_osrl_example_script(sim_dataset: Dataset) -> None:
    """train_bc.py with bc_mode="safe" (num_workers=0: see baselines/osrl_common.py) vs the wrapper."""
    oc.import_osrl()
    from torch.utils.data import DataLoader
    from fsrl.utils import DummyLogger
    from osrl.algorithms import BC, BCTrainer
    from osrl.common import TransitionDataset
    from osrl.common.dataset import process_bc_dataset
    from osrl.common.exp_util import seed_all

    steps, seed = 30, 3
    seed_all(seed)
    env = make_env(sim_dataset.task)
    data = dsrl_dict(sim_dataset)
    process_bc_dataset(data, THRESHOLD, 1.0, "safe")
    model = BC(state_dim=env.observation_space.shape[0], action_dim=env.action_space.shape[0],
               max_action=env.action_space.high[0], a_hidden_sizes=[32, 32], episode_len=100, device="cpu")
    trainer = BCTrainer(model, env, logger=DummyLogger(), actor_lr=1e-3, bc_mode="safe", cost_limit=THRESHOLD, device="cpu")
    loader = iter(DataLoader(TransitionDataset(data), batch_size=64, pin_memory=False, num_workers=0))
    for _ in range(steps):
        observations, _, actions, _, _, _ = next(loader)
        trainer.train_one_step(observations, actions)

    out = training.train(BCSafe, make_spec(sim_dataset, "bc-safe", steps, None, seed=seed),
                         TrainInputs(data=sim_dataset.learner_view(), dataset=sim_dataset))
    ours = out.policy.modules["actor"].state_dict()
    for key, value in model.actor.state_dict().items():
        assert torch.equal(ours[key], value), key
    obs = sim_dataset.observations[:50]
    with torch.no_grad():
        expected = model.actor(torch.as_tensor(obs)).numpy()
    np.testing.assert_array_equal(out.policy.act(obs), expected)
    assert out.info["bc_transitions"] == int(np.sum(sim_dataset.episode_costs <= THRESHOLD) * 100)


def test_cdt_matches_osrl_example_script(doubled_dataset: Dataset) -> None:
    """train_cdt.py (with OSRL's Pareto augmentation on, through the oapackage shim) vs the wrapper."""
    oc.import_osrl()
    from torch.utils.data import DataLoader
    from fsrl.utils import DummyLogger
    from osrl.algorithms import CDT as OsrlCDT
    from osrl.algorithms import CDTTrainer
    from osrl.common import SequenceDataset
    from osrl.common.exp_util import seed_all

    from baselines import oapackage_shim

    oapackage_shim.install()
    steps, seed, ds = 6, 3, doubled_dataset
    seed_all(seed)
    env = make_env(ds.task)
    model = OsrlCDT(state_dim=7, action_dim=2, max_action=env.action_space.high[0], embedding_dim=16, seq_len=10,
                    episode_len=100, num_layers=1, num_heads=2, attention_dropout=0.1, residual_dropout=0.1,
                    embedding_dropout=0.1, time_emb=True, use_rew=True, use_cost=True, cost_transform=True,
                    add_cost_feat=False, mul_cost_feat=False, cat_cost_feat=False, action_head_layers=1,
                    cost_prefix=False, stochastic=True, init_temperature=0.1, target_entropy=-2)
    trainer = CDTTrainer(model, env, logger=DummyLogger(), learning_rate=1e-4, weight_decay=1e-4, betas=(0.9, 0.999),
                         clip_grad=0.25, lr_warmup_steps=500, reward_scale=0.1, cost_scale=1, loss_cost_weight=0.02,
                         loss_state_weight=0, cost_reverse=False, no_entropy=False, device="cpu")
    # BallRun's CDT config: deg 2, max_reward 1400, max_rew_decrease 200, min_reward 1 (cdt_configs.py)
    dataset = SequenceDataset(dsrl_dict(ds), seq_len=10, reward_scale=0.1, cost_scale=1, deg=2, pf_sample=False,
                              max_rew_decrease=200, beta=1.0, augment_percent=0.2, cost_reverse=False,
                              max_reward=1400.0, min_reward=1, pf_only=False, rmin=300, cost_bins=60, npb=5,
                              cost_sample=True, cost_transform=lambda x: 70 - x, start_sampling=False, prob=0.2,
                              random_aug=0, aug_rmin=400, aug_rmax=500, aug_cmin=-2, aug_cmax=25, cgap=5,
                              rstd=1, cstd=0.2)
    assert len(dataset.aug_data) > 0  # the augmentation (and so the shim) really ran
    loader = iter(DataLoader(dataset, batch_size=16, pin_memory=False, num_workers=0))
    for _ in range(steps):
        trainer.train_one_step(*next(loader))

    overrides = {k: v for k, v in TINY["cdt"].items() if k != "augment_percent"}
    spec = TrainSpec(task=ds.task, threshold=THRESHOLD, seed=seed, profile=tiny_profile(),
                     overrides={"update_steps": steps, **overrides})
    out = training.train(CDT, spec, TrainInputs(data=ds.learner_view(), dataset=ds))
    assert out.info["augmented_episodes"] == len(dataset.aug_data)
    ours = out.policy.model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(ours[key], value), key
    assert out.info["target_return"] == 500.0 and out.info["target_source"] == "osrl"  # OSRL's BallRun target for cost 20


# ------------------------------------------------------------------------ end to end, each baseline
@pytest.mark.slow
@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_baseline_end_to_end(algo: str, sim_dataset: Dataset, tmp_path: Path) -> None:
    """A tiny budget with online evaluation in the real simulator (bench.training's), then the benchmark's evaluation."""
    task = sim_dataset.task
    rows: list[tuple[int, dict[str, float]]] = []
    spec = make_spec(sim_dataset, algo, 10, tmp_path, profile=tiny_profile(eval_every=10),
                     log=lambda s, m: rows.append((s, m)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. CDT's open-loop fallback would warn: bench.evaluation must feed it
        out = training.train(ALGOS[algo], spec, TrainInputs(data=sim_dataset.learner_view(), dataset=sim_dataset))
    assert out.steps == 10 and out.info["planned_steps"] == 10 and not out.info["budget_reduced_for_cpu"]
    train_rows = [(s, m) for s, m in rows if m.get("source") != "eval"]  # online evaluations reach the live log too
    assert [s for s, _ in train_rows] == [5, 10] and all(np.isfinite(list(m.values())).all() for _, m in train_rows)
    assert [s for s, m in rows if m.get("source") == "eval"] == [10]
    assert out.best_policy is not None
    assert any("normalized_cost" in row for row in out.curve)
    summary = evaluate_policy(out.policy, task, THRESHOLD, episodes=2, seed=0).summary()
    if algo == "cdt":
        assert out.policy.closed_loop
    assert np.isfinite(summary["normalized_reward"]) and summary["normalized_cost"] >= 0
    assert (tmp_path / training.CHECKPOINT_NAME).is_file()


# -------------------------------------------------------------------------------- resume
@pytest.mark.slow
@pytest.mark.parametrize("algo", ["bc-safe", "bcq-lag", "cpq", "coptidice", "cdt"])
def test_killed_run_resumes_to_the_same_numbers(algo: str, sim_dataset: Dataset, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after its step-10 checkpoint, a rerun continues from it and ends where a straight run does;
    an online evaluation that reseeds numpy and torch (as bench.evaluation does) changes nothing."""
    inputs = TrainInputs(data=sim_dataset.learner_view(), dataset=sim_dataset)
    profile = tiny_profile(checkpoint_every=10, eval_every=7)

    class Summary:
        def summary(self) -> dict[str, float]:
            return {"normalized_reward": 0.0, "normalized_cost": 0.0}

    def reseeding_eval(policy: Any, *args: Any, **kwargs: Any) -> Summary:
        np.random.seed(12345)
        torch.manual_seed(12345)
        return Summary()

    straight = training.train(ALGOS[algo], make_spec(sim_dataset, algo, 16, None, profile=tiny_profile(checkpoint_every=10)), inputs)
    monkeypatch.setattr(evaluation, "evaluate_policy", reseeding_eval)  # what bench.training's evaluation calls

    class Killed(Exception):
        pass

    def kill_at_15(step: int, metrics: dict[str, float]) -> None:
        if step == 15:
            raise Killed

    with pytest.raises(Killed):
        training.train(ALGOS[algo], make_spec(sim_dataset, algo, 16, tmp_path, profile=profile, log=kill_at_15), inputs)
    resumed = training.train(ALGOS[algo], make_spec(sim_dataset, algo, 16, tmp_path, profile=profile), inputs)
    assert resumed.info["resumed_from_step"] == 10 and resumed.steps == 16
    obs = sim_dataset.observations[:40]
    np.testing.assert_array_equal(resumed.policy.act(obs), straight.policy.act(obs))
    a, b = resumed.policy.state_dict(), straight.policy.state_dict()
    for part in a:
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)


# ------------------------------------------------------------------ CDT acting vs OSRL's rollout
@pytest.mark.slow
def test_cdt_policy_in_bench_evaluation_equals_osrl_rollouts(sim_dataset: Dataset) -> None:
    """OSRL's CDTTrainer.rollout (env wrapped with reward_scale) vs CDTPolicy driven by bench.evaluation
    (begin/observe) on the raw env: the same episodes, with the reward scale handled by the policy."""
    oc.import_osrl()
    from dsrl.offline_env import OfflineEnvWrapper, wrap_env
    from osrl.algorithms import CDTTrainer

    out = training.train(CDT, make_spec(sim_dataset, "cdt", 3, None), TrainInputs(data=sim_dataset.learner_view(), dataset=sim_dataset))
    policy: CDTPolicy = out.policy
    result = evaluate_policy(policy, sim_dataset.task, THRESHOLD, episodes=2, seed=0, num_envs=1)
    assert policy.closed_loop

    env = OfflineEnvWrapper(wrap_env(make_env(sim_dataset.task), reward_scale=0.1))
    trainer = CDTTrainer(policy.model, env, reward_scale=0.1, cost_scale=1.0, device="cpu")
    for i, episode_seed in enumerate(result.seeds):
        np.random.seed(int(episode_seed))  # bullet-safety-gym draws its initial state from numpy's RNG
        osrl_ret, osrl_len, osrl_cost = trainer.rollout(policy.model, env, 500.0 * 0.1, THRESHOLD * 1.0)
        assert result.lengths[i] == osrl_len and result.costs[i] == osrl_cost
        assert result.returns[i] == pytest.approx(osrl_ret / 0.1, rel=1e-5)
    # batched: the same episodes up to float differences of a batched transformer forward pass
    batched = evaluate_policy(policy, sim_dataset.task, THRESHOLD, episodes=2, seed=0, num_envs=2)
    np.testing.assert_allclose(batched.normalized_reward, result.normalized_reward, atol=0.01)
    np.testing.assert_allclose(batched.normalized_cost, result.normalized_cost, atol=0.1)


class _ActOnly:
    """An evaluator's view of a policy without the begin/observe hooks."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def act(self, observations: np.ndarray) -> np.ndarray:
        return self.policy.act(observations)


@pytest.mark.slow
def test_cdt_policy_open_loop_fallback_warns_and_runs(sim_dataset: Dataset) -> None:
    out = training.train(CDT, make_spec(sim_dataset, "cdt", 2, None), TrainInputs(data=sim_dataset.learner_view(), dataset=sim_dataset))
    with pytest.warns(UserWarning, match="without reward/cost feedback"):
        result = evaluate_policy(_ActOnly(out.policy), sim_dataset.task, THRESHOLD, episodes=3, seed=0, num_envs=2)
    assert not out.policy.closed_loop and np.all(result.lengths == 100)


# ------------------------------------------------------------------------------ small pieces
def test_oapackage_shim_pareto_indices() -> None:
    pareto = ParetoDoubleLong()
    points = [(-1, 5), (-2, 6), (-3, 4), (0, 1), (-1, 5), (0, 0.5)]  # (-cost, reward), maximised
    for i, p in enumerate(points):
        pareto.addvalue(doubleVector(p), i)
    assert sorted(pareto.allindices()) == [0, 1, 3, 4]


def test_bad_input(sim_dataset: Dataset) -> None:
    spec = make_spec(sim_dataset, "bc-safe", 5, None, overrides={"actor_lrr": 1.0})
    with pytest.raises(BadInput, match=r"bad --set actor_lrr=1.0 for bc-safe: unknown setting; known settings: a_hidden_sizes, actor_lr, "):
        BCSafe.config_for(spec)
    with pytest.raises(BadInput, match="bad --set batch_size=many for bc-safe: expected a whole number"):
        BCSafe.config_for(make_spec(sim_dataset, "bc-safe", 5, None, overrides={"batch_size": "many"}))
    nothing_safe = make_spec(sim_dataset, "bc-safe", 5, None)
    nothing_safe.threshold = -1.0
    with pytest.raises(BadInput, match="BC-Safe has nothing to clone"):
        training.train(BCSafe, nothing_safe, TrainInputs(data=sim_dataset.learner_view(), dataset=sim_dataset))
    with pytest.raises(BadInput, match="ground-truth baseline"):
        training.train(BCQLag, make_spec(sim_dataset, "bcq-lag", 5, None), TrainInputs(data=sim_dataset.learner_view()))


def test_cpu_cap_is_reported(sim_dataset: Dataset) -> None:
    spec = make_spec(sim_dataset, "bcq-lag", 6, None, overrides={"cpu_max_steps": 4})
    out = training.train(BCQLag, spec, TrainInputs(data=sim_dataset.learner_view(), dataset=sim_dataset))
    assert out.steps == 4 and out.info["planned_steps"] == 6 and out.info["budget_reduced_for_cpu"]
    assert "need a GPU" in out.info["budget_note"]
    # CDT on CPU also shrinks OSRL's batch of 2048, and says so
    tiny = {k: v for k, v in TINY["cdt"].items() if k != "batch_size"}
    spec = TrainSpec(task=sim_dataset.task, threshold=THRESHOLD, seed=0, profile=tiny_profile(),
                     overrides={"update_steps": 1, **tiny})
    out = training.train(CDT, spec, TrainInputs(data=sim_dataset.learner_view(), dataset=sim_dataset))
    assert out.info["batch_size"] == 64 and out.info["budget_reduced_for_cpu"]
    assert "batch 2048 needs a GPU" in out.info["budget_note"]


def test_cdt_targets_come_from_a_project_collected_file_and_lie_in_its_returns(sim_dataset: Dataset, tmp_path: Path) -> None:
    """On a file this project collected (a collection card beside it) CDT's target return is read off
    the file (the best return within the threshold), not OSRL's constant for DSRL's file (which lies
    outside the returns of the shipped CarCircle and AntCircle files)."""
    import dataclasses
    import shutil

    own = tmp_path / sim_dataset.path.name
    shutil.copy(sim_dataset.path, own)
    own.with_suffix(".json").write_text("{}")
    collected = dataclasses.replace(sim_dataset, path=own)
    returns, costs = sim_dataset.episode_returns, sim_dataset.episode_costs
    spec = TrainSpec(task=sim_dataset.task, threshold=THRESHOLD, seed=0, profile=get_profile("quick"))
    config = CDT.config_for(spec)
    for threshold in (*sim_dataset.task.thresholds, float(costs.min()) - 1.0):
        target, source = resolve_target_return(config, PER_TASK["OfflineBallRun-v0"], threshold, collected)
        assert source == "dataset" and returns.min() <= target <= returns.max()
        assert target == dataset_target_return(returns, costs, threshold)
    within = costs <= THRESHOLD
    assert resolve_target_return(config, None, THRESHOLD, collected)[0] == returns[within].max()
    forced = dataclasses.replace(config, target_source="osrl")
    assert resolve_target_return(forced, PER_TASK["OfflineBallRun-v0"], THRESHOLD, collected) == (500.0, "osrl")
    with pytest.raises(BadInput, match="target_source 'nope'"):
        resolve_target_return(dataclasses.replace(config, target_source="nope"), None, THRESHOLD, collected)


def test_config_defaults_follow_osrl_and_profile(sim_dataset: Dataset) -> None:
    spec = TrainSpec(task=sim_dataset.task, threshold=THRESHOLD, seed=0, profile=get_profile("quick"))
    cdt = CDT.config_for(spec)
    assert (cdt.deg, cdt.max_reward, cdt.target_return, cdt.episode_len) == (2, 1400.0, None, 100)
    # a DSRL file (no collection card): OSRL's BallRun target for cost 20
    assert resolve_target_return(cdt, PER_TASK["OfflineBallRun-v0"], THRESHOLD, sim_dataset) == (500.0, "osrl")
    assert BCSafe.config_for(spec).bc_mode == "safe" and BCAll.config_for(spec).bc_mode == "all"
    assert BCQLag.config_for(spec).update_steps is None  # -> profile.train_steps at train time
