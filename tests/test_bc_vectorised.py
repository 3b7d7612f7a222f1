"""Vectorised BC (issue 9): the vectorised TransitionDataset sampler yields the DataLoader's batches bit for
bit; bc-all / bc-safe cells trained as one batched model (train_many) store what solo runs store, resume
from each other's checkpoints, and refuse groups that do not share a config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import bench  # noqa: F401  (compat patches before osrl)
from baselines import osrl_common as oc
from baselines.bc import BCAll, BCSafe
from bench import evaluation, profiles, training
from bench import results as store
from bench.data import Dataset
from bench.errors import BadInput
from bench.interfaces import TrainInputs, TrainSpec
from bench.profiles import Profile
from _sim_data import run_group_and_alone
from bench.runner import CellSpec

torch.set_num_threads(1)
#: Tiny budget: 30 steps of a 32x32 actor at batch 64 (about a second per cell with its evaluations).
TINY = (("a_hidden_sizes", [32, 32]), ("batch_size", 64), ("update_steps", 30))
#: A profile with online evaluation (so best-policy selection is compared too) and frequent checkpoints.
PROFILE = Profile("bctiny", 30, 0.3, 2, 15, 2, 10, 10, 100)
ALGOS = {"bc-safe": BCSafe, "bc-all": BCAll}


def dsrl_dict(ds: Dataset) -> dict[str, np.ndarray]:
    return oc.dsrl_data_dict(ds.observations, ds.next_observations, ds.actions, ds.rewards, ds.costs,
                             ds.terminals, ds.timeouts)


# ------------------------------------------------------------------------------------ the sampler
@pytest.mark.parametrize("state_init", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_transition_batches_equal_the_dataloader(sim_dataset: Dataset, state_init: bool, weighted: bool) -> None:
    """Same tensors, dtypes, order and RNG consumption (numpy's global RNG and torch's) as
    iter(DataLoader(TransitionDataset)), with and without sample_prob, for several batches."""
    oc.import_osrl()
    from osrl.common import TransitionDataset
    from torch.utils.data import DataLoader

    def dataset() -> Any:
        d = TransitionDataset(dsrl_dict(sim_dataset), reward_scale=0.1, cost_scale=1.0, state_init=state_init)
        if weighted:
            w = np.random.RandomState(5).rand(d.dataset_size)
            d.sample_prob = w / w.sum()
        return d

    np.random.seed(11)
    torch.manual_seed(11)
    loader = iter(DataLoader(dataset(), batch_size=64, num_workers=0))
    expected = [next(loader) for _ in range(4)]
    np_state, torch_state = np.random.get_state(), torch.get_rng_state()

    np.random.seed(11)
    torch.manual_seed(11)
    batches = oc.dataloader(dataset(), 64, "cpu")
    assert isinstance(batches, oc.TransitionBatches)  # the dispatch really chose the vectorised sampler
    got = [next(batches) for _ in range(4)]
    assert len(got[0]) == (7 if state_init else 6)
    for want, have in zip(expected, got):
        assert len(want) == len(have)
        for a, b in zip(want, have):
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(got[0], got[1]))  # the batches do move on
    assert np.array_equal(np.random.get_state()[1], np_state[1]) and np.random.get_state()[2] == np_state[2]
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_transition_batches_own_random_state(sim_dataset: Dataset) -> None:
    """A sampler given a RandomState draws from it, not from numpy's global RNG, and matches a global-RNG
    sampler seeded alike."""
    oc.import_osrl()
    from osrl.common import TransitionDataset

    own = oc.TransitionBatches(TransitionDataset(dsrl_dict(sim_dataset)), 32, random_state=np.random.RandomState(4))
    np.random.seed(4)
    glob = oc.TransitionBatches(TransitionDataset(dsrl_dict(sim_dataset)), 32)
    np.random.seed(99)
    before = np.random.get_state()[1].copy()
    mine = next(own)
    assert np.array_equal(np.random.get_state()[1], before)
    np.random.seed(4)
    for a, b in zip(mine, next(glob)):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------ train_many
def cell(dataset: Path, algo: str, seed: int, threshold: float) -> CellSpec:
    return CellSpec(task="BallRun", algorithm=algo, threshold=threshold, seed=seed, profile=PROFILE.name,
                    dataset=str(dataset), device="cpu", overrides=TINY)


def final_params(results_dir: Path, algo: str) -> dict[str, dict[str, torch.Tensor]]:
    """Each cell's final actor parameters, read from its checkpoint (written at the last step)."""
    out = {}
    for path in sorted((results_dir / store.CHECKPOINTS).glob(f"*/{training.CHECKPOINT_NAME}")):
        out[path.parent.name] = oc.torch_load(path)["learner"]["train_state"]["model"]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["bc-safe", "bc-all"])
