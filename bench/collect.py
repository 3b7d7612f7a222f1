"""Build DSRL-style datasets in the real simulators: train behaviour policies, roll them out, filter.

The recipe follows DSRL (Liu et al. 2023, "Datasets and Benchmarks for Offline Safe RL", Sec. 4):

1. Behaviour policies: fast-safe-rl's PPO-Lagrangian (DSRL used FSRL's TRPO-Lagrangian) trained
   in the task's simulator while the cost limit is swept during training (DSRL: BallCircle
   5 -> 200, DroneRun 100 -> 5), so successive checkpoints trade reward for cost differently.
   Actor snapshots are saved along training, the untrained one included (the poor-reward end).
2. Rollouts: every snapshot is rolled out with its mean action plus Gaussian noise at several
   standard deviations (more spread in reward); every episode is kept.
3. Filtering: episodes above the task's MAX_EPISODE_COST are dropped and the rest are thinned on
   a (episode cost, episode reward) grid with dsrl's own ``filter_trajectory``, so the data
   covers the plane evenly instead of piling up where the policies spent most of their time.

All work goes into a work directory (``<dataset dir>/.collect/<Task>-<profile>-seed<S>``):
training state and actor snapshots per run, one ``.npz`` chunk per (snapshot, noise) rollout. A
rerun of the same command skips what is saved and continues an interrupted training run from its
last snapshot. Heavy imports (torch, fsrl, simulators) happen inside functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.errors import BadInput
from bench.io import atomic_torch_save, atomic_write_bytes, load_torch_file
from bench.tasks import BULLET, Task, dataset_dir
from bench.workers import die_with_parent

#: Progress callback: (stage, amount done since the last call). Stages: "train", "rollout".
Report = Callable[[str, int], None]

#: HDF5 group of a collected file holding what exact replay needs: ``episode_seed`` and
#: ``episode_start`` (int64, one per episode, file order). presa-bench's loader reads only DSRL's
#: flat keys; dsrl's ``get_dataset`` returns these two as extra entries (docs/datasets.md).
REPLAY_GROUP = "replay"

STEP_KEYS = ("observations", "next_observations", "actions", "rewards", "costs", "terminals", "timeouts")


@dataclass(frozen=True)
class CollectBudget:
    """How much work one collection does. Sizes are in episodes of the task, so they scale with T."""

    name: str
    #: Training length of each behaviour policy, in episodes (BallCircle: x200 env steps).
    train_episodes: int
    #: One PPO-Lagrangian run per entry: the cost limit swept linearly from start to end, both as
    #: multiples of the task's MAX_EPISODE_COST (DSRL's BallCircle sweep 5 -> 200 is 1/16 -> 2.5).
    cost_limit_sweeps: tuple[tuple[float, float], ...]
    #: Actor snapshots saved evenly along each run, besides the untrained one.
    snapshots: int
    #: Gaussian action-noise standard deviations (actions live in [-1, 1]) of the rollouts.
    noise_stds: tuple[float, ...]
    #: Episodes rolled out per (snapshot, noise std).
    episodes_per_rollout: int
    #: Episodes kept after filtering; None = as many as DSRL's file of the task has.
    target_episodes: int | None
    #: Actor/critic hidden layers (fsrl's PPOLagAgent default is (128, 128)).
    hidden_sizes: tuple[int, ...] = (128, 128)
    #: Parallel simulators of the training collector and episodes per PPO update (fsrl: 20).
    training_envs: int = 10
    episodes_per_update: int = 20
    #: The online safe RL algorithm of the behaviour policies, from fast-safe-rl: "ppo-lag" (its
    #: PPOLagAgent) or "trpo-lag" (TRPOLagAgent, DSRL's own choice): a second implementation, so
    #: a development family does not come from one learner's habits (issue 27).
    agent: str = "ppo-lag"


BUDGETS: dict[str, CollectBudget] = {
    # seconds: for tests and CI; the policies barely train, the noise makes the spread
    "smoke": CollectBudget(
        "smoke", train_episodes=8, cost_limit_sweeps=((0.0625, 2.5),), snapshots=1,
        noise_stds=(0.0, 0.6), episodes_per_rollout=3, target_episodes=8,
        hidden_sizes=(16, 16), training_envs=2, episodes_per_update=4,
    ),
    # minutes on one core for a Bullet task: the limit swept up (DSRL-style) and held tight
    "quick": CollectBudget(
        "quick", train_episodes=1000, cost_limit_sweeps=((0.0625, 2.5), (0.125, 0.125)), snapshots=10,
        noise_stds=(0.0, 0.2, 0.5), episodes_per_rollout=10, target_episodes=None,
    ),
    # quick's runs with fewer rollouts (336 episodes): the six non-Ball Bullet files shipped in
    # bench/assets/datasets were built with it on a shared 2-core machine (docs/datasets.md)
    "lite": CollectBudget(
        "lite", train_episodes=250, cost_limit_sweeps=((0.0625, 2.5), (0.125, 0.125)), snapshots=6,
        noise_stds=(0.0, 0.25, 0.5), episodes_per_rollout=8, target_episodes=300,
    ),
    # lite with 4 episodes per (snapshot, noise) (168 episodes): the last four Bullet files shipped
    # (Ant/Car/Drone Circle, AntRun), collected while the shared machine's load was 15-22
    "mini": CollectBudget(
        "mini", train_episodes=100, cost_limit_sweeps=((0.0625, 2.5), (0.125, 0.125)), snapshots=6,
        noise_stds=(0.0, 0.25, 0.5), episodes_per_rollout=4, target_episodes=150,
    ),
    # DSRL-like: the limit swept up, plus runs held at 1/8, 1/2 and 1 x MAX_EPISODE_COST. Measured
    # on BallCircle: a sweep alone leaves few safe high-reward episodes (the Lagrangian lags the
    # limit), and a limit near the max cost reaches the top of the reward frontier.
    "paper": CollectBudget(
        "paper", train_episodes=2500,
        cost_limit_sweeps=((0.0625, 2.5), (0.125, 0.125), (0.5, 0.5), (1.0, 1.0)),
        snapshots=20, noise_stds=(0.0, 0.15, 0.3, 0.6), episodes_per_rollout=10, target_episodes=None,
    ),
    # the shipped BallRun file's recipe (issue 19, docs/datasets.md "BallRun: the new file"; it separated
    # in 1 of 3 collection seeds there): the runs held at 1/2 and 1 x
    # MAX_EPISODE_COST give limit riders (cost ~40 at the safe riders' reward) and policies too fast
    # to keep (cost ~90 > max cost); held at 3/4 and 9/10 they accelerate through the limit instead.
    "paper-run": CollectBudget(
        "paper-run", train_episodes=2500,
        cost_limit_sweeps=((0.0625, 2.5), (0.125, 0.125), (0.75, 0.75), (0.9, 0.9)),
        snapshots=20, noise_stds=(0.0, 0.15, 0.3, 0.6), episodes_per_rollout=10, target_episodes=None,
    ),
}


#: Development-family recipes (docs/presa.md, "Development family"): never shipped or reported;
#: PreSa's defaults are chosen on them by leaving one dataset out at a time. Each differs from the
#: shipped recipes in the learner, the cost-limit schedule or the action noise.
DEV_BUDGETS: dict[str, CollectBudget] = {
    # limits held at and above the max cost: behaviour that buys reward with cost (few safe episodes)
    "dev-unsafe": CollectBudget(
        "dev-unsafe", train_episodes=1000, cost_limit_sweeps=((1.0, 1.0), (2.5, 2.5), (0.0625, 2.5)), snapshots=10,
        noise_stds=(0.0, 0.1, 0.3), episodes_per_rollout=10, target_episodes=None,
    ),
    # quick's runs rolled out with heavy action noise
    "dev-noisy": CollectBudget(
        "dev-noisy", train_episodes=1000, cost_limit_sweeps=((0.0625, 2.5), (0.125, 0.125)), snapshots=10,
        noise_stds=(0.3, 0.6, 0.9), episodes_per_rollout=10, target_episodes=None,
    ),
    # TRPO-Lagrangian behaviour policies, the limit swept down (DSRL's DroneRun direction) and held
    "dev-trpo": CollectBudget(
        "dev-trpo", train_episodes=1000, cost_limit_sweeps=((2.5, 0.0625), (0.125, 0.125), (0.5, 0.5)), snapshots=10,
        noise_stds=(0.0, 0.25, 0.5), episodes_per_rollout=10, target_episodes=None, agent="trpo-lag",
    ),
}
BUDGETS.update(DEV_BUDGETS)


#: The card's name of each behaviour learner (fsrl's agents; both use its PID Lagrangian).
AGENT_DESCRIPTIONS = {"ppo-lag": "PPOLagAgent (PPO with PID Lagrangian)", "trpo-lag": "TRPOLagAgent (TRPO with PID Lagrangian)"}


def _budget_record(budget: CollectBudget) -> dict[str, Any]:
    """The budget as stored in work directories and cards; the default learner is left out so that
    the records of collections made before the field existed still match."""
    record = asdict(budget)
    if record["agent"] == "ppo-lag":
        del record["agent"]
    return record


def get_budget(name: str) -> CollectBudget:
    try:
        return BUDGETS[name.lower()]
    except KeyError:
        raise BadInput(f"unknown collect profile '{name}': choose one of {', '.join(BUDGETS)}") from None


@dataclass(frozen=True)
class CollectConfig:
    task: Task
    budget: CollectBudget
    seed: int = 0
    #: Processes for training runs and rollouts (each uses one torch thread).
    workers: int = 1
    #: Where the .hdf5 and its .json card go; None = $DSRL_DATASET_DIR (default ~/.dsrl/datasets).
    out_dir: Path | None = None
    #: Overrides the budget's target_episodes.
    episodes: int | None = None
    #: Overrides the budget's train_episodes x T (env steps per behaviour policy).
    train_steps: int | None = None
    #: Grid of the (cost, reward) filter (dsrl's filter_trajectory defaults: 60 x 50).
    cost_bins: int = 60
    reward_bins: int = 50
    #: dsrl's grid_filter drops bins holding <= this many episodes; DSRL used 1 (drops lone
    #: outliers). 0 keeps them: with a few thousand rollouts the extremes of the plane are sparse.
    min_per_bin: int = 0
    #: gzip level of the written file (9 + shuffle: ~13% smaller than DSRL's level 4 on BallCircle).
    compression_level: int = 9
    command: str = ""
    #: Keep at most this share of episodes whose cost is within the task's middle threshold (Bullet:
    #: 20), dropping safe episodes at random after the grid filter: data collected mostly by
    #: policies that break the limit (a development-family axis, issue 27). None = no cap.
    max_safe_share: float | None = None

    def __post_init__(self) -> None:
        self.task.require_supported()
        if self.workers < 1:
            raise BadInput(f"--workers must be at least 1, got {self.workers}")
        if self.episodes is not None and self.episodes < 1:
            raise BadInput(f"--episodes must be at least 1, got {self.episodes}")
        if self.train_steps is not None and self.train_steps < 1:
            raise BadInput(f"--train-steps must be at least 1, got {self.train_steps}")
        if self.seed < 0:
            raise BadInput(f"--seed must be non-negative, got {self.seed}")
        if self.max_safe_share is not None and not 0.0 < self.max_safe_share < 1.0:
            raise BadInput(f"--max-safe-share must be in (0, 1), got {self.max_safe_share}")

    @property
    def directory(self) -> Path:
        return Path(self.out_dir) if self.out_dir is not None else dataset_dir()

    @property
    def work_dir(self) -> Path:
        steps = f"-steps{self.train_steps}" if self.train_steps is not None else ""
        return self.directory / ".collect" / f"{self.task.name}-{self.budget.name}{steps}-seed{self.seed}"

    @property
    def target_episodes(self) -> int:
        if self.episodes is not None:
            return self.episodes
        if self.budget.target_episodes is not None:
            return self.budget.target_episodes
        return int(Path(self.task.dsrl_filename).stem.rsplit("-", 1)[-1])

    @property
    def steps_per_run(self) -> int:
        return self.train_steps if self.train_steps is not None else self.budget.train_episodes * self.task.episode_length


@dataclass
class CollectResult:
    path: Path
    card_path: Path
    card: dict[str, Any]


# --------------------------------------------------------------------------------------------
# Behaviour policies


@dataclass(frozen=True)
class RunSpec:
    """One PPO-Lagrangian training run; everything a worker process needs."""

    task: Task
    index: int
    seed: int
    steps: int
    limit_start: float
    limit_end: float
    snapshots: int
    hidden_sizes: tuple[int, ...]
    training_envs: int
    episodes_per_update: int
    run_dir: Path
    agent: str = "ppo-lag"

    def cost_limit(self, steps_done: int) -> float:
        frac = min(steps_done / self.steps, 1.0)
        return self.limit_start + frac * (self.limit_end - self.limit_start)

    @property
    def done_file(self) -> Path:
        return self.run_dir / "done.json"


def _set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)  # bullet-safety-gym ignores reset(seed=...) and draws from numpy's global RNG
    torch.manual_seed(seed)


def _atomic_json(obj: Any, path: Path) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def train_behaviour_policy(spec: RunSpec, report: Report | None = None) -> dict[str, Any]:
    """Train one PPO-Lagrangian policy with a swept cost limit, saving actor snapshots; resumable.

    The update sequence is fsrl's ``OnpolicyTrainer.policy_update_fn``; the loop is ours so that
    the cost limit can change between updates and snapshots land at exact step counts.
    """
    if spec.done_file.is_file():
        return json.loads(spec.done_file.read_text())
    import torch

    torch.set_num_threads(1)  # fsrl's default thread=4 would take every core of the machine
    import bench  # noqa: F401  (compat patches before fsrl / dsrl)
    from fsrl.agent import PPOLagAgent, TRPOLagAgent
    from fsrl.data import FastCollector
    from fsrl.utils import DummyLogger
    from tianshou.data import VectorReplayBuffer
    from tianshou.env import DummyVectorEnv

    from bench.envs import make_env

    spec.run_dir.mkdir(parents=True, exist_ok=True)
    state_path = spec.run_dir / "state.pt"
    env = make_env(spec.task)

    class _QuietLogger(DummyLogger):  # fsrl prints "Early stop ... max kl" on most updates
        def print(self, *args: Any, **kwargs: Any) -> None:
            pass

    agent_class = {"ppo-lag": PPOLagAgent, "trpo-lag": TRPOLagAgent}[spec.agent]
    agent = agent_class(
        env, logger=_QuietLogger(), cost_limit=spec.cost_limit(0), thread=1, seed=spec.seed,
        hidden_sizes=spec.hidden_sizes,
    )
    policy = agent.policy
    env.close()

    if state_path.is_file():
        state = load_torch_file(state_path)
        policy.load_state_dict(state["policy"])
        policy.optim.load_state_dict(state["optim"])
        steps, seconds, snapshots = state["steps"], state["seconds"], state["snapshots"]
        _set_seed(spec.seed + 7919 * len(snapshots))
    else:
        steps, seconds, snapshots = 0, 0.0, []
        _set_seed(spec.seed)
    if not snapshots:
        snapshots.append(_save_snapshot(spec, policy, 0, 0, float("nan"), float("nan")))

    train_envs = DummyVectorEnv([lambda: make_env(spec.task) for _ in range(spec.training_envs)])
    train_envs.seed(spec.seed + len(snapshots))
    T = spec.task.episode_length
    buffer = VectorReplayBuffer(max(100_000, 2 * (spec.episodes_per_update + spec.training_envs) * T), spec.training_envs)
    collector = FastCollector(policy, train_envs, buffer, exploration_noise=True)
    every = spec.steps / spec.snapshots
    recent: list[tuple[float, float, int]] = []
    started = time.perf_counter()
    try:
        while steps < spec.steps:
            policy.update_cost_limit(spec.cost_limit(steps))
            policy.train()
            stats = collector.collect(n_episode=spec.episodes_per_update)
            # batch 512 and 4 passes: fsrl's OnpolicyAgent.learn defaults
            policy.pre_update_fn(stats_train=stats, batch_size=512, buffer=collector.buffer)
            policy.update(0, collector.buffer, batch_size=512, repeat=4)
            policy.post_update_fn(stats_train=stats)
            collector.reset_buffer(keep_statistics=True)
            n = int(stats["n/st"])
            steps += n
            recent.append((float(stats["rew"]), float(stats["cost"]), int(stats["n/ep"])))
            if steps >= len(snapshots) * every or steps >= spec.steps:
                eps = sum(r[2] for r in recent)
                reward = sum(r[0] * r[2] for r in recent) / eps
                cost = sum(r[1] * r[2] for r in recent) / eps
                recent.clear()
                snapshots.append(_save_snapshot(spec, policy, len(snapshots), steps, reward, cost))
                elapsed = seconds + time.perf_counter() - started
                atomic_torch_save(
                    {"policy": policy.state_dict(), "optim": policy.optim.state_dict(), "steps": steps,
                     "seconds": elapsed, "snapshots": snapshots},
                    state_path,
                )
            if report is not None:  # after saving, so an interrupt here loses no reported work
                report("train", n)
    finally:
        train_envs.close()
    summary = {
        "run": spec.index,
        "cost_limit_sweep": [spec.limit_start, spec.limit_end],
        "env_steps": steps,
        "train_seconds": round(seconds + time.perf_counter() - started, 2),
        "snapshots": snapshots,
    }
    _atomic_json(summary, spec.done_file)
    return summary


def _save_snapshot(spec: RunSpec, policy: Any, index: int, steps: int, reward: float, cost: float) -> dict[str, Any]:
    path = spec.run_dir / f"actor-{index:03d}.pt"
    atomic_torch_save(policy.actor.state_dict(), path)
    return {
        "file": path.name,
        "env_steps": steps,
        "cost_limit": round(spec.cost_limit(steps), 3),
        # mean over the training episodes (stochastic policy) since the previous snapshot
        "train_reward": None if np.isnan(reward) else round(reward, 2),
        "train_cost": None if np.isnan(cost) else round(cost, 2),
    }


def _make_actor(obs_dim: int, act_dim: int, max_action: float, hidden_sizes: tuple[int, ...]) -> Any:
    """The actor of fsrl's PPOLagAgent (tianshou Net + ActorProb), to load saved weights into."""
    from tianshou.utils.net.common import Net
    from tianshou.utils.net.continuous import ActorProb

    net = Net((obs_dim,), hidden_sizes=hidden_sizes, device="cpu")
    return ActorProb(net, (act_dim,), max_action=max_action, unbounded=False, device="cpu")


