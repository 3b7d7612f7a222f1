"""Hostile or absurd input is refused with one line and exit 2, before anything runs on it: a
pickled checkpoint payload, absurd dataset values, settings out of range, a feedback size beyond
memory."""

from __future__ import annotations

import builtins
import re

import h5py
import numpy as np
import pytest

import bench  # noqa: F401
from bench.cli import main
from bench.data import load_dataset
from bench.errors import BadInput, DatasetError
from bench.tasks import get_task
from tests.test_data import _arrays, _rewrite

RUN = ["run", "--task", "BallRun", "--algo", "linear-bc", "--threshold", "20", "--profile", "smoke", "--device", "cpu"]


@pytest.fixture
def _linear_bc(monkeypatch):
    from tests import _sim_data

    _sim_data.register(monkeypatch)


class _Payload:
    """Unpickling this creates ``marker``: proof that a load ran code from the file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (builtins.open, (self.marker, "w"))


def _poisoned(path, marker) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"version": 1, "seed": 0, "learner": _Payload(str(marker))}, path)


def test_a_checkpoint_with_a_pickled_payload_is_refused_unrun(_linear_bc, sim_dataset_path, tmp_path, capsys):
    from bench import results as store
    from bench.runner import CONFIG_HASH_FILE, CellSpec, resolve

    cell = resolve(CellSpec(task="BallRun", algorithm="linear-bc", threshold=20.0, seed=0, profile="smoke",
                            dataset=str(sim_dataset_path), device="cpu"))
    directory = store.checkpoint_dir(tmp_path, cell.key)
    _poisoned(directory / "train.pt", tmp_path / "PAYLOAD-RAN")
    (directory / CONFIG_HASH_FILE).write_text(cell.config_hash)  # a store copied from someone else
    code = main(RUN + ["--dataset", str(sim_dataset_path), "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert not (tmp_path / "PAYLOAD-RAN").exists()
    assert "train.pt" in err and "not loaded" in err and err.strip().count("\n") == 0


def test_every_loader_of_a_received_torch_file_refuses_a_payload(tmp_path):
    from baselines import osrl_common
    from bench import collect

    poisoned = tmp_path / "models.pt"
    _poisoned(poisoned, tmp_path / "PAYLOAD-RAN")
    with pytest.raises(BadInput, match="not loaded"):
        osrl_common.torch_load(poisoned)  # safe_rlhf's saved models

    class Run:
        run_dir = tmp_path

    _poisoned(tmp_path / "state.pt", tmp_path / "PAYLOAD-RAN")
    with pytest.raises(BadInput, match="not loaded"):
        collect._saved_steps(Run())  # type: ignore[arg-type]
    assert not (tmp_path / "PAYLOAD-RAN").exists()


@pytest.mark.parametrize(
    "key, row, col, value, message",
    [
        ("actions", 17, 1, 1e30, "'actions' value 1e+30 at index (17, 1) is of magnitude above 1e+06"),
        ("actions", 3, 0, -5.0, "'actions' value -5 at index (3, 0) is far outside the env's action bounds"),
        ("observations", 40, 2, 3e7, "'observations' value 3e+07 at index (40, 2) is of magnitude above 1e+06"),
        ("rewards", 9, None, -2e9, "'rewards' value -2e+09 at index 9 is of magnitude above 1e+06"),
        ("costs", 11, None, 1e12, "'costs' value 1e+12 at index 11 is of magnitude above 1e+06"),
    ],
)
def test_finite_but_absurd_values_are_refused(sim_dataset_path, tmp_path, key, row, col, value, message):
    arrays = _arrays(sim_dataset_path)
    changed = arrays[key].copy()
    changed[(row, col) if col is not None else row] = value
    path = _rewrite(sim_dataset_path, tmp_path / "absurd.hdf5", **{key: changed})
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_dataset(path, get_task("BallRun"))


@pytest.mark.parametrize("kind", ["scalar", "group"])
def test_a_key_stored_as_a_scalar_or_a_group_exit_2_one_line(sim_dataset_path, tmp_path, capsys, kind):
    path = _rewrite(sim_dataset_path, tmp_path / "odd.hdf5", observations=None)
    with h5py.File(path, "a") as f:
        if kind == "scalar":
            f.create_dataset("observations", data=np.float32(1.0))
        else:
            f.create_group("observations").create_dataset("x", data=np.zeros(3))
    code = main(["data", "info", "--task", "BallRun", "--dataset", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"'observations' is a {kind}" in err and err.strip().count("\n") == 0


@pytest.mark.parametrize("command", ["run", "label"])
def test_a_feedback_size_beyond_memory_is_refused_before_allocating(
    _linear_bc, sim_dataset_path, tmp_path, capsys, monkeypatch, command
):
    from bench.feedback import segments

    monkeypatch.setattr(segments, "available_memory", lambda: 2**20)  # a machine with 1 MiB free
    if command == "run":
        argv = ["run", "--task", "BallRun", "--algo", "linear-bc-fb", "--threshold", "20", "--profile", "smoke",
                "--device", "cpu", "--num-queries", "50000", "--results", str(tmp_path)]
    else:
        argv = ["label", "serve", "--task", "BallRun", "--queries", "50000", "--port", "0", "--out", str(tmp_path / "l.csv")]
    code = main(argv + ["--dataset", str(sim_dataset_path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "50000 queries" in err and "GiB of memory" in err and "ask for fewer queries" in err
    assert err.strip().count("\n") == 0


def test_zero_warmup_and_sentinel_defaults_stay_allowed():
    from bench.settings import check_range

    assert check_range("warmup_lr", 0.0, 0.0) is None and check_range("lr_warmup_steps", 0, 500) is None
    assert check_range("train_steps", 0, 0) is None and check_range("warmup_steps", -1, -1) is None
    assert check_range("dropout", 0.0, 0.25) is None


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_threshold_must_be_finite(_linear_bc, sim_dataset_path, tmp_path, capsys, value):
    code = main(["run", "--task", "BallRun", "--algo", "linear-bc", "--threshold", value, "--profile", "smoke",
                 "--device", "cpu", "--dataset", str(sim_dataset_path), "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "not finite" in err and err.strip().count("\n") == 0
    code = main(["label", "serve", "--task", "BallRun", "--threshold", value, "--dataset", str(sim_dataset_path)])
    err = capsys.readouterr().err
    assert code == 2 and "not finite" in err, err


@pytest.mark.parametrize(
    "seeds, message",
    [("[1.5]", "seeds.0: Input should be a valid integer, got a number with a fractional part (got 1.5)"),
     ("[abc]", "seeds.0: Input should be a valid integer, unable to parse string as an integer (got 'abc')")],
)
def test_sweep_yaml_is_type_checked_one_line_per_error(tmp_path, capsys, seeds, message):
    config = tmp_path / "grid.yaml"
    config.write_text(f"tasks: [BallRun]\nalgorithms: [bc-all]\nseeds: {seeds}\nworkers: two\n")
    code = main(["sweep", "--config", str(config), "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 2 and message in err[0] and str(config) in err[0]
    assert "workers: Input should be a valid integer" in err[1]
