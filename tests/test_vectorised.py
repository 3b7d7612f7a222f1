"""Vectorised cells (issue 9): a seed/threshold group trained by one bench.training.train_many call stores,
per cell, the same episodes as running the cells one by one; the sweep's --vectorise uses it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import bench  # noqa: F401
from bench import results as store
from bench.cli import app, main
from bench.errors import BadInput
from _sim_data import run_group_and_alone
from bench.runner import CellSpec, run_cells, run_cells_safely

#: Tiny PreSa budget: 20 steps with small networks, so each cell trains in about a second.
TINY = (("batch_size", 8), ("hidden_sizes", [16, 16]), ("train_steps", 20))


def cell(dataset, device: str = "cpu", **kw) -> CellSpec:
    base = dict(task="BallRun", algorithm="presa", threshold=20.0, seed=0, profile="smoke", dataset=str(dataset),
                device=device, overrides=TINY)
    return CellSpec(**{**base, **kw})


def group(dataset, device: str = "cpu") -> list[CellSpec]:
    # Two seeds and two thresholds: each cell has its own feedback (labels depend on the threshold).
    return [cell(dataset, device, seed=0), cell(dataset, device, seed=1), cell(dataset, device, seed=1, threshold=40.0)]


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_vectorised_group_stores_same_episodes_as_single_cells(sim_dataset_path, tmp_path, monkeypatch, device):
    presa_cls = __import__("presa.algorithm", fromlist=["PreSa"]).PreSa
    specs = group(sim_dataset_path, device)
    vec, one = run_group_and_alone(monkeypatch, presa_cls, specs, tmp_path)
    sizes = lambda d: {json.loads(v)["ensemble_size"] for v in store.load_results(d)["info_json"]}  # noqa: E731
    assert sizes(tmp_path / "vec") == {3} and sizes(tmp_path / "one") == {1}
    assert (vec[["cell_id", "checkpoint", "episode"]] == one[["cell_id", "checkpoint", "episode"]]).all().all()
    assert vec["normalized_reward"].to_numpy() == pytest.approx(one["normalized_reward"].to_numpy(), rel=1e-5, abs=1e-6)
    assert vec["normalized_cost"].to_numpy() == pytest.approx(one["normalized_cost"].to_numpy(), rel=1e-5, abs=1e-6)
    # Each cell keeps its own identity: config hashes differ, and a rerun skips all of them.
    assert store.load_results(tmp_path / "vec").groupby("cell_id")["config_hash"].first().nunique() == 3
    assert [o.status for o in run_cells(specs, tmp_path / "vec", ensemble_size=3)] == ["skipped"] * 3


def test_one_member_learners_train_cells_one_by_one(sim_dataset_path, tmp_path, monkeypatch):
    """An algorithm whose learner has one member (the default cells_per_learner) gets one learner
    per cell from a run_cells group, and stores what run_cell stores."""
    import _sim_data

    _sim_data.register(monkeypatch)
    built = []
    original = _sim_data.LinearBC.learner.__func__

    def spy(cls, specs, inputs_list):
        built.append(len(specs))
        return original(cls, specs, inputs_list)

    monkeypatch.setattr(_sim_data.LinearBC, "learner", classmethod(spy))
    specs = [CellSpec(task="BallRun", algorithm="linear-bc", threshold=20.0, seed=s, profile="smoke", dataset=str(sim_dataset_path),
                      device="cpu") for s in (0, 1)]
    vec, one = run_group_and_alone(monkeypatch, _sim_data.LinearBC, specs, tmp_path)
    assert built == [1, 1, 1, 1]  # two cells in the group, then each alone
    assert vec.equals(one)


def test_run_cells_rejects_mixed_groups(sim_dataset_path, tmp_path):
    with pytest.raises(BadInput, match="differ only in seed and threshold"):
        run_cells([cell(sim_dataset_path), cell(sim_dataset_path, profile="quick")], tmp_path)


def test_sweep_vectorise_groups_pending_cells_and_resumes(sim_dataset_path, tmp_path, capsys):
    runner = CliRunner()
    args = ["sweep", "--tasks", "BallRun", "--algos", "presa", "--thresholds", "20", "--seeds", "0,1",
            "--profile", "smoke", "--dataset", str(sim_dataset_path), "--results", str(tmp_path), "--device", "cpu",
            "--set", "batch_size=8", "--set", "hidden_sizes=[16,16]", "--set", "train_steps=20",
            "--executor", "local", "--workers", "1", "--vectorise", "--ensemble-size", "2"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "2 run" in first.output
    # Both cells were trained as one batch of 2 (PreSa records its ensemble size per cell).
    info = store.load_results(tmp_path).groupby("cell_id")["info_json"].first()
    assert len(info) == 2 and all(json.loads(row)["ensemble_size"] == 2 for row in info)
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "2 already done" in again.output
    code = main(args[:-1] + ["0"])
    err = capsys.readouterr().err
    assert code == 2 and "--ensemble-size" in err and err.strip().count("\n") == 0, err


def test_failed_group_records_a_failure_per_cell(sim_dataset_path, tmp_path, monkeypatch):
    from bench import training

    def boom(algorithm, specs, inputs_list, ensemble_size=None):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(training, "train_many", boom)
    outcomes = run_cells_safely([cell(sim_dataset_path, seed=0), cell(sim_dataset_path, seed=1)], tmp_path)
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert all("out of memory" in o.error for o in outcomes)
    assert len(store.load_failures(tmp_path)) == 2
