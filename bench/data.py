"""DSRL datasets: lookup, validation, loading, writing, episodes and fixed-length segments.

A DSRL file is a flat HDF5 with observations, next_observations, actions, rewards, costs,
terminals and timeouts; episodes are contiguous and end where ``terminals | timeouts``.
Episodes and segments are exposed as index arrays: a segment is (episode, start offset) plus a
length H, and ``segment_indices`` turns many of them into an (M, H) array of transition indices
in one vectorised step, so no per-segment Python objects are ever built.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import DatasetError
from bench.tasks import Task, dataset_dir

FLOAT_KEYS = ("observations", "next_observations", "actions", "rewards", "costs")
FLAG_KEYS = ("terminals", "timeouts")
REQUIRED_KEYS = FLOAT_KEYS + FLAG_KEYS
#: Shipped datasets (the built-in default), searched after --dataset and $DSRL_DATASET_DIR.
ASSET_DIR = Path(__file__).resolve().parent / "assets" / "datasets"


def _candidates(task: Task, directory: Path) -> list[Path]:
    exact = directory / task.dsrl_filename
    if exact.is_file():
        return [exact]
    found = sorted(directory.glob(f"{task.simulator_id}-*.hdf5"))
    # prefer the file with the most trajectories (the last field of DSRL's name)
    def n_traj(p: Path) -> int:
        tail = p.stem.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    return sorted(found, key=n_traj, reverse=True)


def find_dataset(task: Task, dataset: Path | str | None = None) -> Path:
    """Resolve the dataset file of ``task``.

    ``dataset`` (the CLI's --dataset) may be a file or a directory; otherwise look in
    $DSRL_DATASET_DIR (default ~/.dsrl/datasets) with DSRL's file naming, then in the datasets
    shipped with presa-bench.
    """
    if dataset is not None:
        path = Path(dataset).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            hits = _candidates(task, path)
            if hits:
                return hits[0]
            raise DatasetError(
                f"no {task.name} dataset in {path} (expected {task.simulator_id}-<maxCost>-<N>.hdf5); "
                f"build one with `presa-bench data collect --task {task.name} --dataset-dir {path}`"
            )
        raise DatasetError(f"dataset path {path} does not exist")
    searched = [dataset_dir(), ASSET_DIR]
    for directory in searched:
        if directory.is_dir():
            hits = _candidates(task, directory)
            if hits:
                return hits[0]
    where = " and ".join(str(d) for d in searched)
    raise DatasetError(
        f"no {task.name} dataset found in {where}: put DSRL's {task.dsrl_filename} there, pass "
        f"--dataset PATH, or build one with `presa-bench data collect --task {task.name}`"
    )


def read_hdf5(path: Path | str) -> dict[str, np.ndarray]:
    """Read the arrays of a DSRL file, turning h5py failures into DatasetError."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in REQUIRED_KEYS if k not in f]
            if missing:
                raise DatasetError(
                    f"dataset {path} is missing key(s) {', '.join(missing)}; a DSRL file needs "
                    f"{', '.join(REQUIRED_KEYS)}"
                )
            for key in REQUIRED_KEYS:
                if not isinstance(f[key], h5py.Dataset) or f[key].ndim == 0:
                    kind = "a group" if isinstance(f[key], h5py.Group) else "a scalar"
                    raise DatasetError(f"dataset {path}: '{key}' is {kind}, expected an array with one row per transition")
            return {k: f[k][()] for k in REQUIRED_KEYS}
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"dataset {path} is not a readable HDF5 file (truncated or corrupt?): {exc}") from exc


