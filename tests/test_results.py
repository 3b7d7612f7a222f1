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


def test_three_tables_each_read_with_one_pandas_call(tmp_path):
    store.write_cell(tmp_path, make_record("a"))
    store.write_cell(tmp_path, make_record("b", seed=1))
    episodes = store.load_results(tmp_path)
    assert len(episodes) == 12 and set(episodes["algorithm"]) == {"a", "b"}
    assert set(episodes["checkpoint"]) == {"final", "best"}
    # the same frames straight from pandas: the store is plain parquet, one row per evaluation episode
    direct = pd.read_parquet(tmp_path / "episodes")
    assert len(direct) == 12 and direct.groupby("algorithm").size().to_dict() == {"a": 6, "b": 6}
    for frame in (episodes, direct):
        for name in ("episode", "episode_seed", "length", "seed"):
            assert frame[name].dtype == "int64", name
        assert {"cell_id", "task", "suite", "algorithm", "threshold", "seed", "profile", "feedback", "budget"} <= set(frame.columns)
    assert "kind" not in direct.columns and "metric" not in direct.columns
    curves = store.load_curves(tmp_path)
    raw_curves = pd.read_parquet(tmp_path / "curves")
    assert len(curves) == len(raw_curves) == 2 * 3  # loss, lambda, loss per cell; the non-numeric entry is dropped
    assert list(raw_curves.columns[-4:]) == ["step", "source", "metric", "value"]
    assert curves["step"].dtype == "int64" and raw_curves["step"].dtype == "int64"
    assert set(curves["metric"]) == {"loss", "lambda"} and set(curves["source"]) == {"train"}
    assert curves.loc[curves["metric"] == "lambda", "value"].tolist() == [2.0, 2.0]
    meta = pd.read_parquet(tmp_path / "meta")
    assert len(meta) == 2 and len(store.load_meta(tmp_path)) == 2
    row = meta.set_index("algorithm").loc["a"]
    assert row["steps_per_second"] == pytest.approx(200.0) and row["steps"] == 400 and meta["steps"].dtype == "int64"
    assert row["episodes"] == 6 and row["curve_points"] == 3
    assert json.loads(row["config_json"])["lr"] == 1e-3
    versions = json.loads(row["versions_json"])
    assert versions["numpy"] and versions["torch"] and versions["dsrl"] and "presa-bench" in versions
    assert json.loads(row["feedback_provenance_json"]) == {"source": "synthetic"}
    assert row["dataset_hash"] == "abc" and row["git_commit"] and json.loads(row["info_json"]) == {"acc": 0.9}
    joined = store.load_results(tmp_path, meta=True)
    assert len(joined) == 12 and joined["info_json"].notna().all() and joined["episode"].dtype == "int64"


def test_curve_sources_train_and_eval(tmp_path):
    record = make_record()
    record.curve = [
        {"step": 10, "loss": 1.0},
        {"step": 10, "normalized_reward": 0.4, "normalized_cost": 0.2, "reward": 40.0, "cost": 5.0},
        {"step": 20, "source": "eval", "reward": 41.0},  # an explicit source wins over the default
        {"step": 20, "source": "train", "normalized_reward": 9.0},
    ]
    store.write_cell(tmp_path, record)
    curves = store.load_curves(tmp_path).set_index(["step", "metric"])["source"]
    assert curves[(10, "loss")] == "train" and curves[(10, "normalized_reward")] == "eval" and curves[(10, "cost")] == "eval"
    assert curves[(20, "reward")] == "eval" and curves[(20, "normalized_reward")] == "train"
    record.curve = [{"step": 1, "source": "test", "x": 1.0}]
    with pytest.raises(ValueError, match="source"):
        store.write_cell(tmp_path, record)


def test_steps_per_second_counts_only_this_process(tmp_path):
    resumed = make_record("resumed")
    resumed.steps, resumed.steps_this_process, resumed.train_seconds = 1000, 250, 5.0  # resumed at step 750
    store.write_cell(tmp_path, resumed)
    unknown = make_record("unknown")
    unknown.steps, unknown.train_seconds = 1000, 5.0  # a trainer that does not say: all its steps
    store.write_cell(tmp_path, unknown)
    meta = store.load_meta(tmp_path).set_index("algorithm")
    assert meta.loc["resumed", "steps_per_second"] == pytest.approx(50.0)
    assert meta.loc["resumed", "steps"] == 1000 and meta.loc["resumed", "steps_this_process"] == 250
    assert meta.loc["unknown", "steps_per_second"] == pytest.approx(200.0)


