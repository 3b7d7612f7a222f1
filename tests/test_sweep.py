"""Sweeps: grid expansion, YAML configs, resume, failures, SIGKILL mid-sweep, submitit, make target."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import _sim_data
import bench  # noqa: F401
from bench import results as store
from bench import sweep as sweeps
from bench.cli import app, main
from bench.errors import BadInput, DatasetError

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
runner = CliRunner()


@pytest.fixture(autouse=True)
def _test_algorithms(monkeypatch):
    _sim_data.register(monkeypatch)


def grid(dataset, **kw) -> sweeps.SweepConfig:
    base = dict(tasks=["BallRun"], algorithms=["linear-bc"], thresholds=[10.0, 20.0], seeds=[0, 1], profile="smoke",
                dataset=str(dataset), device="cpu", workers=2)
    return sweeps.SweepConfig(**{**base, **kw})


def test_expand_grid_with_task_thresholds_and_groups(sim_dataset_path):
    cells = sweeps.expand(grid(sim_dataset_path, tasks=["BallRun", "bullet"], thresholds=[], seeds=[0, 10, 20]))
    assert len(cells) == 8 * 3 * 3  # BallRun once, though named twice
    assert {c.threshold for c in cells} == {10.0, 20.0, 40.0}
    assert all(c.algorithm_path == "_sim_data:LinearBC" for c in cells)
    sg = sweeps.expand(grid(sim_dataset_path, tasks=["PointGoal1"], thresholds=[], seeds=[0]))
    assert [c.threshold for c in sg] == [20.0, 40.0, 80.0]
    assert len(sweeps.task_names(["paper"])) == 29


def test_yaml_configs_load_and_reject_unknown_keys(tmp_path):
    for name in ("smoke", "bullet", "paper", "ballcircle"):
        cfg = sweeps.load_sweep_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg.algorithms and cfg.seeds and cfg.profile in ("smoke", "quick", "paper")
    paper = sweeps.load_sweep_config(ROOT / "configs" / "paper.yaml")
    assert len(sweeps.task_names(paper.tasks)) == 29 and paper.seeds == [0, 10, 20] and paper.profile == "paper"
    assert "presa" in paper.algorithms and len(paper.algorithms) > 1
    # every algorithm the configs name is registered: the paper grid expands fully
    assert len(sweeps.expand(paper)) == 29 * 3 * 3 * len(paper.algorithms)
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [BallRun]\nseed: [0]\n")
    with pytest.raises(BadInput, match="unknown key.*seed"):
        sweeps.load_sweep_config(bad)


def test_missing_datasets_named_with_the_command(tmp_path):
    with pytest.raises(DatasetError) as info:
        sweeps.check_datasets(["BallRun", "AntRun"], str(tmp_path))
    message = str(info.value)
    assert "BallRun, AntRun" in message and "presa-bench data collect --task AntRun" in message and "\n" not in message


def test_local_sweep_failure_does_not_stop_others_and_rerun_resumes(sim_dataset_path, tmp_path):
    cfg = grid(sim_dataset_path, overrides={"linear-bc": {"fail_seed": 1}})
    summary = sweeps.run_sweep(cfg, tmp_path)
    assert (summary.counts.done, summary.counts.failed) == (2, 2)
    frame = store.load_results(tmp_path)
    assert sorted(frame["seed"].unique()) == [0] and frame["cell_id"].nunique() == 2
    failures = store.load_failures(tmp_path)
    assert len(failures) == 2 and all("told to fail" in f["error"] for f in failures)
    assert all("Traceback" in f["traceback"] for f in failures)
    again = sweeps.run_sweep(cfg, tmp_path)
    assert (again.counts.skipped, again.counts.done, again.counts.failed) == (2, 0, 2), "finished cells are not rerun"


KILL_DRIVER = """
import sys
sys.path.insert(0, {tests!r})
import bench, _sim_data
from bench import algorithms
algorithms.REGISTRY.update(_sim_data.TEST_ALGORITHMS)
from bench.cli import main
if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_mid_sweep_then_rerun_gives_every_cell_exactly_once(sim_dataset_path, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(KILL_DRIVER.format(tests=str(TESTS)))
    results = tmp_path / "results"
    argv = [sys.executable, str(driver), "sweep", "--tasks", "BallRun", "--algos", "linear-bc", "--thresholds", "10,20,40",
            "--seeds", "0,1", "--profile", "smoke", "--dataset", str(sim_dataset_path), "--results", str(results),
            "--workers", "2", "--device", "cpu", "--set", "sleep=0.004"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    cells = results / "meta"  # the meta file is written last: a cell is done when it is there
    deadline = time.time() + 120
    while time.time() < deadline and len(list(cells.glob("*.parquet"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, mid-sweep
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.parquet")}
    assert 2 <= len(before) < 6, "the kill must land part way through the sweep"
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(before)} already done" in rerun.stdout
    files = sorted(cells.glob("*.parquet"))
    assert len(files) == 6
    for table in ("episodes", "curves", "meta"):
        for f in sorted((results / table).glob("*.parquet")):
            pq.read_table(f)  # every file is a complete parquet file
    for name, mtime in before.items():
        assert (cells / name).stat().st_mtime_ns == mtime, f"finished cell {name} was rerun"
    frame = store.load_results(results)
    assert frame.groupby("cell_id").size().tolist() == [4] * 6  # each cell exactly once (4 smoke episodes)
    assert len(pd.read_parquet(results / "episodes")) == 6 * 4  # orphans of the killed cells were overwritten
    assert not list(results.glob("*/.*.tmp")) and not list(results.glob("failures/*.json"))


def test_submitit_local_executor_runs_two_cell_grid(sim_dataset_path, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    cfg = grid(sim_dataset_path, thresholds=[20.0], executor="submitit-local", overrides={"linear-bc": {"fail_seed": 1}},
               slurm={"timeout_min": 5})
    summary = sweeps.run_sweep(cfg, tmp_path)
    assert (summary.counts.done, summary.counts.failed) == (1, 1)
    failed = summary.failures[0]
    assert "s1__smoke__none__o-" in failed.cell_id and "told to fail" in failed.error  # --set fail_seed names the cell
    assert store.load_results(tmp_path)["seed"].unique().tolist() == [0]
    assert list((tmp_path / "submitit").rglob("*.out")), "submitit logs are kept with the results"


def test_sweep_cli_smoke_config_then_report(sim_dataset_path, tmp_path):
    """configs/smoke.yaml (the reproduce-paper smoke profile) with the test algorithm and dataset."""
    results = tmp_path / "r"
    argv = ["sweep", "--config", str(ROOT / "configs" / "smoke.yaml"), "--tasks", "BallRun", "--algos", "linear-bc",
            "--dataset", str(sim_dataset_path), "--results", str(results), "--workers", "1", "--device", "cpu"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert "1 cells: 1 run" in result.output  # smoke.yaml: threshold 20, seed 0
    report = runner.invoke(app, ["report", "--results", str(results), "--reps", "200"])
    assert report.exit_code == 0, report.output
    assert "BallRun" in report.output and (results / "report" / "table.md").is_file()


def test_sweep_cli_bad_inputs_exit_2(sim_dataset_path, tmp_path, capsys):
    for argv, message in (
        (["sweep", "--tasks", "BallRun", "--algos", "nope"], "unknown algorithm"),
        (["sweep", "--tasks", "BallRun", "--algos", "linear-bc", "--seeds", "a"], "--seeds needs int"),
        (["sweep", "--tasks", "BallRun", "--algos", "linear-bc", "--executor", "k8s"], "unknown executor"),
        (["sweep", "--config", str(tmp_path / "none.yaml")], "does not exist"),
    ):
        code = main(argv + ["--dataset", str(sim_dataset_path), "--results", str(tmp_path)])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.strip().count("\n") == 0, err


def test_make_reproduce_paper_uses_profile_config():
    out = subprocess.run(["make", "-n", "-W", ".venv/.presa-installed", "reproduce-paper", "PROFILE=bullet", "EXECUTOR=slurm"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "sweep --config configs/bullet.yaml --results results/bullet --executor slurm" in out
    assert "report --results results/bullet --out results/bullet/report" in out
    # the first stage obtains missing datasets (download, else collect) on the same executor
    fetch = [line for line in out.splitlines() if "--fetch-only" in line]
    assert len(fetch) == 1 and "--executor slurm" in fetch[0] and "--fetch-missing --collect-profile quick" in fetch[0]
    assert out.index("--fetch-only") < out.index("report --results")


def test_vectorise_defaults_to_on_for_gpu_cells_only() -> None:
    import torch

    from bench.sweep import SweepConfig, wants_vectorise

    assert wants_vectorise(SweepConfig(device="cuda")) is True
    assert wants_vectorise(SweepConfig(device="cuda:1")) is True
    assert wants_vectorise(SweepConfig(device="cpu")) is False
    assert wants_vectorise(SweepConfig(device="cuda", vectorise=False)) is False
    assert wants_vectorise(SweepConfig(device="cpu", vectorise=True)) is True
    assert wants_vectorise(SweepConfig(executor="slurm", slurm={"gpus_per_node": 1})) is True
    assert wants_vectorise(SweepConfig(executor="slurm", slurm={})) is False
    assert wants_vectorise(SweepConfig(executor="slurm", device="cpu", slurm={"gpus_per_node": 1})) is False
    assert wants_vectorise(SweepConfig(device="auto")) is torch.cuda.is_available()


def _budgets(tmp_path: Path) -> Path:
    path = tmp_path / "budgets.yaml"
    path.write_text(
        "eval_points: 4\nlog_points: 8\ncap_key: cpu_max_steps\n"
        "algorithms:\n  linear-bc:\n    steps_key: steps\n    unit: transitions\n"
        "    paper: {steps: 1000, batch: 256, source: test}\n"
        "protocols:\n  tiny: {linear-bc: 40}\n"
    )
    return path


def test_budget_protocol_sets_steps_states_itself_and_spreads_evaluations(sim_dataset_path, tmp_path):
    from bench.runner import resolve

    budgets = str(_budgets(tmp_path))
    for protocol, steps in (("tiny", 40), ("equal-steps=120", 120), ("paper", 1000)):
        cells = sweeps.expand(grid(sim_dataset_path, budget=protocol, budgets_file=budgets, thresholds=[10.0], seeds=[0]))
        cell = resolve(cells[0])
        assert cell.config["algorithm_config"]["steps"] == steps
        assert cell.config["budget"]["protocol"] == protocol and cell.config["budget"]["planned_steps"] == steps
        assert cell.config["budget"]["paper_steps"] == 1000 and cell.config["budget"]["paper_batch"] == 256
        # evaluations and logs spread over the budget (4 and 8 per run), whatever the profile says
        assert cell.profile.eval_every == steps // 4 and cell.profile.log_every == steps // 8
        assert cell.key.cell_id.endswith("__b-" + protocol.replace("=", "-"))
    plain = resolve(sweeps.expand(grid(sim_dataset_path, thresholds=[10.0], seeds=[0]))[0])
    assert "budget" not in plain.config and not plain.key.cell_id.endswith("cpu-hour")  # no protocol: ids as before


def test_budget_protocol_bad_inputs(sim_dataset_path, tmp_path):
    budgets = str(_budgets(tmp_path))
    for kw, message in (
        (dict(budget="nope"), "unknown budget protocol 'nope': choose paper, equal-steps=N, tiny"),
        (dict(budget="equal-steps=x"), "equal-steps needs a positive integer"),
        (dict(budget="tiny", overrides={"linear-bc": {"steps": 5}}), "sets steps of linear-bc; remove it"),
        (dict(budget="tiny", algorithms=["linear-bc", "linear-bc-fb"]), "linear-bc-fb has no entry in configs/budgets.yaml"),
    ):
        with pytest.raises(BadInput, match=re.escape(message)):
            sweeps.expand(grid(sim_dataset_path, budgets_file=budgets, **kw))


def test_shipped_budget_table_covers_every_registered_algorithm():
    from bench.algorithms import algorithm_names

    budgets = sweeps.load_budgets()
    for name in (n for n in algorithm_names() if n not in _sim_data.TEST_ALGORITHMS):
        for protocol in ("paper", "equal-steps=100", *budgets["protocols"]):
            overrides, record = sweeps.budget_for(protocol, name, budgets)
            assert record["paper_steps"] and overrides[record["steps_key"]] == record["planned_steps"] > 0
