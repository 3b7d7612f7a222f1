"""The data layer: loading a DSRL file the way a user's file is loaded, validation, episodes, segments."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest

import bench  # noqa: F401
from bench.data import (
    REQUIRED_KEYS,
    find_dataset,
    from_arrays,
    load_dataset,
    load_task_dataset,
    read_hdf5,
    write_dsrl_hdf5,
)
from bench.errors import DatasetError
from bench.tasks import get_task


def _arrays(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in REQUIRED_KEYS}


def _rewrite(src, dst, **changes):
    arrays = _arrays(src)
    with h5py.File(dst, "w") as f:
        for k, v in arrays.items():
            if k in changes:
                v = changes[k]
                if v is None:
                    continue
            f.create_dataset(k, data=v)
    return dst


def test_loads_like_dsrl(sim_dataset_path):
    """The same file through dsrl's own loader and through presa-bench gives the same arrays."""
    import gymnasium as gym

    task = get_task("BallRun")
    theirs = gym.make(task.env_id).unwrapped.get_dataset(str(sim_dataset_path))
    ours = load_dataset(sim_dataset_path, task)
    for key in REQUIRED_KEYS:
        np.testing.assert_array_equal(getattr(ours, key), theirs[key])


def test_lookup_through_dataset_dir(sim_dataset_path, monkeypatch):
    task = get_task("BallRun")
    monkeypatch.setenv("DSRL_DATASET_DIR", str(sim_dataset_path.parent))
    assert find_dataset(task) == sim_dataset_path
    assert find_dataset(task, sim_dataset_path.parent) == sim_dataset_path
    ds = load_task_dataset(task)
    assert ds.num_episodes == 40 and ds.path == sim_dataset_path


def test_missing_dataset_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("DSRL_DATASET_DIR", str(tmp_path))
    task = get_task("PointGoal1")  # no Safety-Gymnasium dataset is shipped (all 8 Bullet ones are)
    with pytest.raises(DatasetError) as err:
        find_dataset(task)
    msg = str(err.value)
    assert str(tmp_path) in msg and "presa-bench data collect --task PointGoal1" in msg
    with pytest.raises(DatasetError, match="does not exist"):
        find_dataset(task, tmp_path / "nope.hdf5")


def test_episodes_and_statistics(sim_dataset):
    ds = sim_dataset
    assert ds.num_transitions == 4000 and ds.num_episodes == 40
    assert np.all(ds.episodes.lengths == 100)
    ends = ds.episodes.ends - 1
    assert np.all(ds.terminals[ends] | ds.timeouts[ends])
    np.testing.assert_allclose(ds.episode_returns[3], ds.rewards[300:400].sum(), rtol=1e-5)
    np.testing.assert_allclose(ds.episode_costs[7], ds.costs[700:800].sum())


def test_segments_never_cross_an_episode_end():
    n = 12
    terminals = np.zeros(n, bool)
    terminals[[2, 8, 11]] = True  # episodes of length 3, 6, 3
    arrays = dict(
        observations=np.arange(n, dtype=np.float32)[:, None],
        next_observations=np.arange(n, dtype=np.float32)[:, None],
        actions=np.zeros((n, 1), np.float32),
        rewards=np.zeros(n, np.float32),
        costs=np.zeros(n, np.float32),
        terminals=terminals,
        timeouts=np.zeros(n, bool),
    )
    ds = from_arrays(arrays)
    episode, start = ds.segment_starts(4)
    assert episode.tolist() == [1, 1, 1] and start.tolist() == [0, 1, 2]
    idx = ds.segment_indices(episode, start, 4)
    assert idx.tolist() == [[3, 4, 5, 6], [4, 5, 6, 7], [5, 6, 7, 8]]
    episode, start = ds.segment_starts(3)
    assert len(episode) == 1 + 4 + 1
    with pytest.raises(ValueError):
        ds.segment_indices(np.array([0]), np.array([1]), 3)


def test_learner_view_has_no_ground_truth(sim_dataset):
    view = sim_dataset.learner_view()
    assert not hasattr(view, "rewards") and not hasattr(view, "costs")
    assert view.observations is sim_dataset.observations


def test_unfinished_last_episode_is_dropped_with_warning(sim_dataset_path, tmp_path):
    arrays = _arrays(sim_dataset_path)
    cut = {k: v[:-30] for k, v in arrays.items()}  # last episode loses its timeout flag
    path = write_dsrl_hdf5(tmp_path / "cut.hdf5", cut)
    with pytest.warns(UserWarning, match="dropped the last 70 transitions"):
        ds = load_dataset(path, get_task("BallRun"))
    assert ds.num_episodes == 39 and ds.num_transitions == 3900


def test_truncated_file(sim_dataset_path, tmp_path):
    data = sim_dataset_path.read_bytes()
    bad = tmp_path / "trunc.hdf5"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        read_hdf5(bad)
    garbage = tmp_path / "garbage.hdf5"
    garbage.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        load_dataset(garbage)