# --------------------------------------------------------------------------------------------
# Rollouts


@dataclass(frozen=True)
class RolloutSpec:
    task: Task
    actor_file: Path
    hidden_sizes: tuple[int, ...]
    noise_std: float
    episodes: int
    collection_seed: int
    run: int
    snapshot: int
    noise_index: int
    out_file: Path
    #: simulators stepped side by side so that the policy runs once per step on a batch
    envs: int = 10

    @property
    def seed(self) -> tuple[int, ...]:
        """Entropy of this chunk's noise and episode seeds."""
        return (self.collection_seed, self.run, self.snapshot, self.noise_index)


def reset_for_replay(env: Any, episode_seed: int) -> np.ndarray:
    """Start an episode from its seed, the same way in collection and in replay.

    bullet-safety-gym ignores ``reset(seed=...)`` and draws the start state from numpy's global
    RNG, so that RNG is seeded first; Safety-Gymnasium uses the seed passed to ``reset``.
    Replaying an episode = a fresh ``make_env(task)``, this call with the file's
    ``replay/episode_seed``, then stepping the stored actions (collection also runs every
    episode in a fresh simulator).
    """
    np.random.seed(episode_seed)
    return env.reset(seed=int(episode_seed))[0]


def rollout(spec: RolloutSpec, report: Report | None = None) -> Path:
    """Roll an actor snapshot out for ``spec.episodes`` episodes and save them as one .npz chunk."""
    if spec.out_file.is_file():
        return spec.out_file
    import torch

    torch.set_num_threads(1)
    import bench  # noqa: F401
    from bench.envs import make_env

    n_envs = min(spec.envs, spec.episodes)
    envs = [make_env(spec.task) for _ in range(n_envs)]
    space = envs[0].action_space
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    actor = _make_actor(envs[0].observation_space.shape[0], space.shape[0], float(high[0]), spec.hidden_sizes)
    actor.load_state_dict(torch.load(spec.actor_file, weights_only=True))
    actor.eval()
    noise_rng = np.random.default_rng(list(spec.seed))

    started = 0
    obs = np.zeros((n_envs, envs[0].observation_space.shape[0]))
    active = np.zeros(n_envs, bool)
    seeds = np.zeros(n_envs, np.int64)  # the episode seed of each simulator's current episode
    used = np.zeros(n_envs, bool)

    def reset(i: int) -> None:
        nonlocal started
        episode_seed = int(np.random.SeedSequence([*spec.seed, started]).generate_state(1)[0])
        seeds[i] = episode_seed
        if used[i]:
            # every episode in a fresh simulator: a pybullet simulator that has run an episode
            # starts the same seed differently (measured on CarRun), so replay needs a fresh one.
            # No profile has more episodes per chunk than simulators, so this changes no file.
            envs[i].close()
            envs[i] = make_env(spec.task)
        used[i] = True
        obs[i] = reset_for_replay(envs[i], episode_seed)
        active[i] = True
        started += 1

    for i in range(n_envs):
        reset(i)
    buffers: list[dict[str, list]] = [{k: [] for k in STEP_KEYS} for _ in range(n_envs)]
    finished: list[dict[str, np.ndarray]] = []
    while active.any():
        ids = np.flatnonzero(active)
        with torch.no_grad():
            mean = actor(torch.as_tensor(obs[ids], dtype=torch.float32))[0][0].numpy().astype(np.float64)
        # fsrl's PPOLagrangian maps actions the same way: clip to [-1, 1], then scale to the bounds
        raw = np.clip(mean + spec.noise_std * noise_rng.standard_normal(mean.shape), -1.0, 1.0)
        # rounded to the float32 the file stores, so that stepping the stored actions replays exactly
        actions = (low + (high - low) * (raw + 1.0) / 2.0).astype(np.float32).astype(np.float64)
        for j, i in enumerate(ids):
            nxt, reward, terminated, truncated, info = envs[i].step(actions[j])
            b = buffers[i]
            b["observations"].append(obs[i].copy())
            b["next_observations"].append(nxt)
            b["actions"].append(actions[j])
            b["rewards"].append(reward)
            b["costs"].append(info.get("cost", 0.0))
            b["terminals"].append(terminated)
            b["timeouts"].append(truncated and not terminated)
            obs[i] = nxt
            if terminated or truncated:
                finished.append({**{k: np.asarray(v) for k, v in b.items()}, "seed": seeds[i]})
                buffers[i] = {k: [] for k in STEP_KEYS}
                if report is not None:
                    report("rollout", 1)
                if started < spec.episodes:
                    reset(i)
                else:
                    active[i] = False
    for env in envs:
        env.close()
    _save_chunk(finished, spec.out_file)
    return spec.out_file


