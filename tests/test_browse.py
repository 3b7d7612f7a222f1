"""Browse and reuse results: `results ls` / `results show` and `evaluate` of a stored checkpoint."""

from __future__ import annotations

import fcntl
import re

import pytest
from typer.testing import CliRunner

import _sim_data
import bench  # noqa: F401
from bench import results as store
from bench.cli import app, main
from bench.runner import CellSpec, run_cell

runner = CliRunner()
DONE = "BallRun__linear-bc__k20__s0__smoke__none"


@pytest.fixture(autouse=True)
def _test_algorithms(monkeypatch):
    _sim_data.register(monkeypatch)


@pytest.fixture(scope="module")
def store_dir(sim_dataset_path, tmp_path_factory):
    """A store with one cell in each state: done, failed, running (its lock held), unfinished."""
    from _pytest.monkeypatch import MonkeyPatch

    patch = MonkeyPatch()
    _sim_data.register(patch)
    results = tmp_path_factory.mktemp("store")
    run_cell(CellSpec(task="BallRun", algorithm="linear-bc", threshold=20.0, profile="smoke", dataset=str(sim_dataset_path),
                      device="cpu"), results)
    patch.undo()
    store.write_failure(results, store.CellKey("BallRun", "linear-bc", 40.0, 1, "smoke"), "RuntimeError: told to fail",
                        "Traceback (most recent call last):\n  File x\nRuntimeError: told to fail")
    for cell_id in ("BallRun__cpl__k10__s2__quick__q100", "BallRun__presa__k10__s3__quick__q100"):
        (results / store.CHECKPOINTS / cell_id).mkdir(parents=True)
    lock = open(results / store.CHECKPOINTS / ".BallRun__presa__k10__s3__quick__q100.lock", "a+")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `presa-bench run` holds it
    yield results
    lock.close()


def test_results_ls_lists_every_cell_with_its_state(store_dir):
    result = runner.invoke(app, ["results", "ls", "--results", str(store_dir)])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in result.output.splitlines()
            if line.startswith("│")}
    assert rows[DONE][:6] == ["done", "linear-bc", "BallRun", "20", "0", "smoke"]
    assert re.fullmatch(r"\d+s", rows[DONE][9]) and rows[DONE][7].startswith("20")  # train time, finished at
    failed = rows["BallRun__linear-bc__k40__s1__smoke__none"]
    assert failed[0] == "failed" and failed[-1] == "RuntimeError: told to fail"
    assert rows["BallRun__presa__k10__s3__quick__q100"][:6] == ["running", "presa", "BallRun", "10", "3", "quick"]
    assert rows["BallRun__cpl__k10__s2__quick__q100"][0] == "unfinished"
    assert "1 done, 1 failed, 1 running, 1 unfinished" in result.output


def test_results_show_a_cell_and_a_failure(store_dir, capsys):
    result = runner.invoke(app, ["results", "show", "k20__s0", "--results", str(store_dir)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{DONE}: done" in out and "final: normalized reward" in out and "budget: unstated" in out
    assert "300 steps" in out and "times: finished" in out and '"algorithm": "linear-bc"' in out
    failed = runner.invoke(app, ["results", "show", "k40", "--results", str(store_dir)])
    assert "failed" in failed.output and "RuntimeError: told to fail" in failed.output and "File x" in failed.output
    code = main(["results", "show", "linear-bc", "--results", str(store_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "matches 2 cells" in err and err.strip().count("\n") == 0


def test_evaluate_reproduces_the_stored_scores_and_films_an_episode(store_dir, tmp_path, monkeypatch, capsys):
    stored = store.load_results(store_dir)
    stored = stored[(stored["cell_id"] == DONE) & (stored["checkpoint"] == "final")]
    result = runner.invoke(app, ["evaluate", DONE, "--results", str(store_dir), "--episodes", "4"])
    assert result.exit_code == 0, result.output
    # the cell's own seed and episode count: exactly the stored evaluation
    row = next(line for line in result.output.splitlines() if line.startswith("│ final"))
    assert f"{stored['normalized_reward'].mean():.3f} (std {stored['normalized_reward'].std(ddof=0):.3f})" in row
    assert row.rstrip(" │").endswith("4")  # episodes
    gif = tmp_path / "ep.gif"
    other = runner.invoke(app, ["evaluate", "k20__s0", "--results", str(store_dir), "--episodes", "2", "--seeds", "7",
                                "--video", str(gif), "--video-every", "50"])
    assert other.exit_code == 0, other.output
    assert "evaluation seed 7" in other.output
    import imageio.v3 as iio

    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == 3 and frames.shape[-1] == 3 and frames.std() > 0  # steps 0, 50 and the last; not blank
    monkeypatch.setitem(__import__("bench.browse").browse.VIDEO_FORMATS, ".mp4", "no_such_ffmpeg_plugin")
    code = main(["evaluate", DONE, "--results", str(store_dir), "--video", str(tmp_path / "ep.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and "needs the Python package no-such-ffmpeg-plugin" in err and "write a .gif" in err
    code = main(["evaluate", "k40", "--results", str(store_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "not finished" in err
    code = main(["evaluate", DONE, "--results", str(store_dir), "--checkpoint", "best"])  # smoke: no online evaluation
    err = capsys.readouterr().err
    assert code == 2 and "has no best checkpoint" in err and err.strip().count("\n") == 0