def test_missing_key(sim_dataset_path, tmp_path):
    path = _rewrite(sim_dataset_path, tmp_path / "nokey.hdf5", costs=None)
    with pytest.raises(DatasetError, match="missing key.*costs"):
        load_dataset(path)


def test_wrong_shapes(sim_dataset_path, tmp_path):
    arrays = _arrays(sim_dataset_path)
    path = _rewrite(sim_dataset_path, tmp_path / "obs.hdf5", observations=arrays["observations"][:, :5],
                    next_observations=arrays["next_observations"][:, :5])
    with pytest.raises(DatasetError, match="env needs"):
        load_dataset(path, get_task("BallRun"))
    path = _rewrite(sim_dataset_path, tmp_path / "rows.hdf5", rewards=arrays["rewards"][:-1])
    with pytest.raises(DatasetError, match="'rewards' has 3999 rows"):
        load_dataset(path)
    path = _rewrite(sim_dataset_path, tmp_path / "flags.hdf5", timeouts=arrays["timeouts"] * 3)
    with pytest.raises(DatasetError, match="'timeouts' holds values other than 0/1"):
        load_dataset(path)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_values(sim_dataset_path, tmp_path, value):
    arrays = _arrays(sim_dataset_path)
    obs = arrays["observations"].copy()
    obs[123, 1] = value
    path = _rewrite(sim_dataset_path, tmp_path / "nan.hdf5", observations=obs)
    with pytest.raises(DatasetError, match="NaN/inf value.*first at row 123"):
        load_dataset(path)


def test_no_complete_episode(sim_dataset_path, tmp_path):
    arrays = _arrays(sim_dataset_path)
    path = _rewrite(sim_dataset_path, tmp_path / "noflags.hdf5", terminals=np.zeros_like(arrays["terminals"]),
                    timeouts=np.zeros_like(arrays["timeouts"]))
    with warnings.catch_warnings(), pytest.raises(DatasetError, match="no complete episode"):
        warnings.simplefilter("ignore")
        load_dataset(path)


def test_write_is_atomic_and_roundtrips(sim_dataset_path, tmp_path):
    arrays = _arrays(sim_dataset_path)
    out = write_dsrl_hdf5(tmp_path / "x" / "copy.hdf5", arrays)
    assert not list(out.parent.glob("*.tmp"))
    back = _arrays(out)
    for k in REQUIRED_KEYS:
        np.testing.assert_array_equal(back[k], arrays[k])


def test_column_vectors_and_float64_load_with_one_warning(sim_dataset_path, tmp_path):
    """(N, 1) rewards/costs/flags (written by several tools) are squeezed and float64 arrays cast,
    with a single warning naming what was converted; the numbers are those of the (N,) file."""
    arrays = _arrays(sim_dataset_path)
    changes = {k: arrays[k][:, None] for k in ("rewards", "costs", "terminals", "timeouts")}
    changes["observations"] = arrays["observations"].astype(np.float64)
    path = _rewrite(sim_dataset_path, tmp_path / "SafetyBallRun-v0-80-40.hdf5", **changes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(path, get_task("BallRun"))
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "'rewards' (4000, 1) -> (4000,)" in text and "'timeouts'" in text and "observations float64 -> float32" in text
    ref = load_dataset(sim_dataset_path, get_task("BallRun"))
    for key in REQUIRED_KEYS:
        np.testing.assert_array_equal(getattr(ds, key), getattr(ref, key))
    assert ds.observations.dtype == np.float32 and ds.rewards.shape == (4000,)
    # a standard file loads without any warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(sim_dataset_path, get_task("BallRun"))


def test_data_info_infers_the_task_from_dsrls_file_name(sim_dataset_path, tmp_path, capsys):
    from bench.cli import main
    from bench.tasks import task_from_filename

    assert task_from_filename("SafetyBallCircle-v0-80-886.hdf5").name == "BallCircle"
    assert task_from_filename("/x/SafetyPointCircle2Gymnasium-v0-300-895.hdf5").name == "PointCircle2"
    assert task_from_filename("SafetyCarCircle-v0-100-1450.hdf5").name == "CarCircle"
    assert task_from_filename("SafetyHopperVelocityGymnasium-v1-250-2240.hdf5").name == "HopperVelocity"
    assert task_from_filename("mydata.hdf5") is None
    assert main(["data", "info", "--dataset", str(sim_dataset_path)]) == 0
    out = capsys.readouterr().out
    assert "BallRun" in out and "40" in out
    odd = tmp_path / "mydata.hdf5"
    odd.write_bytes(sim_dataset_path.read_bytes())
    assert main(["data", "info", "--dataset", str(odd)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--task" in err[0] and "mydata.hdf5" in err[0]
    assert main(["data", "info", "--task", "BallRun", "--dataset", str(odd)]) == 0