def test_batched_group_stores_what_single_cells_store(sim_dataset_path, tmp_path, monkeypatch, algo) -> None:
    monkeypatch.setitem(profiles.PROFILES, PROFILE.name, PROFILE)
    cls = ALGOS[algo]
    # two seeds, two thresholds: BC-Safe clones a different subset at threshold 40
    specs = [cell(sim_dataset_path, algo, 0, 20.0), cell(sim_dataset_path, algo, 1, 20.0),
             cell(sim_dataset_path, algo, 1, 40.0)]
    vec, one = run_group_and_alone(monkeypatch, cls, specs, tmp_path)
    assert set(vec["checkpoint"]) == {"final", "best"}  # online evaluation picked a best policy per cell
    assert (vec[["cell_id", "checkpoint", "episode"]] == one[["cell_id", "checkpoint", "episode"]]).all().all()
    assert vec["normalized_reward"].to_numpy() == pytest.approx(one["normalized_reward"].to_numpy(), rel=1e-5, abs=1e-6)
    assert vec["normalized_cost"].to_numpy() == pytest.approx(one["normalized_cost"].to_numpy(), rel=1e-5, abs=1e-6)
    infos = {d: [json.loads(v) for v in store.load_meta(tmp_path / d).groupby("cell_id")["info_json"].first()]
             for d in ("vec", "one")}
    assert [i["ensemble_size"] for i in infos["vec"]] == [3, 3, 3] and [i["ensemble_size"] for i in infos["one"]] == [1, 1, 1]
    if algo == "bc-safe":
        assert len({i["bc_transitions"] for i in infos["vec"]}) == 2  # thresholds 20 and 40: two subsets
    a, b = final_params(tmp_path / "vec", algo), final_params(tmp_path / "one", algo)
    assert sorted(a) == sorted(b) and len(a) == 3
    for cell_id in a:
        for key in b[cell_id]:
            torch.testing.assert_close(a[cell_id][key], b[cell_id][key], rtol=1e-5, atol=1e-6)
    # distinct seeds give distinct members: the batch did not train one model three times
    ids = sorted(a)
    assert not torch.equal(a[ids[0]]["actor.pi.0.weight"], a[ids[1]]["actor.pi.0.weight"])


def make_spec(ds: Dataset, seed: int, threshold: float, checkpoint_dir: Path | None, **kw: Any) -> TrainSpec:
    overrides = {**dict(TINY), **kw.pop("overrides", {})}
    return TrainSpec(task=ds.task, threshold=threshold, seed=seed, profile=PROFILE, checkpoint_dir=checkpoint_dir,
                     overrides=overrides, **kw)


class _Summary:
    def __init__(self, metrics: dict[str, float]) -> None:
        self.metrics = metrics

    def summary(self) -> dict[str, float]:
        return self.metrics


def reseeding_eval(policy: Any, *args: Any, **kwargs: Any) -> _Summary:
    """bench.evaluation reseeds numpy's global RNG: a batched run must not care. (Stands in for
    bench.evaluation.evaluate_policy, which bench.training's online evaluation calls.)"""
    np.random.seed(12345)
    actions = policy.act(np.zeros((1, 7), np.float32))
    return _Summary({"normalized_reward": float(actions.sum()), "normalized_cost": 0.5})


CELLS = [(0, 20.0), (1, 20.0), (1, 40.0)]


