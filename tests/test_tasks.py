"""The task registry: the paper's 29 tasks, thresholds, constants from dsrl.infos, name lookup."""

from __future__ import annotations

import pytest

import bench  # noqa: F401
from bench.errors import UnknownTask
from bench.tasks import BULLET, SAFETY_GYMNASIUM, TASKS, get_task, paper_tasks

PAPER_BULLET = {"AntRun", "BallRun", "CarRun", "DroneRun", "AntCircle", "BallCircle", "CarCircle", "DroneCircle"}
PAPER_SG = {
    f"{a}{t}"
    for a in ("Point", "Car")
    for t in ("Button1", "Button2", "Circle1", "Circle2", "Goal1", "Goal2", "Push1", "Push2")
} | {f"{a}Velocity" for a in ("Ant", "HalfCheetah", "Hopper", "Swimmer", "Walker2d")}


def test_all_38_tasks_29_supported():
    assert len(TASKS) == 38
    supported = {t.name for t in paper_tasks()}
    assert supported == PAPER_BULLET | PAPER_SG
    unsupported = [t for t in TASKS.values() if not t.supported]
    assert len(unsupported) == 9 and all("MetaDrive" in t.unsupported_reason for t in unsupported)


def test_thresholds_per_suite():
    for name in PAPER_BULLET:
        assert get_task(name).suite == BULLET and get_task(name).thresholds == (10, 20, 40)
    for name in PAPER_SG:
        assert get_task(name).suite == SAFETY_GYMNASIUM and get_task(name).thresholds == (20, 40, 80)


def test_constants_equal_dsrl_infos():
    from dsrl import infos

    for task in TASKS.values():
        assert task.max_episode_reward == infos.MAX_EPISODE_REWARD[task.name]
        assert task.min_episode_reward == infos.MIN_EPISODE_REWARD[task.name]
        assert task.max_episode_cost == infos.MAX_EPISODE_COST[task.name]
        assert task.episode_length == infos.DEFAULT_MAX_EPISODE_STEPS[task.name]
        assert task.dsrl_filename == infos.DATASET_URLS[task.name].rsplit("/", 1)[1]
        # DSRL's file names follow <SimulatorId>-<maxCost>-<N>.hdf5
        assert task.dsrl_filename.startswith(task.simulator_id + "-")
        n = int(task.dsrl_filename.rsplit("-", 1)[1].split(".")[0])
        assert task.dataset_filename(n) == task.dsrl_filename


def test_env_ids_registered_by_dsrl():
    import gymnasium as gym

    import dsrl  # noqa: F401

    for task in paper_tasks():
        assert task.env_id in gym.envs.registry, task.env_id
        spec = gym.envs.registry[task.env_id]
        assert spec.max_episode_steps == task.episode_length


@pytest.mark.parametrize("name", ["BallCircle", "ballcircle", "BALLCIRCLE", " BallCircle ", "OfflineBallCircle-v0", "SafetyBallCircle-v0"])
def test_lookup_is_case_insensitive(name):
    assert get_task(name).name == "BallCircle"


def test_typo_suggests_closest():
    with pytest.raises(UnknownTask, match="did you mean BallCircle"):
        get_task("BallCirle")
    with pytest.raises(UnknownTask, match="unknown task 'zzz'"):
        get_task("zzz")


def test_unsupported_task_says_why():
    with pytest.raises(UnknownTask, match="MetaDrive"):
        get_task("easysparse").require_supported()


def test_normalization_matches_dsrl():
    import gymnasium as gym

    import dsrl  # noqa: F401

    task = get_task("BallCircle")
    env = gym.make(task.env_id)
    for threshold in (0, 10, 20):
        env.unwrapped.set_target_cost(threshold)
        want = env.unwrapped.get_normalized_score(400.0, 15.0)
        got = task.normalize(400.0, 15.0, threshold)
        assert got == pytest.approx(want)
