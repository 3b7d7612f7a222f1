"""The result store: schema, one-call loading, atomic writes, config hashes, failures, git state."""

from __future__ import annotations

import json
import os
import subprocess

import pandas as pd
import pytest

import bench  # noqa: F401
from bench import results as store


def make_record(algorithm: str = "alg", seed: int = 0, reward: float = 0.5, config=None) -> store.CellRecord:
    key = store.CellKey("BallRun", algorithm, 20.0, seed, "smoke", "q100")
    config = config or {"lr": 1e-3, "seed": seed, "algorithm": algorithm}
    episodes = [
        {"checkpoint": kind, "episode": i, "episode_seed": i, "return": 10.0 * i, "cost": float(i),
         "length": 100, "normalized_reward": reward + 0.01 * i, "normalized_cost": 0.05 * i}
        for kind in ("final", "best") for i in range(3)
    ]
    curve = [{"step": 10, "loss": 1.0, "lambda": 2.0}, {"step": 20, "loss": 0.5, "note": "not a number"}]
    return store.CellRecord(
        key=key, suite="bullet", config=config, config_hash=store.config_hash(config), episodes=episodes,
        curve=curve, wall_seconds=3.0, train_seconds=2.0, steps=400, dataset_path="/d/x.hdf5",
        dataset_hash="abc", feedback_provenance={"source": "synthetic"}, info={"acc": 0.9},
    )


def test_roundtrip_one_pandas_call(tmp_path):
    store.write_cell(tmp_path, make_record("a"))
    store.write_cell(tmp_path, make_record("b", seed=1))
    episodes = store.load_results(tmp_path)
    assert len(episodes) == 12 and set(episodes["algorithm"]) == {"a", "b"}
    assert set(episodes["checkpoint"]) == {"final", "best"}
    # the same frame straight from pandas: the store is plain parquet
    direct = pd.read_parquet(tmp_path / "cells")
    assert len(direct) == len(episodes) + 2 * 3  # + the curve rows (loss, lambda, loss) per cell
    row = episodes.iloc[0]
    assert row["steps_per_second"] == pytest.approx(200.0)
    assert json.loads(row["config_json"])["lr"] == 1e-3
    versions = json.loads(row["versions_json"])
    assert versions["numpy"] and versions["torch"] and versions["dsrl"] and "presa-bench" in versions
    assert json.loads(row["feedback_provenance_json"]) == {"source": "synthetic"}
    assert row["dataset_hash"] == "abc" and row["git_commit"]
    curves = store.load_curves(tmp_path)
    assert set(curves["metric"]) == {"loss", "lambda"}  # the non-numeric entry is dropped
    assert curves.loc[curves["metric"] == "lambda", "value"].tolist() == [2.0, 2.0]


def test_empty_store_gives_empty_frame(tmp_path):
    assert store.load_results(tmp_path).empty
    assert "normalized_cost" in store.load_results(tmp_path).columns


def test_config_hash_is_canonical():
    assert store.config_hash({"a": 1, "b": [1, 2]}) == store.config_hash({"b": [1, 2], "a": 1})
    assert store.config_hash({"a": 1}) != store.config_hash({"a": 2})


def test_done_only_with_same_hash(tmp_path):
    record = make_record()
    assert not store.is_done(tmp_path, record.key, record.config_hash)
    store.write_cell(tmp_path, record)
    assert store.is_done(tmp_path, record.key, record.config_hash)
    assert not store.is_done(tmp_path, record.key, "0" * 16)


def test_interrupted_write_keeps_old_file_and_leaves_nothing_visible(tmp_path, monkeypatch):
    old = make_record(reward=0.1)
    path = store.write_cell(tmp_path, old)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies between writing the temp file and renaming it

    monkeypatch.setattr(store.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write_cell(tmp_path, make_record(reward=0.9))
    monkeypatch.undo()
    assert path.read_bytes() == before
    leftovers = list((tmp_path / "cells").glob(".*.tmp"))
    assert len(leftovers) == 1
    # a reader never sees the half-written temp file
    assert store.load_results(tmp_path)["normalized_reward"].min() == pytest.approx(0.1)
    # the temp file of a dead writer is cleaned up; one of a live writer is kept
    dead = leftovers[0].with_name(".x.parquet.999999999.tmp")
    leftovers[0].rename(dead)
    live = tmp_path / "cells" / f".y.parquet.{os.getpid() + 0}.tmp"
    live.write_bytes(b"")
    assert store.remove_stale_temp_files(tmp_path) == 1
    assert not dead.exists() and live.exists()


def test_unreadable_cell_counts_as_not_done(tmp_path):
    record = make_record()
    path = store.write_cell(tmp_path, record)
    path.write_bytes(b"PAR1 truncated")
    assert store.stored_hash(tmp_path, record.key) is None


def test_failure_records_cleared_by_success(tmp_path):
    record = make_record()
    store.write_failure(tmp_path, record.key, "RuntimeError: boom", "Traceback ...")
    failures = store.load_failures(tmp_path)
    assert failures[0]["error"] == "RuntimeError: boom" and failures[0]["cell_id"] == record.key.cell_id
    store.write_cell(tmp_path, record)
    assert store.load_failures(tmp_path) == []


def test_episode_rows_need_a_checkpoint_label(tmp_path):
    record = make_record()
    record.episodes[0]["checkpoint"] = "last"
    with pytest.raises(ValueError, match="checkpoint"):
        store.write_cell(tmp_path, record)


def test_git_state_outside_a_repository_and_dirty_flag(tmp_path):
    assert store.git_state.__wrapped__(str(tmp_path)) == ("unknown", False)
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env)
    (repo / "f").write_text("1")
    subprocess.run(["git", "add", "f"], cwd=repo, check=True)
    commit, dirty = store.git_state.__wrapped__(str(repo))
    assert len(commit) == 40 and dirty


def test_file_hash_changes_with_content(tmp_path):
    f = tmp_path / "d.hdf5"
    f.write_bytes(b"abc")
    h1 = store.file_hash(f)
    f.write_bytes(b"abcd")
    assert store.file_hash(f) != h1