def actor(out: Any) -> dict[str, torch.Tensor]:
    return out.policy.state_dict()["actor"]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], exact: bool) -> None:
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_killed_batched_run_resumes_to_the_same_numbers(sim_dataset: Dataset, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after its step-10 checkpoint, a batched rerun resumes every member from it and ends where an
    uninterrupted batched run does; a solo run resumes from a batched member's checkpoint, a batched run from
    solo checkpoints, and members at different steps train apart."""
    monkeypatch.setattr(evaluation, "evaluate_policy", reseeding_eval)
    inputs = [TrainInputs(data=sim_dataset.learner_view(), dataset=sim_dataset)] * 3
    straight = training.train_many(BCSafe, [make_spec(sim_dataset, s, t, None) for s, t in CELLS], inputs, ensemble_size=3)
    solo = [training.train(BCSafe, make_spec(sim_dataset, s, t, None), inputs[0]) for s, t in CELLS]
    for a, b in zip(straight, solo):
        assert_same(actor(a), actor(b), exact=False)
        assert a.best_policy is not None and b.best_policy is not None

    class Killed(Exception):
        pass

    def kill_at_20(step: int, metrics: dict[str, float]) -> None:
        if step == 20:  # logged before the step-20 checkpoint: the last one is step 10
            raise Killed

    dirs = [tmp_path / f"c{i}" for i in range(3)]
    with pytest.raises(Killed):
        training.train_many(BCSafe, [make_spec(sim_dataset, s, t, d, log=kill_at_20) for (s, t), d in zip(CELLS, dirs)],
                            inputs, ensemble_size=3)
    assert all(oc.torch_load(d / training.CHECKPOINT_NAME)["step"] == 10 for d in dirs)
    resumed = training.train_many(BCSafe, [make_spec(sim_dataset, s, t, d) for (s, t), d in zip(CELLS, dirs)],
                                  inputs, ensemble_size=3)
    for a, b in zip(resumed, straight):
        assert a.info["resumed_from_step"] == 10 and a.steps == 30 and a.info["ensemble_size"] == 3
        assert_same(actor(a), actor(b), exact=True)  # the same batched computation, split at step 10
        assert a.curve == b.curve
        assert_same(a.best_policy.state_dict()["actor"], b.best_policy.state_dict()["actor"], exact=True)

    # batched checkpoint -> solo resume (and the other way round), with a fresh cell beside them
    dirs = [tmp_path / f"d{i}" for i in range(3)]
    with pytest.raises(Killed):
        training.train_many(BCSafe, [make_spec(sim_dataset, s, t, d, log=kill_at_20) for (s, t), d in zip(CELLS, dirs)],
                            inputs, ensemble_size=3)
    solo_resumed = training.train(BCSafe, make_spec(sim_dataset, *CELLS[0], dirs[0]), inputs[0])
    assert solo_resumed.info["resumed_from_step"] == 10 and solo_resumed.info["ensemble_size"] == 1
    assert_same(actor(solo_resumed), actor(solo[0]), exact=False)

    solo_dirs = [tmp_path / f"e{i}" for i in range(3)]
    for (s, t), d in zip(CELLS[:2], solo_dirs[:2]):
        with pytest.raises(Killed):
            training.train(BCSafe, make_spec(sim_dataset, s, t, d, log=kill_at_20), inputs[0])
    mixed = training.train_many(BCSafe, [make_spec(sim_dataset, s, t, d) for (s, t), d in zip(CELLS, solo_dirs)],
                                inputs, ensemble_size=3)
    assert [o.info["ensemble_size"] for o in mixed] == [2, 2, 1]  # two resume at step 10 together, one starts apart
    assert [o.info.get("resumed_from_step") for o in mixed] == [10, 10, None]
    for a, b in zip(mixed, solo):
        assert_same(actor(a), actor(b), exact=False)


def test_mismatched_cells_are_refused(sim_dataset: Dataset) -> None:
    inputs = [TrainInputs(data=sim_dataset.learner_view(), dataset=sim_dataset)] * 2
    specs = [make_spec(sim_dataset, 0, 20.0, None), make_spec(sim_dataset, 1, 20.0, None, overrides={"batch_size": 32})]
    with pytest.raises(BadInput, match="differ in batch_size"):
        training.train_many(BCSafe, specs, inputs)
    other_profile = make_spec(sim_dataset, 1, 20.0, None)
    other_profile.profile = profiles.get_profile("smoke")
    with pytest.raises(BadInput, match="one profile"):
        training.train_many(BCAll, [make_spec(sim_dataset, 0, 20.0, None), other_profile], inputs)
    with pytest.raises(BadInput, match="ensemble_size must be >= 1"):
        training.train_many(BCAll, [make_spec(sim_dataset, 0, 20.0, None)] * 2, inputs, ensemble_size=0)
    with pytest.raises(BadInput, match="one TrainInputs per TrainSpec"):
        training.train_many(BCAll, [make_spec(sim_dataset, 0, 20.0, None)], inputs)
