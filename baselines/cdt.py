"""CDT (ground truth): osrl-lib's Constrained Decision Transformer, as in OSRL's examples/train/train_cdt.py.

Training is OSRL's: ``SequenceDataset`` (return-to-go and cost-to-go from the dataset's reward and
cost, Pareto-frontier augmentation, cost-weighted sampling), ``CDTTrainer.train_one_step``. The
augmentation needs oapackage, which has no numpy-1.x wheel; baselines/oapackage_shim.py stands in.

Acting (``CDTPolicy``) follows ``CDTTrainer.rollout``, batched: the policy is conditioned on
(target return x reward_scale, target cost x cost_scale) and after each step subtracts the step's
reward x reward_scale and cost x cost_scale. OSRL gets the scaled reward from an env wrapped with
reward_scale; bench.evaluation steps the raw env, so the policy applies the scale itself and the
episode returns it reports stay unscaled. The target cost is the run's threshold. The target return
is OSRL's per-task value for that threshold (``target_returns`` of cdt_configs.py) on DSRL's own
files, for which OSRL read those values off the data; on a file this project collected (one with a
collection card, ``<file>.json``, as the shipped files have) DSRL's values can lie outside the
file's returns altogether (CarCircle: targets 450-550, returns -2..40), so the target is read off
the file the same way: `dataset_target_return`.

A return-conditioned policy needs each step's reward and cost: bench.evaluation gives them through
the optional hooks ``begin(num_envs)`` / ``observe(rewards, costs, done)`` (closed loop, OSRL's
rollout; tests/test_baselines_osrl.py checks the episodes equal OSRL's). An evaluator that only calls
``act`` gets a documented fallback: the to-go values fall linearly over the episode (the targets
spread evenly over T steps), reported by ``CDTPolicy.closed_loop = False`` and a one-time warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Sequence

import numpy as np

from baselines import osrl_common as oc
from bench.errors import BadInput
from bench.interfaces import Algorithm, Learner, TrainInputs, TrainSpec


class _PerTask(NamedTuple):
    seq_len: int
    target_returns: tuple[tuple[float, float], ...]  # (reward return, cost return) per threshold
    deg: int
    max_reward: float
    max_rew_decrease: float
    min_reward: float


#: OSRL's per-task CDT values (examples/configs/cdt_configs.py, CDT_DEFAULT_CONFIG), generated from
#: that file; OfflineCarCircle-v0 uses the base CDTTrainConfig's values.
PER_TASK: dict[str, _PerTask] = {
    "OfflineCarCircle-v0": _PerTask(10, ((450.0, 10.0), (500.0, 20.0), (550.0, 50.0)), 4, 600.0, 100.0, 1.0),
    "OfflineAntRun-v0": _PerTask(10, ((700.0, 10.0), (750.0, 20.0), (800.0, 40.0)), 3, 1000.0, 150.0, 1.0),
    "OfflineDroneRun-v0": _PerTask(10, ((400.0, 10.0), (500.0, 20.0), (600.0, 40.0)), 1, 700.0, 100.0, 1.0),
    "OfflineDroneCircle-v0": _PerTask(10, ((700.0, 10.0), (750.0, 20.0), (800.0, 40.0)), 1, 1000.0, 100.0, 1.0),
    "OfflineCarRun-v0": _PerTask(10, ((575.0, 10.0), (575.0, 20.0), (575.0, 40.0)), 0, 600.0, 100.0, 1.0),
    "OfflineAntCircle-v0": _PerTask(10, ((300.0, 10.0), (350.0, 20.0), (400.0, 40.0)), 2, 500.0, 100.0, 1.0),
    "OfflineBallCircle-v0": _PerTask(10, ((700.0, 10.0), (750.0, 20.0), (800.0, 40.0)), 2, 1000.0, 200.0, 1.0),
    "OfflineBallRun-v0": _PerTask(10, ((500.0, 10.0), (500.0, 20.0), (700.0, 40.0)), 2, 1400.0, 200.0, 1.0),
    "OfflineCarButton1Gymnasium-v0": _PerTask(10, ((35.0, 20.0), (35.0, 40.0), (35.0, 80.0)), 0, 45.0, 10.0, 1.0),
    "OfflineCarButton2Gymnasium-v0": _PerTask(10, ((40.0, 20.0), (40.0, 40.0), (40.0, 80.0)), 0, 50.0, 10.0, 1.0),
    "OfflineCarCircle1Gymnasium-v0": _PerTask(10, ((20.0, 20.0), (22.5, 40.0), (25.0, 80.0)), 1, 30.0, 10.0, 1.0),
    "OfflineCarCircle2Gymnasium-v0": _PerTask(10, ((20.0, 20.0), (21.0, 40.0), (22.0, 80.0)), 1, 30.0, 10.0, 1.0),
    "OfflineCarGoal1Gymnasium-v0": _PerTask(10, ((40.0, 20.0), (40.0, 40.0), (40.0, 80.0)), 1, 50.0, 5.0, 1.0),
    "OfflineCarGoal2Gymnasium-v0": _PerTask(10, ((30.0, 20.0), (30.0, 40.0), (30.0, 80.0)), 1, 35.0, 5.0, 1.0),
    "OfflineCarPush1Gymnasium-v0": _PerTask(10, ((15.0, 20.0), (15.0, 40.0), (15.0, 80.0)), 0, 20.0, 5.0, 1.0),
    "OfflineCarPush2Gymnasium-v0": _PerTask(10, ((12.0, 20.0), (12.0, 40.0), (12.0, 80.0)), 0, 15.0, 3.0, 1.0),
    "OfflinePointButton1Gymnasium-v0": _PerTask(10, ((40.0, 20.0), (40.0, 40.0), (40.0, 80.0)), 0, 45.0, 5.0, 1.0),
    "OfflinePointButton2Gymnasium-v0": _PerTask(10, ((40.0, 20.0), (40.0, 40.0), (40.0, 80.0)), 0, 50.0, 10.0, 1.0),
    "OfflinePointCircle1Gymnasium-v0": _PerTask(10, ((50.0, 20.0), (52.5, 40.0), (55.0, 80.0)), 1, 65.0, 5.0, 1.0),
    "OfflinePointCircle2Gymnasium-v0": _PerTask(10, ((45.0, 20.0), (47.5, 40.0), (50.0, 80.0)), 1, 55.0, 5.0, 1.0),
    "OfflinePointGoal1Gymnasium-v0": _PerTask(10, ((30.0, 20.0), (30.0, 40.0), (30.0, 80.0)), 0, 35.0, 5.0, 1.0),
    "OfflinePointGoal2Gymnasium-v0": _PerTask(10, ((30.0, 20.0), (30.0, 40.0), (30.0, 80.0)), 1, 35.0, 5.0, 1.0),
    "OfflinePointPush1Gymnasium-v0": _PerTask(10, ((15.0, 20.0), (15.0, 40.0), (15.0, 80.0)), 0, 20.0, 5.0, 1.0),
    "OfflinePointPush2Gymnasium-v0": _PerTask(10, ((12.0, 20.0), (12.0, 40.0), (12.0, 80.0)), 0, 15.0, 3.0, 1.0),
    "OfflineAntVelocityGymnasium-v1": _PerTask(10, ((2800.0, 20.0), (2800.0, 40.0), (2800.0, 80.0)), 1, 3000.0, 500.0, 1.0),
    "OfflineHalfCheetahVelocityGymnasium-v1": _PerTask(10, ((3000.0, 20.0), (3000.0, 40.0), (3000.0, 80.0)), 1, 3000.0, 500.0, 1.0),
    "OfflineHopperVelocityGymnasium-v1": _PerTask(10, ((1750.0, 20.0), (1750.0, 40.0), (1750.0, 80.0)), 1, 2000.0, 300.0, 1.0),
    "OfflineSwimmerVelocityGymnasium-v1": _PerTask(10, ((160.0, 20.0), (160.0, 40.0), (160.0, 80.0)), 1, 250.0, 50.0, 1.0),
    "OfflineWalker2dVelocityGymnasium-v1": _PerTask(10, ((2800.0, 20.0), (2800.0, 40.0), (2800.0, 80.0)), 1, 3600.0, 800.0, 1.0),
}


@dataclass
class CDTConfig:
    """OSRL's CDTTrainConfig (examples/configs/cdt_configs.py): base values, then the per-task ones
    (PER_TASK: seq_len, deg, max_reward, max_rew_decrease, min_reward, target return)."""

    # model (OSRL base values)
    embedding_dim: int = 128
    num_layers: int = 3
    num_heads: int = 8
    action_head_layers: int = 1
    seq_len: int = 10
    attention_dropout: float = 0.1
    residual_dropout: float = 0.1
    embedding_dropout: float = 0.1
    time_emb: bool = True
    use_rew: bool = True
    use_cost: bool = True
    cost_transform: bool = True
    cost_prefix: bool = False
    add_cost_feat: bool = False
    mul_cost_feat: bool = False
    cat_cost_feat: bool = False
    stochastic: bool = True
    init_temperature: float = 0.1
    # training (OSRL base values)
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    clip_grad: float = 0.25
    batch_size: int = 2048
    lr_warmup_steps: int = 500
    reward_scale: float = 0.1
    cost_scale: float = 1.0
    loss_cost_weight: float = 0.02
    loss_state_weight: float = 0.0
    cost_reverse: bool = False
    no_entropy: bool = False
    # data augmentation and sampling (OSRL base values; deg/max_reward/... per task)
    deg: int = 4
    pf_sample: bool = False
    beta: float = 1.0
    augment_percent: float = 0.2
    max_reward: float = 600.0
    min_reward: float = 1.0
    max_rew_decrease: float = 100.0
    pf_only: bool = False
    rmin: float = 300.0
    cost_bins: int = 60
    npb: int = 5
    cost_sample: bool = True
    #: OSRL: linear True -> cost-sampling weight 70 - episode cost (else 1 / (cost + 10)).
    linear: bool = True
    start_sampling: bool = False
    prob: float = 0.2
    random_aug: float = 0.0
    aug_rmin: float = 400.0
    aug_rmax: float = 500.0
    aug_cmin: float = -2.0
    aug_cmax: float = 25.0
    cgap: float = 5.0
    rstd: float = 1.0
    cstd: float = 0.2
    #: Reward return the policy is conditioned on; None = from ``target_source``.
    target_return: float | None = None
    #: Where the target return comes from when target_return is None: "osrl" = OSRL's per-task
    #: target for the threshold (the target_returns entry with that cost, else the nearest one);
    #: "dataset" = `dataset_target_return` of the file used; "auto" = "osrl" on DSRL's files,
    #: "dataset" on a file this project collected (it has a collection card).
    target_source: str = "auto"
    #: None = the profile's train_steps (OSRL: 100k = the paper profile).
    update_steps: int | None = None
    #: Caps on CPU, where one step at batch 2048 takes about 30 s on one core of this machine
    #: (docs/baselines.md): the batch shrinks to cpu_batch_size and the run to cpu_max_steps, and
    #: TrainOutput.info says so. None = no cap (the full budget needs a GPU).
    cpu_max_steps: int | None = 1_000
    cpu_batch_size: int | None = 64
    #: OSRL's per-task episode_len; None = the task's T.
    episode_len: int | None = None


def target_return_for(per_task: _PerTask | None, threshold: float) -> float:
    if per_task is None:
        raise BadInput("cdt has no OSRL target return for this task; pass --set target_return=VALUE")
    costs = np.array([c for _, c in per_task.target_returns])
    exact = np.flatnonzero(costs == threshold)
    i = int(exact[0]) if len(exact) else int(np.argmin(np.abs(costs - threshold)))
    return float(per_task.target_returns[i][0])


TARGET_SOURCES = ("auto", "osrl", "dataset")


def dataset_target_return(episode_returns: np.ndarray, episode_costs: np.ndarray, threshold: float) -> float:
    """The target return read off a dataset: the highest return among the episodes whose cost is
    within the threshold (the top of the file's safe frontier, where OSRL's per-task targets sit on
    DSRL's files); when no episode is that safe, the highest return among the cheapest episodes."""
    returns, costs = np.asarray(episode_returns, float), np.asarray(episode_costs, float)
    if not len(returns):
        raise BadInput("cdt: the dataset has no episode to read a target return from")
    safe = costs <= threshold
    return float(returns[safe].max() if safe.any() else returns[costs == costs.min()].max())


def is_collected_here(path: Any) -> bool:
    """Whether a dataset file was collected by this project (`presa-bench collect` writes a card next to it)."""
    return path is not None and Path(path).with_suffix(".json").is_file()


def resolve_target_return(config: "CDTConfig", per_task: _PerTask | None, threshold: float, dataset: Any) -> tuple[float, str]:
    """(target return, where it came from) for ``config.target_source``; see CDTConfig.target_source."""
    if config.target_return is not None:
        return float(config.target_return), "set"
    source = config.target_source
    if source not in TARGET_SOURCES:
        raise BadInput(f"cdt: target_source '{source}' is unknown: choose {', '.join(TARGET_SOURCES)}")
    if source == "auto":
        source = "dataset" if is_collected_here(getattr(dataset, "path", None)) else "osrl"
    if source == "osrl":
        return target_return_for(per_task, threshold), "osrl"
    return dataset_target_return(dataset.episode_returns, dataset.episode_costs, threshold), "dataset"


class CDTPolicy:
    """Batched CDT acting (CDTTrainer.rollout for B envs at once); see the module docstring for the hooks."""

    def __init__(self, model: Any, target_return: float, target_cost: float, reward_scale: float,
                 cost_scale: float, episode_len: int, device: str = "cpu") -> None:
        import copy

        self.model = copy.deepcopy(model).eval()
        self.target_return, self.target_cost = float(target_return), float(target_cost)
        self.reward_scale, self.cost_scale = float(reward_scale), float(cost_scale)
        self.episode_len = int(episode_len)
        self.device = device
        self.closed_loop = False
        self._awaiting_feedback = False
        self._warned = False
        self._state: dict[str, Any] | None = None

    # -- hooks
    def begin(self, num_envs: int) -> None:
        """Start ``num_envs`` new episodes (the evaluator promises to call ``observe`` after each ``act``)."""
        import torch

        b, t_max, m = num_envs, self.episode_len, self.model
        self._state = {
            "states": torch.zeros(b, t_max + 1, m.state_dim, device=self.device),
            "actions": torch.zeros(b, t_max, m.action_dim, device=self.device),
            "returns": torch.zeros(b, t_max + 1, device=self.device),
            "costs": torch.zeros(b, t_max + 1, device=self.device),
            "step": 0,
        }
        self._state["returns"][:, 0] = self.target_return * self.reward_scale
        self._state["costs"][:, 0] = self.target_cost * self.cost_scale
        self._awaiting_feedback = False

    def observe(self, rewards: np.ndarray, costs: np.ndarray, done: np.ndarray) -> None:
        """Rewards/costs of the last ``act``'s rows; rows with ``done`` leave the batch."""
        import torch

        self.closed_loop = True
        self._advance(
            torch.as_tensor(np.asarray(rewards, np.float32), device=self.device) * self.reward_scale,
            torch.as_tensor(np.asarray(costs, np.float32), device=self.device) * self.cost_scale,
        )
        keep = torch.as_tensor(~np.asarray(done, bool), device=self.device)
        for k in ("states", "actions", "returns", "costs"):
            self._state[k] = self._state[k][keep]

    # -- acting
    def act(self, observations: np.ndarray) -> np.ndarray:
        import torch

        obs = torch.as_tensor(np.asarray(observations, np.float32), device=self.device)
        st = self._state
        if self._awaiting_feedback:  # no observe() since the last act: open-loop fallback
            self._warn_open_loop()
            self._advance(torch.full((st["states"].shape[0],), self.target_return * self.reward_scale / self.episode_len, device=self.device),
                          torch.full((st["states"].shape[0],), self.target_cost * self.cost_scale / self.episode_len, device=self.device))
            st = self._state
            if obs.shape[0] < st["states"].shape[0]:  # rows left without word of which: keep the first
                for k in ("states", "actions", "returns", "costs"):
                    st[k] = st[k][: obs.shape[0]]
        if st is None or st["step"] >= self.episode_len or obs.shape[0] > st["states"].shape[0]:
            self.begin(obs.shape[0])
            st = self._state
        step, m = st["step"], self.model
        st["states"][:, step] = obs
        lo = max(0, step + 1 - m.seq_len)
        time_steps = torch.arange(lo, step + 1, device=self.device).unsqueeze(0).expand(obs.shape[0], -1)
        epi_cost = torch.full((obs.shape[0],), self.target_cost * self.cost_scale, device=self.device)
        with torch.no_grad():
            acts, _, _ = m(st["states"][:, lo:step + 1], st["actions"][:, lo:step + 1], st["returns"][:, lo:step + 1],
                           st["costs"][:, lo:step + 1], time_steps, None, epi_cost)
            if m.stochastic:
                acts = acts.mean
            acts = acts.clamp(-m.max_action, m.max_action)[:, -1]
        st["actions"][:, step] = acts
        self._awaiting_feedback = True
        return acts.cpu().numpy().astype(np.float32)

    def _advance(self, scaled_rewards: Any, scaled_costs: Any) -> None:
        st = self._state
        step = st["step"]
        st["returns"][:, step + 1] = st["returns"][:, step] - scaled_rewards
        st["costs"][:, step + 1] = st["costs"][:, step] - scaled_costs
        st["step"] = step + 1
        self._awaiting_feedback = False

    def _warn_open_loop(self) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(
                "CDT policy evaluated without reward/cost feedback (the evaluator does not call "
                "begin/observe): return- and cost-to-go fall linearly over the episode instead of by "
                "the observed reward and cost", stacklevel=3,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])


