"""Constrained offline RL (ground truth): BCQ-Lag, CPQ and COptiDICE from osrl-lib.

Each follows OSRL's examples/train/train_{bcql,cpq,coptidice}.py: same model/trainer construction,
``TransitionDataset(data, reward_scale, cost_scale)``, one ``train_one_step`` per batch. The same
functions train on a relabelled dataset for ``safe-rlhf`` (baselines/safe_rlhf.py).

Evaluation and OSRL's reward scaling: OSRL trains on rewards x ``reward_scale`` (0.1) and evaluates in
an env wrapped with the same scale; the actor only reads observations, so our raw-reward evaluation
(bench.evaluation) gives the same actions and the unscaled episode return. Acting is deterministic:
CPQ and COptiDICE use the mean action (their ``act(obs, deterministic=True)``); BCQ-Lag's
``act`` decodes a random VAE latent, which we fix at the prior's centre z = 0 (the latent is
clamped to [-0.5, 0.5] around it) so that a policy is a function of the observation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

from baselines import osrl_common as oc
from bench.errors import BadInput
from bench.interfaces import Algorithm, Learner, TrainInputs, TrainSpec

#: Throughput on this project's shared 2-core CPU with one thread, batch 512, BallCircle (docs/baselines.md):
#: BCQ-Lag ~1.9, CPQ ~4, COptiDICE ~10 steps/s. The full 100k-step budgets need a GPU; on CPU a run is
#: capped at about ten minutes of training (cpu_max_steps) and says so in TrainOutput.info.
_GPU_NOTE = "OSRL's 100k updates at batch 512 take hours on one CPU core"


@dataclass
class BCQLConfig:
    """OSRL's BCQLTrainConfig (examples/configs/bcql_configs.py); per-task classes only set episode_len."""

    #: OSRL: reward_scale 0.1, cost_scale 1.
    reward_scale: float = 0.1
    cost_scale: float = 1.0
    #: OSRL: actor/critic/vae lr 0.001.
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    vae_lr: float = 1e-3
    #: OSRL: phi 0.05 (perturbation bound), lmbda 0.75, beta 0.5 (VAE KL weight).
    phi: float = 0.05
    lmbda: float = 0.75
    beta: float = 0.5
    #: OSRL: batch_size 512.
    batch_size: int = 512
    #: OSRL: a/c_hidden_sizes [256, 256], vae_hidden_sizes 400, sample_action_num 10.
    a_hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    c_hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    vae_hidden_sizes: int = 400
    sample_action_num: int = 10
    #: OSRL: gamma 0.99, tau 0.005, num_q 2, num_qc 2, PID [0.1, 0.003, 0.001].
    gamma: float = 0.99
    tau: float = 0.005
    num_q: int = 2
    num_qc: int = 2
    PID: list[float] = field(default_factory=lambda: [0.1, 0.003, 0.001])
    #: None = the profile's train_steps (OSRL: 100k = the paper profile).
    update_steps: int | None = None
    #: Cap on CPU (see _GPU_NOTE's comment); None = no cap.
    cpu_max_steps: int | None = 1_000
    #: OSRL's per-task episode_len; None = the task's T.
    episode_len: int | None = None


@dataclass
class CPQConfig:
    """OSRL's CPQTrainConfig (examples/configs/cpq_configs.py); per-task classes only set episode_len."""

    reward_scale: float = 0.1
    cost_scale: float = 1.0
    #: OSRL: actor_lr 1e-4, critic_lr 1e-3, alpha_lr 1e-4, vae_lr 1e-3.
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    alpha_lr: float = 1e-4
    vae_lr: float = 1e-3
    batch_size: int = 512
    a_hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    c_hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    vae_hidden_sizes: int = 400
    sample_action_num: int = 10
    gamma: float = 0.99
    tau: float = 0.005
    #: OSRL: beta 0.5, num_q 2, num_qc 2, qc_scalar 1.5.
    beta: float = 0.5
    num_q: int = 2
    num_qc: int = 2
    qc_scalar: float = 1.5
    update_steps: int | None = None
    #: Cap on CPU (see _GPU_NOTE's comment); None = no cap.
    cpu_max_steps: int | None = 2_000
    episode_len: int | None = None


