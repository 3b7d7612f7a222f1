"""The DSRL task registry: 38 tasks, 29 supported (the paper's), with thresholds and constants.

Normalization constants and episode lengths are read from ``dsrl.infos`` at run time, never copied.
``dsrl/infos.py`` is loaded on its own (without running ``dsrl/__init__``, which imports every
simulator) so that listing tasks stays fast.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import types
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from bench.errors import UnknownTask

BULLET = "bullet"
SAFETY_GYMNASIUM = "safety-gymnasium"
METADRIVE = "metadrive"

#: Cost thresholds kappa used by the paper (and DSRL's benchmark tables) per suite.
SUITE_THRESHOLDS: dict[str, tuple[float, ...]] = {
    BULLET: (10.0, 20.0, 40.0),
    SAFETY_GYMNASIUM: (20.0, 40.0, 80.0),
    METADRIVE: (10.0, 20.0, 40.0),
}

METADRIVE_REASON = (
    "MetaDrive tasks need the unpublished safe-metadrive fork and simulator assets downloaded at "
    "first use, neither of which can be installed from the package registries"
)

_BULLET_NAMES = [a + t for a in ("Ant", "Ball", "Car", "Drone") for t in ("Run", "Circle")]
_NAV_NAMES = [
    a + t
    for a in ("Point", "Car")
    for t in ("Button1", "Button2", "Circle1", "Circle2", "Goal1", "Goal2", "Push1", "Push2")
]
_VEL_NAMES = [a + "Velocity" for a in ("Ant", "HalfCheetah", "Hopper", "Swimmer", "Walker2d")]
_MD_NAMES = [r + v for r in ("easy", "medium", "hard") for v in ("sparse", "mean", "dense")]


@lru_cache(maxsize=1)
def dsrl_infos() -> types.ModuleType:
    """``dsrl.infos`` loaded from the installed dsrl package without importing the simulators."""
    spec = importlib.util.find_spec("dsrl")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("dsrl is not installed: run `make install`")
    path = Path(next(iter(spec.submodule_search_locations))) / "infos.py"
    info_spec = importlib.util.spec_from_file_location("_presa_dsrl_infos", path)
    assert info_spec is not None and info_spec.loader is not None
    module = importlib.util.module_from_spec(info_spec)
    info_spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Task:
    """One DSRL task. Constants come from dsrl.infos (properties), the rest from DSRL's naming."""

    name: str
    suite: str
    env_id: str
    simulator_id: str
    supported: bool = True
    unsupported_reason: str = ""

    @property
    def episode_length(self) -> int:
        return int(dsrl_infos().DEFAULT_MAX_EPISODE_STEPS[self.name])

    @property
    def thresholds(self) -> tuple[float, ...]:
        return SUITE_THRESHOLDS[self.suite]

    @property
    def middle_threshold(self) -> float:
        """The default cost threshold of a cell, and the one a safe share is measured at (Bullet 20)."""
        ordered = sorted(self.thresholds)
        return float(ordered[len(ordered) // 2])

    @property
    def max_episode_reward(self) -> float:
        return float(dsrl_infos().MAX_EPISODE_REWARD[self.name])

    @property
    def min_episode_reward(self) -> float:
        return float(dsrl_infos().MIN_EPISODE_REWARD[self.name])

    @property
    def max_episode_cost(self) -> float:
        return float(dsrl_infos().MAX_EPISODE_COST[self.name])

    @property
    def dsrl_filename(self) -> str:
        """DSRL's file name, e.g. ``SafetyBallCircle-v0-80-886.hdf5``."""
        return dsrl_infos().DATASET_URLS[self.name].rsplit("/", 1)[-1]

    def dataset_filename(self, num_trajectories: int) -> str:
        """DSRL's naming scheme ``<SimulatorId>-<maxCost>-<numTrajectories>.hdf5``, with maxCost as
        DSRL's own file name writes it (PointCircle2: 300, where dsrl.infos says 299)."""
        max_cost = self.dsrl_filename[len(self.simulator_id) + 1 :].split("-", 1)[0]
        return f"{self.simulator_id}-{max_cost}-{num_trajectories}.hdf5"

    def normalize(self, reward, cost, threshold: float):  # type: ignore[no-untyped-def]
        """DSRL's normalized (reward, cost); works on floats and numpy arrays."""
        eps = 1.0 if threshold == 0 else 0.0
        span = self.max_episode_reward - self.min_episode_reward
        return (reward - self.min_episode_reward) / span, (cost + eps) / (threshold + eps)

    def require_supported(self) -> None:
        if not self.supported:
            raise UnknownTask(f"task {self.name} is not supported: {self.unsupported_reason}")


def _build() -> dict[str, Task]:
    tasks: list[Task] = []
    for n in _BULLET_NAMES:
        tasks.append(Task(n, BULLET, f"Offline{n}-v0", f"Safety{n}-v0"))
    for n in _NAV_NAMES:
        tasks.append(Task(n, SAFETY_GYMNASIUM, f"Offline{n}Gymnasium-v0", f"Safety{n}Gymnasium-v0"))
    for n in _VEL_NAMES:
        tasks.append(Task(n, SAFETY_GYMNASIUM, f"Offline{n}Gymnasium-v1", f"Safety{n}Gymnasium-v1"))
    for n in _MD_NAMES:
        tasks.append(
            Task(n, METADRIVE, f"OfflineMetadrive-{n}-v0", f"SafeMetaDrive-{n}-v0", False, METADRIVE_REASON)
        )
    return {t.name: t for t in tasks}


TASKS: dict[str, Task] = _build()
_BY_KEY = {}
for _t in TASKS.values():
    for _k in (_t.name, _t.env_id, _t.simulator_id):
        _BY_KEY[_k.lower()] = _t


def paper_tasks() -> list[Task]:
    """The 29 tasks of the paper: 8 Bullet + 21 Safety-Gymnasium."""
    return [t for t in TASKS.values() if t.supported]


def get_task(name: str) -> Task:
    """Look a task up by short name, DSRL env id or simulator id, case-insensitively."""
    task = _BY_KEY.get(name.strip().lower())
    if task is not None:
        return task
    close = difflib.get_close_matches(name.lower(), list(_BY_KEY), n=1, cutoff=0.5)
    hint = f"; did you mean {_BY_KEY[close[0]].name}?" if close else ""
    raise UnknownTask(f"unknown task '{name}'{hint} (`presa-bench tasks` lists them)")


def dataset_dir() -> Path:
    """Where datasets are looked up: $DSRL_DATASET_DIR, else DSRL's default ~/.dsrl/datasets."""
    return Path(os.environ.get("DSRL_DATASET_DIR", os.path.expanduser("~/.dsrl/datasets")))


def task_from_filename(path: Path | str) -> Task | None:
    """The task of a file named with DSRL's scheme ``<SimulatorId>-<maxCost>-<N>.hdf5`` (e.g.
    ``SafetyBallCircle-v0-80-886.hdf5``), or None when the name does not follow it."""
    name = Path(path).name
    for task in TASKS.values():
        prefix = task.simulator_id + "-"
        if name.startswith(prefix):
            parts = name[len(prefix):].removesuffix(".hdf5").split("-")
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                return task
    return None

