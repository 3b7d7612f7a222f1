"""Logs a person can follow: an estimate before a cell, plain lines off a terminal, TensorBoard curves;
none of them changes a number."""

from __future__ import annotations

import io
import re

import pytest
from typer.testing import CliRunner

import _sim_data
import bench  # noqa: F401
from bench import live
from bench import results as store
from bench.cli import app
from bench.commands.run import rounded
from bench.runner import CellSpec, resolve

runner = CliRunner()


@pytest.fixture(autouse=True)
def _test_algorithms(monkeypatch):
    _sim_data.register(monkeypatch)


def test_run_off_a_terminal_logs_lines_and_tensorboard(sim_dataset_path, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["run", "--task", "BallRun", "--algo", "linear-bc", "--profile", "smoke", "--dataset", str(sim_dataset_path),
            "--results", str(tmp_path / "a"), "--device", "cpu", "--log", "tensorboard"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "estimate: 300 steps of linear-bc; no measured speed of linear-bc here yet" in out
    lines = re.findall(r"train linear-bc step (\d+)/300 \(\d+%\)  [\d.e+]+ steps/s  loss [\d.e+-]+  elapsed \S+  ETA \S+", out)
    assert [int(s) for s in lines] == list(range(50, 301, 50))  # one line per log interval (smoke: every 50 steps)
    assert out.index("estimate:") < out.index("step 50/300")
    # the std is labelled, with the episodes it is over; info values are rounded
    assert re.search(r"\d\.\d{3} \(std \d\.\d{3}\)", out) and "std: their standard deviation" in out
    assert re.search(r"final_loss \d\.\d{1,3}(e-?\d+)?,?", out)

    cell_id = "BallRun__linear-bc__k20__s0__smoke__none"
    events = EventAccumulator(str(tmp_path / "a" / "tensorboard" / cell_id))
    events.Reload()
    curves = store.load_curves(tmp_path / "a")
    train = curves[(curves["source"] == "train") & (curves["metric"] == "loss")].sort_values("step")
    logged = events.Scalars("train/loss")
    assert [e.step for e in logged] == train["step"].tolist()
    assert [e.value for e in logged] == pytest.approx(train["value"].tolist(), rel=1e-6)

    # the next estimate uses the store's own measurement of this method on this device
    cell = resolve(CellSpec(task="BallRun", algorithm="linear-bc", threshold=10.0, profile="smoke",
                            dataset=str(sim_dataset_path), device="cpu"))
    estimate = live.estimate(cell.config, 300, tmp_path / "a")
    assert estimate.steps == 300 and estimate.steps_per_second > 0
    assert "median of 1 stored run(s) of linear-bc on cpu" in estimate.line("linear-bc")


def test_estimate_from_the_speeds_table_scales_with_batch_and_cpu_caps(tmp_path):
    config = {"algorithm": "bc-safe", "device": "cpu", "algorithm_config": {"update_steps": None, "batch_size": 1024}}
    estimate = live.estimate(config, 10_000, tmp_path / "empty")
    assert estimate.steps == 10_000 and "scaled from batch 512 to 1024" in estimate.source
    table = live.estimate({**config, "algorithm_config": {"update_steps": None, "batch_size": 512}}, 10_000, tmp_path)
    assert estimate.steps_per_second == pytest.approx(table.steps_per_second / 2)
    capped = live.estimate({"algorithm": "bcq-lag", "device": "cpu",
                            "algorithm_config": {"update_steps": 5000, "batch_size": 512, "cpu_max_steps": 1000}}, 10_000, tmp_path)
    assert capped.steps == 1000
    assert "about" in capped.line("bcq-lag") and "of training" in capped.line("bcq-lag")


def test_plain_log_line_has_step_speed_metrics_elapsed_and_eta():
    ticks = iter([100.0, 160.0, 170.0])
    stream = io.StringIO()
    log = live.PlainLog("train x", 1000, stream, clock=lambda: next(ticks))
    log(250, {"step": 250, "loss": 0.5, "lambda": 1.25, "steps_per_second": 5.0})
    log(250, {"source": "eval", "normalized_reward": 0.25, "normalized_cost": 1.5})
    assert stream.getvalue().splitlines() == [
        "train x step 250/1000 (25%)  5 steps/s  loss 0.5  lambda 1.25  elapsed 1m00s  ETA 2m30s",
        "train x eval at step 250: normalized_reward 0.250, normalized_cost 1.500",
    ]


def test_info_values_are_rounded_and_a_bad_log_sink_is_refused(capsys, tmp_path):
    from bench.cli import main

    assert rounded([1.4910640716552734, 2.0048999786376953]) == "[1.491, 2.005]"
    assert rounded({"a": 0.123456789, "b": 3}) == "{a: 0.1235, b: 3}"
    code = main(["run", "--task", "BallRun", "--log", "wandb", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--log wandb: unknown sink" in err and err.strip().count("\n") == 0


def test_online_evaluations_reach_the_live_log_and_tensorboard_and_no_number_changes(sim_dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from bench import training
    from bench.interfaces import TrainInputs, TrainSpec
    from bench.profiles import Profile
    from bench.tasks import get_task

    profile = Profile("tiny", train_steps=20, warmup_fraction=0.3, eval_episodes=1, eval_every=10, eval_episodes_during=1,
                      log_every=5, checkpoint_every=100, num_queries=0)
    seen: list[tuple[int, str]] = []
    sink = live.TensorBoardSink(tmp_path / "tb")
    log = live.fan_out(lambda step, metrics: seen.append((step, metrics.get("source", "train"))), sink,
                       live.PlainLog("train linear-bc", 20, io.StringIO()))
    spec = TrainSpec(task=get_task("BallRun"), threshold=20.0, seed=0, profile=profile, log=log)
    inputs = TrainInputs(data=sim_dataset.learner_view())
    out = training.train(_sim_data.LinearBC, spec, inputs)
    sink.close()
    assert [s for s, source in seen if source == "eval"] == [10, 20]
    assert [s for s, source in seen if source == "train"] == [5, 10, 15, 20]
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    stored = [row for row in out.curve if row["source"] == "eval"]
    assert [(e.step, e.value) for e in events.Scalars("eval/normalized_reward")] == [
        (row["step"], pytest.approx(row["normalized_reward"], rel=1e-6)) for row in stored]
    # the same run with no live log at all: bit-identical curve (train and eval rows) and policy
    quiet = training.train(_sim_data.LinearBC, TrainSpec(task=get_task("BallRun"), threshold=20.0, seed=0, profile=profile), inputs)
    assert quiet.curve == out.curve
    assert (quiet.policy.weights == out.policy.weights).all()