class CDT(Algorithm):
    """CDT (ground truth): osrl-lib's Constrained Decision Transformer on the dataset's reward and cost."""

    name: ClassVar[str] = "cdt"
    uses_ground_truth: ClassVar[bool] = True
    needs_feedback: ClassVar[bool] = False

    @classmethod
    def config_for(cls, spec: TrainSpec) -> CDTConfig:
        per_task = PER_TASK.get(spec.task.env_id)
        config = CDTConfig(episode_len=spec.task.episode_length)
        if per_task is not None:
            config.seq_len, config.deg = per_task.seq_len, per_task.deg
            config.max_reward, config.max_rew_decrease, config.min_reward = (
                per_task.max_reward, per_task.max_rew_decrease, per_task.min_reward)
        return oc.apply_overrides(config, spec.overrides, cls.name)

    @classmethod
    def learner(cls, specs: Sequence[TrainSpec], inputs_list: Sequence[TrainInputs]) -> Learner:
        spec, inputs = specs[0], inputs_list[0]
        config = cls.config_for(spec)
        data = oc.ground_truth_dict(cls.name, inputs)
        config.target_return, source = resolve_target_return(config, PER_TASK.get(spec.task.env_id), spec.threshold, inputs.dataset)
        return cdt_learner(spec, config, data, cls.name, target_source=source)