def write_dsrl_hdf5(
    path: Path | str, arrays: dict[str, np.ndarray], compression_level: int = 4,
    groups: dict[str, dict[str, np.ndarray]] | None = None,
) -> Path:
    """Write arrays as a DSRL-format file (flat gzip datasets), atomically (temp file + rename).

    ``groups`` adds HDF5 groups of extra datasets (e.g. collect's ``replay``) beside DSRL's keys."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        for key in REQUIRED_KEYS:
            value = np.asarray(arrays[key])
            value = value.astype(bool) if key in FLAG_KEYS else value.astype(np.float32)
            f.create_dataset(key, data=value, compression="gzip", compression_opts=compression_level, shuffle=True)
        for name, datasets in (groups or {}).items():
            group = f.create_group(name)
            for key, value in datasets.items():
                group.create_dataset(key, data=np.asarray(value), compression="gzip", compression_opts=compression_level, shuffle=True)
    tmp.replace(path)
    return path


@dataclass
class Episodes:
    """Episode boundaries as index arrays: episode i is transitions [starts[i], starts[i] + lengths[i])."""

    starts: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def ends(self) -> np.ndarray:
        return self.starts + self.lengths

    def episode_of(self) -> np.ndarray:
        """Episode id of every transition."""
        return np.repeat(np.arange(len(self.starts)), self.lengths)


def episode_boundaries(terminals: np.ndarray, timeouts: np.ndarray) -> tuple[Episodes, int]:
    """Episodes from the end flags, and how many trailing transitions belong to no ended episode."""
    done = np.flatnonzero(np.asarray(terminals, bool) | np.asarray(timeouts, bool))
    ends = done + 1
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64) if len(ends) else ends.astype(np.int64)
    dangling = len(terminals) - (int(ends[-1]) if len(ends) else 0)
    return Episodes(starts=starts, lengths=(ends - starts).astype(np.int64)), dangling


@dataclass
class Dataset:
    """A validated DSRL dataset. Ground truth (rewards, costs) lives here; learners get `learner_view`."""

    task: Task | None
    path: Path | None
    observations: np.ndarray
    next_observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    costs: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episodes: Episodes
    dropped_transitions: int = 0
    _returns: np.ndarray | None = field(default=None, repr=False)
    _ep_costs: np.ndarray | None = field(default=None, repr=False)

    @property
    def num_transitions(self) -> int:
        return len(self.observations)

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def episode_returns(self) -> np.ndarray:
        if self._returns is None:
            self._returns = np.add.reduceat(self.rewards.astype(np.float64), self.episodes.starts)
        return self._returns

    @property
    def episode_costs(self) -> np.ndarray:
        if self._ep_costs is None:
            self._ep_costs = np.add.reduceat(self.costs.astype(np.float64), self.episodes.starts)
        return self._ep_costs

    def segment_starts(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Every (episode, start offset) whose segment of ``length`` steps stays inside its episode."""
        room = np.maximum(self.episodes.lengths - length + 1, 0)
        episode = np.repeat(np.arange(self.num_episodes), room)
        offset = np.arange(int(room.sum())) - np.repeat(np.cumsum(room) - room, room)
        return episode.astype(np.int64), offset.astype(np.int64)

    def segment_indices(self, episode: np.ndarray, start: np.ndarray, length: int) -> np.ndarray:
        """(M, length) transition indices of M segments; raises if one would cross an episode end."""
        return segment_indices(self.episodes, episode, start, length)

    def learner_view(self) -> "OfflineData":
        return OfflineData(
            observations=self.observations,
            actions=self.actions,
            next_observations=self.next_observations,
            terminals=self.terminals,
            timeouts=self.timeouts,
            episodes=self.episodes,
        )


def segment_indices(episodes: Episodes, episode: np.ndarray, start: np.ndarray, length: int) -> np.ndarray:
    episode = np.asarray(episode, np.int64)
    start = np.asarray(start, np.int64)
    if len(episode) and (
        episode.min() < 0
        or episode.max() >= len(episodes)
        or start.min() < 0
        or np.any(start + length > episodes.lengths[episode])
    ):
        raise ValueError("segment outside its episode")
    return (episodes.starts[episode] + start)[:, None] + np.arange(length)[None, :]