def _save_chunk(episodes: list[dict[str, np.ndarray]], path: Path) -> None:
    arrays = {k: np.concatenate([e[k] for e in episodes]) for k in STEP_KEYS}
    for k in ("observations", "next_observations", "actions", "rewards", "costs"):
        arrays[k] = arrays[k].astype(np.float32)
    arrays["terminals"] = arrays["terminals"].astype(bool)
    arrays["timeouts"] = arrays["timeouts"].astype(bool)
    arrays["episode_lengths"] = np.array([len(e["rewards"]) for e in episodes], np.int64)
    arrays["episode_seeds"] = np.array([e["seed"] for e in episodes], np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_chunk(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


# --------------------------------------------------------------------------------------------
# Filtering


def select_episodes(
    costs: np.ndarray,
    rewards: np.ndarray,
    target: int,
    max_cost: float,
    seed: int,
    cost_bins: int = 60,
    reward_bins: int = 50,
    min_per_bin: int = 0,
) -> np.ndarray:
    """Indices of at most ``target`` episodes spread over the (cost, reward) plane, sorted.

    Episodes above ``max_cost`` are dropped (DSRL's files stop at MAX_EPISODE_COST). dsrl's
    ``filter_trajectory`` keeps at most ``max_num_per_bin`` episodes per grid cell: the smallest
    cap that keeps ``target`` episodes is used, and the surplus of that cap is removed at random.
    """
    import bench  # noqa: F401
    from dsrl.offline_env import filter_trajectory

    costs = np.asarray(costs, np.float64)
    rewards = np.asarray(rewards, np.float64)
    eligible = np.flatnonzero(costs <= max_cost)
    if len(eligible) == 0:
        return eligible

    def run(cap: int) -> list[int]:
        random.seed(seed)  # grid_filter samples with python's random.sample
        return filter_trajectory(
            costs[eligible], rewards[eligible], list(eligible), cost_min=0.0, cost_max=max_cost,
            cost_bins=cost_bins, rew_bins=reward_bins, max_num_per_bin=cap, min_num_per_bin=min_per_bin,
        )[2]

    rng = np.random.default_rng(seed)
    if np.ptp(costs[eligible]) == 0 or np.ptp(rewards[eligible]) == 0:
        # a degenerate plane (e.g. every episode cost 0) has zero-width grid cells: sample uniformly
        return np.sort(rng.choice(eligible, size=min(target, len(eligible)), replace=False))
    lo, hi = 1, max(1, len(eligible))
    while lo < hi:  # smallest cap whose filter keeps >= target episodes (monotone in the cap)
        mid = (lo + hi) // 2
        if len(run(mid)) >= target:
            hi = mid
        else:
            lo = mid + 1
    kept = np.array(run(lo), np.int64)
    if len(kept) > target:
        kept = rng.choice(kept, size=target, replace=False)
    return np.sort(kept)


def cap_safe_share(kept: np.ndarray, costs: np.ndarray, threshold: float, share: float, seed: int) -> np.ndarray:
    """``kept`` with safe episodes (cost <= threshold) dropped at random until they are at most
    ``share`` of the rest; every unsafe episode stays. Sorted."""
    safe = kept[costs[kept] <= threshold]
    unsafe = kept[costs[kept] > threshold]
    allowed = int(np.floor(share / (1.0 - share) * len(unsafe)))
    if len(safe) <= allowed:
        return kept
    rng = np.random.default_rng([seed, 0x5AFE])
    return np.sort(np.concatenate([unsafe, rng.choice(safe, size=allowed, replace=False)]))


# --------------------------------------------------------------------------------------------
# Orchestration


def _run_specs(cfg: CollectConfig) -> list[RunSpec]:
    c = cfg.task.max_episode_cost
    return [
        RunSpec(
            task=cfg.task, index=i, seed=cfg.seed * 100 + i, steps=cfg.steps_per_run,
            limit_start=start * c, limit_end=end * c, snapshots=cfg.budget.snapshots,
            hidden_sizes=cfg.budget.hidden_sizes, training_envs=cfg.budget.training_envs,
            episodes_per_update=cfg.budget.episodes_per_update, run_dir=cfg.work_dir / "policies" / f"run{i}",
            agent=cfg.budget.agent,
        )
        for i, (start, end) in enumerate(cfg.budget.cost_limit_sweeps)
    ]


def _rollout_specs(cfg: CollectConfig, runs: list[dict[str, Any]], specs: list[RunSpec]) -> list[RolloutSpec]:
    out = []
    for run, spec in zip(runs, specs):
        for snap_index, snap in enumerate(run["snapshots"]):
            for k, std in enumerate(cfg.budget.noise_stds):
                out.append(
                    RolloutSpec(
                        task=cfg.task, actor_file=spec.run_dir / snap["file"], hidden_sizes=cfg.budget.hidden_sizes,
                        noise_std=std, episodes=cfg.budget.episodes_per_rollout, collection_seed=cfg.seed,
                        run=run["run"], snapshot=snap_index, noise_index=k,
                        out_file=cfg.work_dir / "episodes" / f"run{run['run']}-snap{snap_index:03d}-noise{k}.npz",
                    )
                )
    return out


def _queue_report(queue: Any, stage: str, amount: int) -> None:
    queue.put((stage, amount))


def _map(fn: Callable[..., Any], specs: list[Any], workers: int, report: Report | None) -> list[Any]:
    """fn(spec, report) for every spec, in a process pool when workers > 1; results in spec order.

    ``fn`` returns saved work at once, so only specs with work left go to the pool.
    """
    todo = [s for s in specs if not _is_saved(s)]
    if workers == 1 or len(todo) <= 1:
        return [fn(s, report) for s in specs]
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork after torch/pybullet imports is not safe
    # workers die with this process (bench.workers): a killed collect leaves no orphan training on
    pool = ProcessPoolExecutor(min(workers, len(specs)), mp_context=ctx, initializer=die_with_parent, initargs=(os.getpid(),))
    with ctx.Manager() as manager, pool:
        queue = manager.Queue()
        futures: list[Future] = [pool.submit(fn, s, partial(_queue_report, queue)) for s in todo]
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            while not queue.empty():
                stage, amount = queue.get()
                if report is not None:
                    report(stage, amount)
        while not queue.empty():
            stage, amount = queue.get()
            if report is not None:
                report(stage, amount)
        results = iter([f.result() for f in futures])
    return [next(results) if s in todo else fn(s, report) for s in specs]


def _is_saved(spec: RunSpec | RolloutSpec) -> bool:
    return (spec.done_file if isinstance(spec, RunSpec) else spec.out_file).is_file()


def _versions(task: Task) -> dict[str, str]:
    names = ["presa-bench", "dsrl", "fast-safe-rl", "tianshou", "torch", "gymnasium", "numpy", "h5py"]
    names += ["bullet-safety-gym", "pybullet"] if task.suite == BULLET else ["safety-gymnasium", "mujoco"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def dataset_summary(task: Task, ep_costs: np.ndarray, ep_rewards: np.ndarray) -> dict[str, Any]:
    """Episodes per cost band (between the task's thresholds) and reward quantiles."""
    edges = [0.0, *task.thresholds, task.max_episode_cost]
    bands = {f"[0,{edges[1]:g}]": int(np.sum(ep_costs <= edges[1]))}
    for a, b in zip(edges[1:-1], edges[2:]):
        bands[f"({a:g},{b:g}]"] = int(np.sum((ep_costs > a) & (ep_costs <= b)))
    qs = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)

    def quantiles(x: np.ndarray) -> dict[str, float] | None:
        return {f"q{int(q * 100)}": round(float(np.quantile(x, q)), 2) for q in qs} if len(x) else None

    return {
        "episodes": int(len(ep_costs)),
        "episodes_per_cost_band": bands,
        "episodes_at_or_below_threshold": {f"{k:g}": int(np.sum(ep_costs <= k)) for k in task.thresholds},
        "reward_quantiles": quantiles(ep_rewards),
        **{f"reward_quantiles_cost_le_{k:g}": quantiles(ep_rewards[ep_costs <= k]) for k in task.thresholds},
        "cost_quantiles": {f"q{int(q * 100)}": round(float(np.quantile(ep_costs, q)), 2) for q in qs},
    }


def collect(cfg: CollectConfig, report: Report | None = None, on_stage: Callable[[str, int], None] | None = None) -> CollectResult:
    """Train (or reuse) behaviour policies, roll them out (or reuse chunks), filter, write file + card.

    ``on_stage(stage, total)`` announces a stage and its total work ("train": env steps still to
    do, "rollout": episodes still to roll out) before ``report`` counts it down.
    """
    from bench.data import write_dsrl_hdf5

    t0 = time.perf_counter()
    _claim_work_dir(cfg)

    specs = _run_specs(cfg)
    if on_stage is not None:
        on_stage("train", sum(s.steps - _saved_steps(s) for s in specs if not _is_saved(s)))
    t_train = time.perf_counter()
    runs = _map(train_behaviour_policy, specs, cfg.workers, report)
    train_wall = time.perf_counter() - t_train

    rollouts = _rollout_specs(cfg, runs, specs)
    if on_stage is not None:
        on_stage("rollout", sum(r.episodes for r in rollouts if not _is_saved(r)))
    t_roll = time.perf_counter()
    chunk_files = _map(rollout, rollouts, cfg.workers, report)
    rollout_wall = time.perf_counter() - t_roll

    # every episode of every chunk, in a fixed order, as (chunk, start, length) + its sums
    chunks = [load_chunk(p) for p in chunk_files]
    ep_chunk, ep_start, ep_len, ep_cost, ep_reward = [], [], [], [], []
    ep_seed: list[int] | None = []  # None once a chunk saved before seeds were recorded is met
    deterministic: dict[tuple[int, int], tuple[float, float]] = {}  # (run, snapshot) -> noise-free means
    for ci, (spec, chunk) in enumerate(zip(rollouts, chunks)):
        starts = np.concatenate([[0], np.cumsum(chunk["episode_lengths"])[:-1]])
        rs = np.add.reduceat(chunk["rewards"].astype(np.float64), starts)
        cs = np.add.reduceat(chunk["costs"].astype(np.float64), starts)
        ep_chunk += [ci] * len(starts)
        ep_start += list(starts)
        ep_len += list(chunk["episode_lengths"])
        ep_reward += list(rs)
        ep_cost += list(cs)
        if ep_seed is not None:
            ep_seed = ep_seed + list(chunk["episode_seeds"]) if "episode_seeds" in chunk else None
        if spec.noise_std == 0.0:
            deterministic[(spec.run, spec.snapshot)] = (round(float(rs.mean()), 2), round(float(cs.mean()), 2))
    costs, rewards = np.array(ep_cost), np.array(ep_reward)

    kept = select_episodes(
        costs, rewards, cfg.target_episodes, cfg.task.max_episode_cost, cfg.seed,
        cfg.cost_bins, cfg.reward_bins, cfg.min_per_bin,
    )
    if len(kept) == 0:
        raise BadInput(
            f"no collected episode of {cfg.task.name} has cost <= {cfg.task.max_episode_cost:g}; "
            "use a larger --profile"
        )
    if cfg.max_safe_share is not None:
        kept = cap_safe_share(kept, costs, cfg.task.middle_threshold, cfg.max_safe_share, cfg.seed)
    arrays = {
        k: np.concatenate([chunks[ep_chunk[i]][k][ep_start[i]: ep_start[i] + ep_len[i]] for i in kept])
        for k in STEP_KEYS
    }
    path = cfg.directory / cfg.task.dataset_filename(len(kept))
    write_dsrl_hdf5(path, arrays, compression_level=cfg.compression_level, groups=_replay_group(ep_seed, ep_len, kept))

    for run in runs:
        for i, snap in enumerate(run["snapshots"]):
            if (run["run"], i) in deterministic:
                snap["rollout_reward"], snap["rollout_cost"] = deterministic[(run["run"], i)]
    card = {
        "task": cfg.task.name,
        "env_id": cfg.task.env_id,
        "simulator_id": cfg.task.simulator_id,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "bytes": path.stat().st_size,
        "seed": cfg.seed,
        "profile": cfg.budget.name,
        "budget": _budget_record(cfg.budget),
        **({"max_safe_share": {"share": cfg.max_safe_share, "threshold": cfg.task.middle_threshold}}
           if cfg.max_safe_share is not None else {}),
        "steps_per_run": cfg.steps_per_run,
        "filter": {"max_episode_cost": cfg.task.max_episode_cost, "target_episodes": cfg.target_episodes,
                   "cost_bins": cfg.cost_bins, "reward_bins": cfg.reward_bins, "min_per_bin": cfg.min_per_bin,
                   "tool": "dsrl.offline_env.filter_trajectory"},
        "behaviour_policy": f"fsrl {AGENT_DESCRIPTIONS[cfg.budget.agent]}, cost limit swept linearly per run; "
                            "snapshot mean action + Gaussian noise of std noise_stds",
        "policies": runs,
        "counts": {
            "episodes_collected": int(len(costs)),
            "episodes_above_max_cost": int(np.sum(costs > cfg.task.max_episode_cost)),
            "episodes": int(len(kept)),
            "transitions": int(len(arrays["rewards"])),
        },
        "collected": dataset_summary(cfg.task, costs[costs <= cfg.task.max_episode_cost],
                                     rewards[costs <= cfg.task.max_episode_cost]),
        "dataset": dataset_summary(cfg.task, costs[kept], rewards[kept]),
        "timing_seconds": {
            # training time summed over runs as saved with them (also when trained in an earlier call)
            "training_per_run": [r["train_seconds"] for r in runs],
            "training_wall_this_call": round(train_wall, 2),
            "rollout_wall_this_call": round(rollout_wall, 2),
            "total_wall_this_call": round(time.perf_counter() - t0, 2),
        },
        "workers": cfg.workers,
        "versions": _versions(cfg.task),
        "command": cfg.command or " ".join(sys.argv),
        "host": {"cpus": os.cpu_count(), "machine": platform.machine()},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    card_path = path.with_suffix(".json")
    _atomic_json(card, card_path)
    return CollectResult(path=path, card_path=card_path, card=card)


def _replay_group(ep_seed: list[int] | None, ep_len: list[int], kept: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """The file's ``replay`` group: each kept episode's seed and first transition, in file order.

    Chunks saved before seeds were recorded have no ``episode_seeds`` (``ep_seed`` None): no group.
    """
    if ep_seed is None:
        return {}
    lengths = np.array([ep_len[i] for i in kept], np.int64)
    return {REPLAY_GROUP: {
        "episode_seed": np.array([ep_seed[i] for i in kept], np.int64),
        "episode_start": np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
    }}


def _claim_work_dir(cfg: CollectConfig) -> None:
    """Create the work directory, or check that its saved work was made with the same budget."""
    config = json.loads(json.dumps({"task": cfg.task.name, "seed": cfg.seed, "budget": _budget_record(cfg.budget),
                                    "steps_per_run": cfg.steps_per_run}))
    path = cfg.work_dir / "config.json"
    if path.is_file():
        if json.loads(path.read_text()) != config:
            raise BadInput(
                f"{cfg.work_dir} holds work of a different budget (the profile changed since it was "
                "saved): delete that directory to start again"
            )
        return
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    _atomic_json(config, path)


def _saved_steps(spec: RunSpec) -> int:
    """Env steps already done by an interrupted run (from its last snapshot), for progress totals."""
    state_path = spec.run_dir / "state.pt"
    if not state_path.is_file():
        return 0
    return int(load_torch_file(state_path)["steps"])