def cdt_learner(spec: TrainSpec, config: CDTConfig, data: dict[str, Any], name: str, target_source: str = "set") -> oc.OSRLLearner:
    """train_cdt.py's sequence: seed_all, CDT, CDTTrainer, SequenceDataset, DataLoader; a step is one
    train_one_step. ``config.target_return`` must be set (`resolve_target_return`); ``target_source``
    says where it came from, for the run's info."""
    oc.import_osrl()
    from osrl.algorithms import CDT as OsrlCDT
    from osrl.algorithms import CDTTrainer
    from osrl.common import SequenceDataset
    from osrl.common.exp_util import seed_all

    from baselines import oapackage_shim

    oapackage_shim.install()
    steps, planned, note = oc.resolve_steps(config, spec, name, "OSRL's 100k updates at batch 2048 need a GPU")
    batch_size = int(config.batch_size)
    if config.cpu_batch_size is not None and not str(spec.device).startswith("cuda") and batch_size > config.cpu_batch_size:
        batch_size = int(config.cpu_batch_size)
        note = (note + "; " if note else f"{name}: ") + (
            f"batch {config.batch_size} needs a GPU; using batch {batch_size} on CPU (set cpu_batch_size=null to keep it)")
        oc.log.warning(note)
    episode_len = int(config.episode_len or spec.task.episode_length)
    seed_all(spec.seed)
    bound = oc.max_action(spec.task)
    act_dim = data["actions"].shape[1]
    model = OsrlCDT(
        state_dim=data["observations"].shape[1], action_dim=act_dim, max_action=bound,
        embedding_dim=config.embedding_dim, seq_len=config.seq_len, episode_len=episode_len,
        num_layers=config.num_layers, num_heads=config.num_heads, attention_dropout=config.attention_dropout,
        residual_dropout=config.residual_dropout, embedding_dropout=config.embedding_dropout,
        time_emb=config.time_emb, use_rew=config.use_rew, use_cost=config.use_cost,
        cost_transform=config.cost_transform, add_cost_feat=config.add_cost_feat,
        mul_cost_feat=config.mul_cost_feat, cat_cost_feat=config.cat_cost_feat,
        action_head_layers=config.action_head_layers, cost_prefix=config.cost_prefix,
        stochastic=config.stochastic, init_temperature=config.init_temperature, target_entropy=-act_dim,
    ).to(spec.device)
    logger = oc.CaptureLogger()
    trainer = CDTTrainer(
        model, None, logger=logger, learning_rate=config.learning_rate, weight_decay=config.weight_decay,
        betas=tuple(config.betas), clip_grad=config.clip_grad, lr_warmup_steps=config.lr_warmup_steps,
        reward_scale=config.reward_scale, cost_scale=config.cost_scale, loss_cost_weight=config.loss_cost_weight,
        loss_state_weight=config.loss_state_weight, cost_reverse=config.cost_reverse,
        no_entropy=config.no_entropy, device=spec.device,
    )
    linear = config.linear
    try:
        dataset = _sequence_dataset(SequenceDataset, data, config, linear)
    except TypeError as exc:  # np.polyfit on an empty frontier: the grid filter kept nothing
        if "non-empty" not in str(exc):
            raise
        raise BadInput(
            f"{name}: OSRL's Pareto-frontier augmentation found no episode after its grid filter (the dataset "
            "has too few episodes per (cost, reward) bin); pass --set augment_percent=0"
        ) from None
    if dataset.sample_prob is not None and not np.all(np.isfinite(dataset.sample_prob)):
        raise BadInput(
            f"{name}: OSRL's cost-weighted sampling (weight 70 - episode cost) is zero for every episode of "
            "this dataset; pass --set cost_sample=false"
        )
    batches = oc.dataloader(dataset, batch_size, spec.device)

    def step() -> None:
        trainer.train_one_step(*[b.to(spec.device) for b in next(batches)])

    def make_policy() -> CDTPolicy:
        return CDTPolicy(model, float(config.target_return), spec.threshold, config.reward_scale,
                         config.cost_scale, episode_len, spec.device)

    info = {"target_return": float(config.target_return), "target_source": target_source, "target_cost": float(spec.threshold),
            "augmented_episodes": len(dataset.aug_data), "batch_size": batch_size, **oc.budget_info(planned, note)}
    return oc.OSRLLearner(model, trainer, logger, step, make_policy, steps, info)


def _sequence_dataset(cls: Any, data: dict[str, Any], config: CDTConfig, linear: bool) -> Any:
    with oc.quiet():
        return cls(
            data, seq_len=config.seq_len, reward_scale=config.reward_scale, cost_scale=config.cost_scale,
            deg=config.deg, pf_sample=config.pf_sample, max_rew_decrease=config.max_rew_decrease,
            beta=config.beta, augment_percent=config.augment_percent, cost_reverse=config.cost_reverse,
            max_reward=config.max_reward, min_reward=config.min_reward, pf_only=config.pf_only,
            rmin=config.rmin, cost_bins=config.cost_bins, npb=config.npb, cost_sample=config.cost_sample,
            # train_cdt.py: ct = lambda x: 70 - x if args.linear else 1 / (x + 10)
            cost_transform=lambda x: 70 - x if linear else 1 / (x + 10),
            start_sampling=config.start_sampling, prob=config.prob, random_aug=config.random_aug,
            aug_rmin=config.aug_rmin, aug_rmax=config.aug_rmax, aug_cmin=config.aug_cmin,
            aug_cmax=config.aug_cmax, cgap=config.cgap, rstd=config.rstd, cstd=config.cstd,
        )