@dataclass
class COptiDICEConfig:
    """OSRL's COptiDICETrainConfig (examples/configs/coptidice_configs.py); per-task classes only set episode_len."""

    reward_scale: float = 0.1
    cost_scale: float = 1.0
    #: OSRL: actor/critic/scalar lr 1e-4.
    actor_lr: float = 1e-4
    critic_lr: float = 1e-4
    scalar_lr: float = 1e-4
    batch_size: int = 512
    a_hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    c_hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    #: OSRL: alpha 0.5, gamma 0.99, cost_ub_epsilon 0.01, f_type "softchi", num_nu 2, num_chi 2.
    alpha: float = 0.5
    gamma: float = 0.99
    cost_ub_epsilon: float = 0.01
    f_type: str = "softchi"
    num_nu: int = 2
    num_chi: int = 2
    update_steps: int | None = None
    #: Cap on CPU (see _GPU_NOTE's comment); None = no cap.
    cpu_max_steps: int | None = 5_000
    episode_len: int | None = None


def _bcql(spec: TrainSpec, config: BCQLConfig, data: dict[str, Any], bound: float) -> tuple[Any, ...]:
    from osrl.algorithms import BCQL, BCQLTrainer
    from osrl.common import TransitionDataset

    logger = oc.CaptureLogger()
    model = BCQL(
        state_dim=data["observations"].shape[1], action_dim=data["actions"].shape[1], max_action=bound,
        a_hidden_sizes=list(config.a_hidden_sizes), c_hidden_sizes=list(config.c_hidden_sizes),
        vae_hidden_sizes=config.vae_hidden_sizes, sample_action_num=config.sample_action_num,
        PID=list(config.PID), gamma=config.gamma, tau=config.tau, lmbda=config.lmbda, beta=config.beta,
        phi=config.phi, num_q=config.num_q, num_qc=config.num_qc, cost_limit=spec.threshold,
        episode_len=int(config.episode_len or spec.task.episode_length), device=spec.device,
    )
    trainer = BCQLTrainer(model, None, logger=logger, actor_lr=config.actor_lr, critic_lr=config.critic_lr,
                          vae_lr=config.vae_lr, reward_scale=config.reward_scale, cost_scale=config.cost_scale,
                          device=spec.device)
    dataset = TransitionDataset(data, reward_scale=config.reward_scale, cost_scale=config.cost_scale)
    batches = oc.dataloader(dataset, config.batch_size, spec.device)

    def step() -> None:
        trainer.train_one_step(*[b.to(spec.device) for b in next(batches)])

    def act(m: dict[str, Any], obs: Any) -> Any:
        import torch

        z = torch.zeros((obs.shape[0], m["vae"].latent_dim), device=obs.device)
        return m["actor"](obs, m["vae"].decode(obs, z))

    def make_policy() -> oc.TorchPolicy:
        return oc.TorchPolicy({"actor": model.actor, "vae": model.vae}, act, spec.device)

    return model, trainer, logger, step, make_policy


def _cpq(spec: TrainSpec, config: CPQConfig, data: dict[str, Any], bound: float) -> tuple[Any, ...]:
    from osrl.algorithms import CPQ, CPQTrainer
    from osrl.common import TransitionDataset

    logger = oc.CaptureLogger()
    model = CPQ(
        state_dim=data["observations"].shape[1], action_dim=data["actions"].shape[1], max_action=bound,
        a_hidden_sizes=list(config.a_hidden_sizes), c_hidden_sizes=list(config.c_hidden_sizes),
        vae_hidden_sizes=config.vae_hidden_sizes, sample_action_num=config.sample_action_num,
        gamma=config.gamma, tau=config.tau, beta=config.beta, num_q=config.num_q, num_qc=config.num_qc,
        qc_scalar=config.qc_scalar, cost_limit=spec.threshold,
        episode_len=int(config.episode_len or spec.task.episode_length), device=spec.device,
    )
    trainer = CPQTrainer(model, None, logger=logger, actor_lr=config.actor_lr, critic_lr=config.critic_lr,
                         alpha_lr=config.alpha_lr, vae_lr=config.vae_lr, reward_scale=config.reward_scale,
                         cost_scale=config.cost_scale, device=spec.device)
    dataset = TransitionDataset(data, reward_scale=config.reward_scale, cost_scale=config.cost_scale)
    batches = oc.dataloader(dataset, config.batch_size, spec.device)

    def step() -> None:
        trainer.train_one_step(*[b.to(spec.device) for b in next(batches)])

    def make_policy() -> oc.TorchPolicy:
        # CPQ.act scales the squashed mean by max_action (CPQ._actor_forward)
        return oc.TorchPolicy({"actor": model.actor}, lambda m, obs: m["actor"](obs, True, False)[0] * bound, spec.device)

    return model, trainer, logger, step, make_policy


