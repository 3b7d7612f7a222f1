"""One cell end to end (smoke profile, real simulator, test-only LinearBC) and the `run` command."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pytest
from typer.testing import CliRunner

import _sim_data
import bench  # noqa: F401
from bench import results as store
from bench.cli import app, main
from bench.errors import BadInput
from bench.feedback import FeedbackView
from bench.runner import CellSpec, parse_overrides, resolve, run_cell

runner = CliRunner()


@pytest.fixture(autouse=True)
def _test_algorithms(monkeypatch):
    _sim_data.register(monkeypatch)


def spec(dataset, **kw) -> CellSpec:
    base = dict(task="BallRun", algorithm="linear-bc", threshold=20.0, seed=0, profile="smoke", dataset=str(dataset), device="cpu")
    return CellSpec(**{**base, **kw})


def test_run_cell_stores_evaluated_cell_and_skips_rerun(sim_dataset_path, tmp_path):
    outcome = run_cell(spec(sim_dataset_path), tmp_path)
    assert outcome.status == "done" and outcome.path.is_file()
    frame = store.load_results(tmp_path, meta=True)
    final = frame[frame["checkpoint"] == "final"]
    assert len(final) == 4  # the smoke profile's eval_episodes
    assert final["length"].eq(100).all()  # real BallRun episodes
    assert final["normalized_reward"].mean() == pytest.approx(outcome.summary["final"]["normalized_reward"])
    assert frame["steps"].iloc[0] == 300 and frame["dataset_path"].iloc[0] == str(sim_dataset_path)
    assert frame["feedback"].iloc[0] == "none"
    again = run_cell(spec(sim_dataset_path), tmp_path)
    assert again.status == "skipped"
    changed = run_cell(spec(sim_dataset_path, overrides=(("lr", 0.1),)), tmp_path)
    assert changed.status == "done", "a different config must not be skipped"
    other = run_cell(spec(sim_dataset_path, overrides=(("lr", 0.2),)), tmp_path)
    # --set runs are stored side by side, each under its own id; the plain cell keeps its old id
    ids = {outcome.cell_id, changed.cell_id, other.cell_id}
    assert len(ids) == 3 and outcome.cell_id == "BallRun__linear-bc__k20__s0__smoke__none"
    assert changed.cell_id.startswith(outcome.cell_id + "__o-") and len(changed.cell_id) == len(outcome.cell_id) + 12
    meta = store.load_meta(tmp_path)
    assert set(meta["cell_id"]) == ids and len(meta) == 3
    episodes = store.load_results(tmp_path)
    assert episodes.groupby("cell_id").size().to_dict() == {i: len(frame) for i in ids}
    assert run_cell(spec(sim_dataset_path, overrides=(("lr", 0.1),)), tmp_path).status == "skipped"


def test_same_seed_same_numbers_other_seed_differs(sim_dataset_path, tmp_path):
    a = run_cell(spec(sim_dataset_path), tmp_path / "a")
    b = run_cell(spec(sim_dataset_path), tmp_path / "b")
    c = run_cell(spec(sim_dataset_path, seed=1), tmp_path / "c")
    assert a.summary == b.summary
    assert a.summary["final"]["reward"] != c.summary["final"]["reward"]


def test_killed_run_resumes_to_identical_numbers(sim_dataset_path, tmp_path):
    uninterrupted = run_cell(spec(sim_dataset_path), tmp_path / "full")

    def die(step, metrics):
        if step == 150:  # after the checkpoint at step 100
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cell(spec(sim_dataset_path), tmp_path / "killed", on_log=die)
    cell = resolve(spec(sim_dataset_path))
    assert (store.checkpoint_dir(tmp_path / "killed", cell.key) / "train.pt").is_file()
    assert not store.cell_path(tmp_path / "killed", cell.key).exists()
    seen = []
    resumed = run_cell(spec(sim_dataset_path), tmp_path / "killed", on_log=lambda s, m: seen.append(s))
    assert seen[0] == 150, "the trainer must resume from the step-100 checkpoint"
    assert resumed.summary == uninterrupted.summary
    # steps/s of the resumed run: the 200 steps this process ran over this process's seconds
    meta = store.load_meta(tmp_path / "killed").iloc[0]
    assert meta["steps"] == 300 and meta["steps_this_process"] == 200
    assert meta["steps_per_second"] == pytest.approx(200 / meta["train_seconds"])
    assert store.load_meta(tmp_path / "full").iloc[0]["steps"] == 300
    columns = ["step", "source", "metric", "value"]
    curves = {name: store.load_curves(tmp_path / name)[columns].reset_index(drop=True) for name in ("full", "killed")}
    assert curves["full"].equals(curves["killed"]), "a resumed run stores the uninterrupted run's curve"


def test_stale_checkpoint_of_another_config_is_discarded(sim_dataset_path, tmp_path):
    def die(step, metrics):
        if step == 150:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cell(spec(sim_dataset_path, overrides=(("lr", 0.1),)), tmp_path, on_log=die)
    seen = []
    run_cell(spec(sim_dataset_path), tmp_path, on_log=lambda s, m: seen.append(s))
    assert seen[0] == 50, "a checkpoint of another config must never be resumed"


@dataclass
class FakeSettings:
    """Stands in for bench.feedback.FeedbackSettings (the feedback engineer's contract)."""

    segment_length: int = 20
    flip_probability: float = 0.0

    def __post_init__(self) -> None:
        BUILT.append(self)

    def validate(self) -> None:
        """The real settings check their values here; these are always valid."""

    def identity(self) -> dict[str, object]:
        return asdict(self)


BUILT: list[FakeSettings] = []


class FakeFeedbackSet:
    def __init__(self, n: int) -> None:
        self.n = n
        self.provenance = {"source": "fake", "dataset_hash": "abc"}

    def view(self) -> FeedbackView:
        pairs = np.zeros((self.n, 2), np.int64)
        return FeedbackView(20, pairs, pairs, np.zeros(self.n, np.float32), pairs[:, 0], pairs[:, 0],
                            np.ones(self.n, np.float32), provenance={"view": True})


def test_feedback_learner_gets_feedback_view_not_ground_truth(sim_dataset_path, tmp_path, monkeypatch):
    import bench.feedback

    calls = []

    def fake_feedback_for_run(task, dataset, threshold, seed, num_queries, cache_dir, settings=None, labels_file=None):
        calls.append(dict(task=task.name, threshold=threshold, seed=seed, num_queries=num_queries, cache_dir=cache_dir,
                          settings=settings, labels_file=labels_file))
        return FakeFeedbackSet(num_queries)

    monkeypatch.setattr(bench.feedback, "feedback_for_run", fake_feedback_for_run, raising=False)
    monkeypatch.setattr(bench.feedback, "FeedbackSettings", FakeSettings, raising=False)
    cell = spec(sim_dataset_path, algorithm="linear-bc-fb", num_queries=7, overrides=(("feedback.flip_probability", 0.1),))
    BUILT.clear()
    outcome = run_cell(cell, tmp_path)
    assert outcome.status == "done"
    assert len(BUILT) == 1, "the feedback settings are built once per cell (by resolve)"
    assert calls == [dict(task="BallRun", threshold=20.0, seed=0, num_queries=7, cache_dir=tmp_path / "feedback",
                          settings=FakeSettings(flip_probability=0.1), labels_file=None)]
    frame = store.load_results(tmp_path, meta=True)
    assert frame["feedback"].iloc[0].startswith("q7-")
    assert '"source":"fake"' in frame["feedback_provenance_json"].iloc[0] and '"view":true' in frame["feedback_provenance_json"].iloc[0]
    assert '"num_pairs":7' in frame["info_json"].iloc[0]  # the learner got the view
    assert '"flip_probability":0.1' in frame["config_json"].iloc[0]
    # default settings (no feedback.* override): None is passed, the defaults still enter the config hash
    run_cell(spec(sim_dataset_path, algorithm="linear-bc-fb", num_queries=7), tmp_path)
    assert calls[-1]["settings"] is None
    with pytest.raises(BadInput, match=r"bad --set feedback.nope=1 for the feedback teacher: unknown setting; known settings: flip_probability, segment_length"):
        resolve(spec(sim_dataset_path, algorithm="linear-bc-fb", overrides=(("feedback.nope", 1),)))


def test_the_feedback_split_enters_the_config_hash(sim_dataset_path):
    """Runs trained on the earlier split of segments must not be taken for runs on the split by episode."""
    from bench.feedback import SPLIT_BY

    cell = resolve(spec(sim_dataset_path, algorithm="linear-bc-fb", num_queries=7))
    assert cell.config["feedback"]["split"] == SPLIT_BY == "episode"


def test_defaults_middle_threshold_and_bad_inputs(sim_dataset_path):
    cell = resolve(CellSpec(task="BallRun", algorithm="linear-bc", dataset=str(sim_dataset_path)))
    assert cell.threshold == 20.0 and cell.profile.name == "quick"
    with pytest.raises(BadInput, match="key=value"):
        parse_overrides(["lr"])
    assert parse_overrides(["b=[1, 2]", "a=3e-4", "c=true"]) == (("a", 3e-4), ("b", [1, 2]), ("c", True))
    with pytest.raises(BadInput, match="unknown algorithm"):
        resolve(CellSpec(task="BallRun", algorithm="nope", dataset=str(sim_dataset_path)))
    with pytest.raises(BadInput, match="labels file"):
        resolve(CellSpec(task="BallRun", algorithm="linear-bc-fb", dataset=str(sim_dataset_path), labels_file="/no/such.json"))


def test_cli_run_smoke_prints_result_table(sim_dataset_path, tmp_path):
    args = ["run", "--task", "BallRun", "--algo", "linear-bc", "--profile", "smoke", "--dataset", str(sim_dataset_path),
            "--results", str(tmp_path), "--device", "cpu", "--seed", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "norm. reward" in result.output and "final" in result.output and "steps/s" in result.output
    for table in ("episodes", "curves", "meta"):
        assert (tmp_path / table / "BallRun__linear-bc__k20__s3__smoke__none.parquet").is_file()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "already stored" in again.output


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--task", "BallCirle"], "did you mean BallCircle"),
        (["run", "--task", "BallRun", "--algo", "linear-bc", "--set", "nosuchfield=1"], "unknown override"),
        (["run", "--task", "BallRun", "--algo", "linear-bc", "--threshold", "-1"], "negative"),
        (["run", "--task", "BallRun", "--algo", "linear-bc", "--profile", "huge"], "unknown profile"),
        (["run", "--task", "BallRun", "--algo", "linear-bc", "--device", "tpu"], "unknown device"),
    ],
)
def test_cli_run_bad_input_exit_2_one_line(sim_dataset_path, tmp_path, capsys, argv, message):
    code = main(argv + ["--dataset", str(sim_dataset_path), "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and err.strip().count("\n") == 0 and "Traceback" not in err


def test_a_cell_running_elsewhere_is_not_trained_twice(sim_dataset_path, tmp_path):
    import fcntl

    from bench.errors import BenchError

    cell = resolve(spec(sim_dataset_path))
    lock = tmp_path / "checkpoints" / f".{cell.key.cell_id}.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # another process holds the cell
        with pytest.raises(BenchError, match="another process"):
            run_cell(spec(sim_dataset_path), tmp_path)
    assert run_cell(spec(sim_dataset_path), tmp_path).status == "done"


def test_a_store_of_the_old_layout_is_refused_until_migrated(sim_dataset_path, tmp_path, capsys):
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "BallRun__linear-bc__k20__s0__smoke__none.parquet").write_bytes(b"PAR1")
    with pytest.raises(BadInput, match="presa-bench results migrate"):
        run_cell(spec(sim_dataset_path), tmp_path)  # never retrains what the old store holds
    code = main(["run", "--task", "BallRun", "--algo", "linear-bc", "--profile", "smoke", "--dataset", str(sim_dataset_path),
                 "--results", str(tmp_path), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "results migrate" in err and err.strip().count("\n") == 0
