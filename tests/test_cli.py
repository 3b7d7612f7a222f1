"""The CLI: help, tasks, data info, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import bench  # noqa: F401
from bench.cli import app, main

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("tasks", "data"):
        assert command in result.output


def test_help_is_fast_and_imports_nothing_heavy():
    code = (
        "import sys; from bench.cli import main; main(['--help']); "
        "heavy = [m for m in ('torch', 'matplotlib', 'pybullet', 'safety_gymnasium', 'dsrl', 'osrl') if m in sys.modules]; "
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_tasks_table():
    result = runner.invoke(app, ["tasks"])
    assert result.exit_code == 0, result.output
    assert "BallCircle" in result.output and "CarButton1" in result.output
    assert "easysparse" not in result.output
    result = runner.invoke(app, ["tasks", "--all"])
    assert "easysparse" in result.output and "unsupported" in result.output


def test_data_info_and_plot(sim_dataset_path, tmp_path):
    plot = tmp_path / "scatter.png"
    result = runner.invoke(app, ["data", "info", "--task", "BallRun", "--dataset", str(sim_dataset_path), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "40" in result.output and "cost <= 20" in result.output
    assert plot.stat().st_size > 1000


def _run_main(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err


def test_unknown_task_exit_2_one_line(capsys):
    code, err = _run_main(["data", "info", "--task", "BallCirle"], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "did you mean BallCircle" in err and "Traceback" not in err


def test_missing_dataset_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DSRL_DATASET_DIR", str(tmp_path))
    code, err = _run_main(["data", "info", "--task", "PointGoal1"], capsys)  # no SG dataset is shipped
    assert code == 2 and "presa-bench data collect --task PointGoal1" in err


def test_corrupt_dataset_exit_2_and_debug_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"\x89HDF\r\n garbage")
    code, err = _run_main(["data", "info", "--task", "BallRun", "--dataset", str(bad)], capsys)
    assert code == 2 and "not a readable HDF5" in err and "Traceback" not in err
    code, err = _run_main(["--debug", "data", "info", "--task", "BallRun", "--dataset", str(bad)], capsys)
    assert code == 2 and "Traceback" in err


def test_nan_dataset_exit_2(sim_dataset_path, tmp_path, capsys):
    import h5py

    bad = tmp_path / "nan.hdf5"
    with h5py.File(sim_dataset_path) as src, h5py.File(bad, "w") as dst:
        for k in src:
            v = src[k][()]
            if k == "actions":
                v = v.copy()
                v[5, 0] = np.nan
            dst[k] = v
    code, err = _run_main(["data", "info", "--task", "BallRun", "--dataset", str(bad)], capsys)
    assert code == 2 and "'actions' has 1 NaN/inf" in err


def test_usage_error_exit_2(capsys):
    code, _ = _run_main(["tasks", "--no-such-flag"], capsys)
    assert code == 2


@pytest.mark.parametrize("argv", [["--help"], ["tasks", "--help"], ["data", "info", "--help"]])
def test_every_command_has_help(argv):
    result = runner.invoke(app, argv)
    assert result.exit_code == 0 and "Usage" in result.output