@dataclass(frozen=True)
class OfflineData:
    """What a preference learner may see of the dataset: states, actions and boundaries, no reward or cost."""

    observations: np.ndarray
    actions: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episodes: Episodes

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def segment_indices(self, episode: np.ndarray, start: np.ndarray, length: int) -> np.ndarray:
        return segment_indices(self.episodes, episode, start, length)


def validate_arrays(
    arrays: dict[str, np.ndarray],
    source: str,
    obs_shape: tuple[int, ...] | None = None,
    act_shape: tuple[int, ...] | None = None,
    act_bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Check dtypes, shapes, finiteness and plausible magnitudes (``act_bounds``: the env's action
    space low/high); raise DatasetError naming the first problem."""
    n = len(arrays["observations"])
    if n == 0:
        raise DatasetError(f"dataset {source} is empty")
    for key in FLOAT_KEYS:
        a = arrays[key]
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise DatasetError(f"dataset {source}: '{key}' has dtype {a.dtype}, expected a float array")
    for key in FLAG_KEYS:
        a = arrays[key]
        if not (a.dtype == bool or np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise DatasetError(f"dataset {source}: '{key}' has dtype {a.dtype}, expected bool")
        if not np.all((a == 0) | (a == 1)):
            raise DatasetError(f"dataset {source}: '{key}' holds values other than 0/1")
    for key in REQUIRED_KEYS:
        if len(arrays[key]) != n:
            raise DatasetError(
                f"dataset {source}: '{key}' has {len(arrays[key])} rows but observations has {n}"
            )
    for key in ("rewards", "costs", "terminals", "timeouts"):
        if arrays[key].ndim != 1:
            raise DatasetError(f"dataset {source}: '{key}' has shape {arrays[key].shape}, expected ({n},)")
    for key, want in (("observations", obs_shape), ("next_observations", obs_shape), ("actions", act_shape)):
        a = arrays[key]
        if a.ndim != 2:
            raise DatasetError(f"dataset {source}: '{key}' has shape {a.shape}, expected (N, dim)")
        if want is not None and tuple(a.shape[1:]) != tuple(want):
            raise DatasetError(
                f"dataset {source}: '{key}' has shape {a.shape[1:]} per row but the env needs {tuple(want)} "
                "(a dataset of another task?)"
            )
    for key in FLOAT_KEYS:
        bad = ~np.isfinite(arrays[key])
        if bad.any():
            row = int(np.flatnonzero(bad.reshape(n, -1).any(axis=1))[0])
            raise DatasetError(f"dataset {source}: '{key}' has {int(bad.sum())} NaN/inf value(s), first at row {row}")
    for key in FLOAT_KEYS:
        _refuse_beyond(arrays[key], -MAX_MAGNITUDE, MAX_MAGNITUDE, source, key, f"of magnitude above {MAX_MAGNITUDE:g}")
    if act_bounds is not None:
        low, high = (np.asarray(b, dtype=np.float64) for b in act_bounds)
        slack = np.where(np.isfinite(high - low), high - low, np.inf) * ACTION_SLACK
        _refuse_beyond(arrays["actions"], low - slack, high + slack, source, "actions", "far outside the env's action bounds")


#: No observation, action, reward or cost of a real task comes near this: a larger one is corruption.
MAX_MAGNITUDE = 1e6
#: How far (in widths of the action space) a stored action may lie outside the env's bounds; an
#: unclipped policy sample can, a corrupted value (1e30) cannot.
ACTION_SLACK = 1.0


def _refuse_beyond(values: np.ndarray, low: Any, high: Any, source: str, key: str, what: str) -> None:
    """DatasetError naming the first value of ``values`` outside [low, high] (its row, index, value)."""
    bad = (values < low) | (values > high)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DatasetError(
            f"dataset {source}: '{key}' value {float(values[index]):g} at index {index if len(index) > 1 else index[0]} "
            f"is {what}; fix or regenerate the file"
        )


def normalize_layout(arrays: dict[str, np.ndarray], source: str, warn: bool = True) -> dict[str, np.ndarray]:
    """Accept the variants other writers produce, with one warning naming what was changed:
    (N, 1) rewards/costs/terminals/timeouts are squeezed to (N,) (as dsrl's loader does) and
    float64 observations/actions/rewards/costs are cast to float32 (what the trainers use).
    ``warn`` False for in-memory arrays (numpy's default float64 is no writer's mistake)."""
    out = dict(arrays)
    changed = []
    for key in ("rewards", "costs", "terminals", "timeouts"):
        a = np.asarray(out[key])
        if a.ndim == 2 and a.shape[1] == 1:
            out[key] = a[:, 0]
            changed.append(f"'{key}' {a.shape} -> ({a.shape[0]},)")
    wide = [k for k in FLOAT_KEYS if np.asarray(out[k]).dtype == np.float64]
    for key in wide:
        out[key] = np.asarray(out[key]).astype(np.float32)
    if wide:
        changed.append(f"{', '.join(wide)} float64 -> float32")
    if changed and warn:
        warnings.warn(f"dataset {source}: converted {'; '.join(changed)}", stacklevel=3)
    return out


def from_arrays(
    arrays: dict[str, np.ndarray],
    task: Task | None = None,
    path: Path | None = None,
    obs_shape: tuple[int, ...] | None = None,
    act_shape: tuple[int, ...] | None = None,
    act_bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> Dataset:
    """Validate arrays and build a Dataset; a trailing episode with no end flag is dropped with a warning."""
    source = str(path) if path is not None else "<arrays>"
    arrays = normalize_layout(arrays, source, warn=path is not None)
    validate_arrays(arrays, source, obs_shape, act_shape, act_bounds)
    episodes, dangling = episode_boundaries(arrays["terminals"], arrays["timeouts"])
    if len(episodes) == 0:
        raise DatasetError(f"dataset {source} has no complete episode (no terminals or timeouts flag set)")
    keep = len(arrays["observations"]) - dangling
    if dangling:
        warnings.warn(
            f"dataset {source}: dropped the last {dangling} transitions (an episode with neither "
            "terminals nor timeouts set)",
            stacklevel=2,
        )
    cut = {k: np.ascontiguousarray(v[:keep]) for k, v in arrays.items()}
    return Dataset(
        task=task,
        path=path,
        observations=cut["observations"].astype(np.float32, copy=False),
        next_observations=cut["next_observations"].astype(np.float32, copy=False),
        actions=cut["actions"].astype(np.float32, copy=False),
        rewards=cut["rewards"].astype(np.float32, copy=False),
        costs=cut["costs"].astype(np.float32, copy=False),
        terminals=cut["terminals"].astype(bool, copy=False),
        timeouts=cut["timeouts"].astype(bool, copy=False),
        episodes=episodes,
        dropped_transitions=dangling,
    )


def load_dataset(path: Path | str, task: Task | None = None, check_env: bool = True) -> Dataset:
    """Load and validate a DSRL file. With a task and ``check_env``, shapes are checked against its env."""
    path = Path(path)
    arrays = read_hdf5(path)
    obs_shape = act_shape = act_bounds = None
    if task is not None and check_env:
        from bench.envs import action_bounds, space_shapes

        obs_shape, act_shape = space_shapes(task)
        act_bounds = action_bounds(task)
    return from_arrays(arrays, task=task, path=path, obs_shape=obs_shape, act_shape=act_shape, act_bounds=act_bounds)


def load_task_dataset(task: Task, dataset: Path | str | None = None) -> Dataset:
    """Find (see `find_dataset`) and load the dataset of a task."""
    task.require_supported()
    return load_dataset(find_dataset(task, dataset), task)
