"""The CLI: help, tasks, data info, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import bench  # noqa: F401
from bench import cli
from bench.cli import COMMAND_MODULES, _register, app, main

runner = CliRunner()


#: Every command of `presa-bench` (a command module that does not import must not drop one silently).
COMMANDS = ["algos", "data", "evaluate", "feedback", "label", "report", "results", "run", "sweep", "tasks"]


def test_registered_commands_are_all_there():
    import typer

    assert sorted(typer.main.get_command(app).commands) == COMMANDS
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_a_command_module_that_does_not_import_fails_registration(module, monkeypatch):
    import typer

    monkeypatch.setitem(sys.modules, f"bench.commands.{module}", None)  # as if its file were gone
    with pytest.raises(ImportError, match=f"bench.commands.{module}"):
        _register(typer.Typer())


def test_a_command_module_with_a_broken_import_fails_the_cli(tmp_path, monkeypatch):
    import typer

    import bench.commands

    (tmp_path / "broken.py").write_text("import no_such_dependency_of_presa_bench\n\ndef register(app):\n    pass\n")
    monkeypatch.setattr(bench.commands, "__path__", [*bench.commands.__path__, str(tmp_path)])
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*COMMAND_MODULES, "broken"))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_of_presa_bench"):
        _register(typer.Typer())
    sys.modules.pop("bench.commands.broken", None)
    # the console entry point itself fails (non-zero, the module named), not a CLI without the command
    code = "import sys; sys.modules['bench.commands.sweep'] = None; from bench.cli import main; main(['--help'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "bench.commands.sweep" in proc.stderr


def test_run_help_shows_its_options():
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--task", "--algo", "--profile", "--set", "--num-queries", "--labels", "--results", "--device"):
        assert option in result.output


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


# ---- `run --algo presa` end to end through the CLI, on the shipped BallCircle dataset -------------


def _shipped_ballcircle():  # type: ignore[no-untyped-def]
    from bench.data import find_dataset
    from bench.errors import BadInput
    from bench.tasks import get_task

    try:
        return find_dataset(get_task("BallCircle"))
    except BadInput:
        pytest.skip("no BallCircle dataset here")


@pytest.mark.slow
def test_cli_run_presa_end_to_end_stores_a_readable_result(tmp_path, capsys):
    import json

    from bench import results as store

    _shipped_ballcircle()
    argv = ["run", "--task", "BallCircle", "--algo", "presa", "--profile", "smoke", "--device", "cpu",
            "--results", str(tmp_path), "--num-queries", "200", "--set", "train_steps=20", "--set", "hidden_sizes=32,32"]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "norm. reward" in out
    frame = store.load_results(tmp_path)
    assert len(frame) and set(frame["algorithm"]) == {"presa"} and set(frame["task"]) == {"BallCircle"}
    assert set(frame["checkpoint"]) >= {"final"}
    assert np.isfinite(frame["normalized_reward"]).all() and np.isfinite(frame["normalized_cost"]).all()
    meta = store.load_meta(tmp_path)
    assert len(meta) == 1 and int(meta["steps"].iloc[0]) == 20 and int(meta["steps_this_process"].iloc[0]) == 20
    config = json.loads(meta["config_json"].iloc[0])
    assert config["algorithm_config"]["hidden_sizes"] == [32, 32] and config["feedback"]["num_queries"] == 200
    assert json.loads(meta["feedback_provenance_json"].iloc[0])["source"] == "synthetic"
    assert not store.load_failures(tmp_path)


@pytest.mark.parametrize(
    "algo, setting, message",
    [
        ("presa", "hidden_size=32", "bad --set hidden_size=32 for presa: unknown setting; known settings: "),
        ("presa", "hidden_sizes=32,wide", "bad --set hidden_sizes=32,wide for presa: expected a list of whole numbers"),
        ("bc-all", "a_hidden_sizes=32,wide", "bad --set a_hidden_sizes=32,wide for bc-all: expected a list of whole numbers"),
        ("presa", "feedback.flip_prob=lots", "bad --set feedback.flip_prob=lots for the feedback teacher: expected a number"),
        # the one range rule of every config (bench.settings.check_range)
        ("bc-all", "batch_size=0", "bad --set batch_size=0 for bc-all: expected a whole number >= 1"),
        ("bc-all", "update_steps=-5", "bad --set update_steps=-5 for bc-all: expected a whole number >= 1"),
        ("bc-safe", "actor_lr=nan", "bad --set actor_lr=nan for bc-safe: expected a finite number"),
        ("bc-all", "a_hidden_sizes=64,0", "bad --set a_hidden_sizes=64,0 for bc-all: expected a whole number >= 1"),
        ("presa", "lr=inf", "bad --set lr=inf for presa: expected a finite number"),
        ("presa", "lr=0", "bad --set lr=0 for presa: expected a learning rate > 0"),
        ("cpq", "critic_lr=-0.5", "bad --set critic_lr=-0.5 for cpq: expected a learning rate > 0"),
        ("cdt", "num_layers=0", "bad --set num_layers=0 for cdt: expected a whole number >= 1"),
    ],
)
def test_cli_run_bad_setting_exit_2_one_line(tmp_path, capsys, algo, setting, message):
    _shipped_ballcircle()
    code = main(["run", "--task", "BallCircle", "--algo", algo, "--profile", "smoke", "--device", "cpu",
                 "--results", str(tmp_path), "--set", setting])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and err.strip().count("\n") == 0 and "Traceback" not in err
    from bench import results as store

    assert store.load_results(tmp_path).empty  # refused before any training