def test_a_cell_without_meta_is_not_done_and_invisible(tmp_path, monkeypatch):
    store.write_cell(tmp_path, make_record("kept"))
    record = make_record()
    store.write_cell(tmp_path, record)
    store.meta_path(tmp_path, record.key).unlink()  # a writer killed before its meta file
    assert not store.is_done(tmp_path, record.key, record.config_hash)
    assert len(pd.read_parquet(tmp_path / "episodes")) == 12  # the orphan file is there...
    assert set(store.load_results(tmp_path)["algorithm"]) == {"kept"}  # ...but never read
    assert set(store.load_curves(tmp_path)["algorithm"]) == {"kept"}
    assert set(store.load_meta(tmp_path)["algorithm"]) == {"kept"}
    store.write_cell(tmp_path, record)  # the rerun overwrites the orphan
    assert len(store.load_results(tmp_path)) == 12 and len(pd.read_parquet(tmp_path / "episodes")) == 12
    # a rerun with another config killed before its meta file: neither the old nor the new rows show
    real = store.atomic_write_bytes

    def die_at_meta(path, data):
        if path.parent.name == "meta":
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(store, "atomic_write_bytes", die_at_meta)
    changed = make_record(config={"lr": 0.5})
    with pytest.raises(KeyboardInterrupt):
        store.write_cell(tmp_path, changed)
    monkeypatch.undo()
    assert not store.is_done(tmp_path, record.key, record.config_hash)
    assert not store.is_done(tmp_path, record.key, changed.config_hash)
    assert set(store.load_results(tmp_path)["algorithm"]) == {"kept"}
    # rows whose config hash differs from their cell's meta are skipped even with a meta file present
    store.write_cell(tmp_path, record)
    import shutil

    shutil.copy(store.meta_path(tmp_path, record.key), tmp_path / "meta.bak")
    store.write_cell(tmp_path, changed)
    shutil.copy(tmp_path / "meta.bak", store.meta_path(tmp_path, record.key))  # old meta, new episodes
    assert set(store.load_results(tmp_path)["algorithm"]) == {"kept"}


def test_cell_id_names_the_overrides():
    plain = store.CellKey("BallRun", "alg", 20.0, 0, "smoke", "q100")
    assert plain.cell_id == "BallRun__alg__k20__s0__smoke__q100"  # ids of cells without overrides are unchanged
    assert store.overrides_tag({}) == "" and store.overrides_tag(None) == ""
    a, b = store.overrides_tag({"lr": 0.1}), store.overrides_tag({"lr": 0.2})
    assert len(a) == 8 and a != b and a == store.overrides_tag({"lr": 0.1})
    # the keys a budget protocol sets are named by the protocol (__b-...), not hashed again
    budget = {"protocol": "bullet", "steps_key": "steps", "batch_key": "batch_size"}
    assert store.overrides_tag({"steps": 40, "batch_size": 8}, budget) == ""
    assert store.overrides_tag({"steps": 40, "lr": 0.1}, budget) == a
    tagged = store.CellKey("BallRun", "alg", 20.0, 0, "smoke", "q100", "bullet", overrides=a)
    assert tagged.cell_id == f"BallRun__alg__k20__s0__smoke__q100__b-bullet__o-{a}"