def _coptidice(spec: TrainSpec, config: COptiDICEConfig, data: dict[str, Any], bound: float) -> tuple[Any, ...]:
    from osrl.algorithms import COptiDICE, COptiDICETrainer
    from osrl.common import TransitionDataset

    logger = oc.CaptureLogger()
    # train_coptidice.py builds the loader before the model (init-state statistics come from it)
    dataset = TransitionDataset(data, reward_scale=config.reward_scale, cost_scale=config.cost_scale, state_init=True)
    batches = oc.dataloader(dataset, config.batch_size, spec.device)
    init_s_proportion, obs_std, act_std = dataset.get_dataset_states()
    model = COptiDICE(
        state_dim=data["observations"].shape[1], action_dim=data["actions"].shape[1], max_action=bound,
        f_type=config.f_type, init_state_propotion=init_s_proportion, observations_std=obs_std,
        actions_std=act_std, a_hidden_sizes=list(config.a_hidden_sizes), c_hidden_sizes=list(config.c_hidden_sizes),
        gamma=config.gamma, alpha=config.alpha, cost_ub_epsilon=config.cost_ub_epsilon, num_nu=config.num_nu,
        num_chi=config.num_chi, cost_limit=spec.threshold,
        episode_len=int(config.episode_len or spec.task.episode_length), device=spec.device,
    )
    trainer = COptiDICETrainer(model, None, logger=logger, actor_lr=config.actor_lr, critic_lr=config.critic_lr,
                               scalar_lr=config.scalar_lr, reward_scale=config.reward_scale,
                               cost_scale=config.cost_scale, device=spec.device)

    def step() -> None:
        trainer.train_one_step([b.to(spec.device) for b in next(batches)])

    def make_policy() -> oc.TorchPolicy:
        # COptiDICE.act returns the actor's squashed mean unscaled
        return oc.TorchPolicy({"actor": model.actor}, lambda m, obs: m["actor"](obs, True, False)[0], spec.device)

    return model, trainer, logger, step, make_policy


#: name -> (config class, builder). The names are the CLI names of the ground-truth baselines.
CONSTRAINED: dict[str, tuple[type, Callable[..., tuple[Any, ...]]]] = {
    "bcq-lag": (BCQLConfig, _bcql),
    "cpq": (CPQConfig, _cpq),
    "coptidice": (COptiDICEConfig, _coptidice),
}


def constrained_learner(
    kind: str, spec: TrainSpec, config: Any, data: dict[str, Any], name: str, info: dict[str, Any] | None = None
) -> oc.OSRLLearner:
    """BCQ-Lag / CPQ / COptiDICE on a DSRL data dict (ground truth or relabelled), cost limit spec.threshold,
    built as the scripts build it (seed_all, env, then the model, trainer and loader). ``info``: what the
    caller adds to the result record (safe-rlhf: its stage 1)."""
    oc.import_osrl()
    from osrl.common.exp_util import seed_all

    if kind not in CONSTRAINED:
        raise BadInput(f"unknown constrained offline RL algorithm '{kind}' (choose from {', '.join(CONSTRAINED)})")
    steps, planned, note = oc.resolve_steps(config, spec, name, _GPU_NOTE)
    seed_all(spec.seed)
    bound = oc.max_action(spec.task)  # the scripts make the env right after seed_all
    model, trainer, logger, step, make_policy = CONSTRAINED[kind][1](spec, config, data, bound)
    return oc.OSRLLearner(model, trainer, logger, step, make_policy, steps,
                          {**(info or {}), "offline_rl": kind, **oc.budget_info(planned, note)})


class _Constrained(Algorithm):
    uses_ground_truth: ClassVar[bool] = True
    needs_feedback: ClassVar[bool] = False

    @classmethod
    def config_for(cls, spec: TrainSpec) -> Any:
        config = CONSTRAINED[cls.name][0](episode_len=spec.task.episode_length)
        return oc.apply_overrides(config, spec.overrides, cls.name)

    @classmethod
    def learner(cls, specs: Sequence[TrainSpec], inputs_list: Sequence[TrainInputs]) -> Learner:
        spec, inputs = specs[0], inputs_list[0]
        return constrained_learner(cls.name, spec, cls.config_for(spec), oc.ground_truth_dict(cls.name, inputs), cls.name)


class BCQLag(_Constrained):
    """BCQ-Lag (ground truth): osrl BCQL -- BCQ with a PID-Lagrangian cost critic penalty."""

    name: ClassVar[str] = "bcq-lag"


class CPQ(_Constrained):
    """CPQ (ground truth): osrl CPQ -- constraints-penalized Q-learning."""

    name: ClassVar[str] = "cpq"


class COptiDICE(_Constrained):
    """COptiDICE (ground truth): osrl COptiDICE -- stationary-distribution correction with a cost bound."""

    name: ClassVar[str] = "coptidice"