def test_empty_store_gives_empty_typed_frames(tmp_path):
    assert store.load_results(tmp_path).empty and store.load_curves(tmp_path).empty and store.load_meta(tmp_path).empty
    assert "normalized_cost" in store.load_results(tmp_path).columns
    assert store.load_results(tmp_path)["episode"].dtype == "int64"


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
        raise KeyboardInterrupt  # the process dies while writing the new files

    monkeypatch.setattr(store.os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write_cell(tmp_path, make_record(reward=0.9))
    monkeypatch.undo()
    assert path.read_bytes() == before
    leftovers = list((tmp_path / "episodes").glob(".*.tmp"))
    assert len(leftovers) == 1
    # the stored cell is untouched and done; a reader never sees the half-written temp file
    assert store.is_done(tmp_path, old.key, old.config_hash)
    assert store.load_results(tmp_path)["normalized_reward"].min() == pytest.approx(0.1)
    assert len(pd.read_parquet(tmp_path / "episodes")) == 6
    # the temp file of a dead writer is cleaned up; one of a live writer is kept
    dead = leftovers[0].with_name(".x.parquet.999999999.tmp")
    leftovers[0].rename(dead)
    live = tmp_path / "meta" / f".y.parquet.{os.getpid() + 0}.tmp"
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


def test_migrate_a_store_of_the_old_one_table_layout(tmp_path, capsys):
    from _legacy_store import write_old_cell

    from bench.cli import main
    from bench.errors import BadInput

    plain = make_record("plain")
    plain.curve = [{"step": 10, "loss": 1.0}, {"step": 10, "reward": 30.0, "cost": 2.0, "normalized_reward": 0.3,
                                              "normalized_cost": 0.1, "episode_length": 100.0}]
    overridden = make_record("tuned", config={"overrides": {"lr": 0.1, "steps": 40},
                                              "budget": {"protocol": "bullet", "steps_key": "steps"}})
    overridden.key = store.CellKey("BallRun", "tuned", 20.0, 0, "smoke", "q100", "bullet")
    old_files = [write_old_cell(tmp_path, r) for r in (plain, overridden)]
    broken = tmp_path / "cells" / "broken.parquet"
    broken.write_bytes(b"PAR1 not a parquet file")
    old = pd.concat([pd.read_parquet(p) for p in old_files], ignore_index=True)

    # readers and the runner's done check refuse the old layout with a one-line pointer (exit 2)
    for read in (store.load_results, store.load_curves, store.load_meta):
        with pytest.raises(BadInput, match="presa-bench results migrate --results"):
            read(tmp_path)
    with pytest.raises(BadInput, match="old one-table layout"):
        store.is_done(tmp_path, plain.key, plain.config_hash)
    assert main(["report", "--results", str(tmp_path), "--no-plots"]) == 2
    assert "results migrate" in capsys.readouterr().err

    assert main(["results", "migrate", "--results", str(tmp_path)]) == 1  # the broken file is kept aside and named
    assert "broken.parquet" in capsys.readouterr().out
    assert (tmp_path / "cells-unmigrated" / "broken.parquet").read_bytes() == b"PAR1 not a parquet file"
    assert not (tmp_path / "cells").exists()
    assert main(["results", "migrate", "--results", str(tmp_path)]) == 0  # idempotent

    # every stored episode value survives, with integer columns as integers
    episodes = store.load_results(tmp_path)
    assert len(episodes) == 12 and len(pd.read_parquet(tmp_path / "episodes")) == 12
    cols = list(_OLD_EPISODE_VALUES)
    before = old[old["kind"] == "episode"][["algorithm", *cols]].sort_values(["algorithm", "checkpoint", "episode"])
    after = episodes[["algorithm", *cols]].sort_values(["algorithm", "checkpoint", "episode"])
    pd.testing.assert_frame_equal(before.reset_index(drop=True), after.reset_index(drop=True), check_dtype=False, check_exact=True)  # old: floats
    for name in ("episode", "episode_seed", "length", "seed"):
        assert episodes[name].dtype == "int64"
    # the overridden cell now carries its overrides hash, as a rerun would name it: that rerun is skipped
    new_key = store.CellKey("BallRun", "tuned", 20.0, 0, "smoke", "q100", "bullet", overrides=store.overrides_tag({"lr": 0.1}))
    assert store.is_done(tmp_path, new_key, overridden.config_hash) and store.is_done(tmp_path, plain.key, plain.config_hash)
    assert set(episodes["cell_id"]) == {plain.key.cell_id, new_key.cell_id}
    assert set(episodes.loc[episodes["algorithm"] == "tuned", "budget"]) == {"bullet"}
    # curves: training scalars and online evaluations told apart, values kept
    curves = store.load_curves(tmp_path)
    assert len(curves) == int((old["kind"] == "curve").sum())
    plain_curve = curves[curves["algorithm"] == "plain"].set_index(["step", "metric"])
    assert plain_curve.loc[(10, "loss"), "source"] == "train" and plain_curve.loc[(10, "cost"), "source"] == "eval"
    assert plain_curve.loc[(10, "normalized_reward"), "value"] == pytest.approx(0.3)
    meta = store.load_meta(tmp_path).set_index("algorithm")
    assert meta.loc["plain", "git_commit"] == "abc123" and meta.loc["plain", "hostname"] == "old-host"
    assert meta.loc["plain", "steps"] == 400 and meta.loc["plain", "steps_per_second"] == pytest.approx(200.0)
    assert json.loads(meta.loc["tuned", "overrides_json"]) == {"lr": 0.1, "steps": 40}
    assert meta.loc["plain", "migrated_from"] == "cells/BallRun__plain__k20__s0__smoke__q100.parquet"
    assert meta.loc["plain", "episodes"] == 6


_OLD_EPISODE_VALUES = ("checkpoint", "episode", "episode_seed", "return", "cost", "length", "normalized_reward",
                       "normalized_cost", "threshold", "seed", "task", "suite", "profile", "feedback", "config_hash")


def test_migrate_resumes_after_a_kill_and_keeps_a_newer_run(tmp_path):
    from _legacy_store import write_old_cell

    record = make_record("a")
    path = write_old_cell(tmp_path, record)
    # a migration killed after the new meta file, before removing the old file
    report = store.migrate(tmp_path)
    assert report.migrated == [record.key.cell_id] and not path.exists()
    path = write_old_cell(tmp_path, record)
    again = store.migrate(tmp_path)
    assert again.migrated == [record.key.cell_id] and not path.exists() and len(store.load_results(tmp_path)) == 6
    # an old file of a cell rerun meanwhile with another config: the newer run stays, the old file too
    stale = make_record("a", config={"lr": 0.5})
    path = write_old_cell(tmp_path, stale)
    kept = store.migrate(tmp_path)
    assert kept.migrated == [] and kept.kept and not path.exists()
    assert (tmp_path / "cells-unmigrated" / path.name).is_file()
    assert store.is_done(tmp_path, record.key, record.config_hash) and len(store.load_results(tmp_path)) == 6
