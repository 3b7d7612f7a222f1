"""BC-All and BC-Safe (ground truth): osrl-lib's BC/BCTrainer, as in OSRL's examples/train/train_bc.py.

BC-All clones every transition of the dataset; BC-Safe only the episodes whose (undiscounted, gamma
1.0) episode cost is <= the threshold -- osrl's ``process_bc_dataset(bc_mode="safe")``. Both read
the dataset's ground-truth cost (BC-Safe to filter, BC-All only to be comparable) and are oracle
baselines: ``uses_ground_truth = True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from baselines import osrl_common as oc
from bench.errors import BadInput
from bench.interfaces import Algorithm, TrainInputs, TrainOutput, TrainSpec


@dataclass
class BCConfig:
    """OSRL's BCTrainConfig (examples/configs/bc_configs.py); every Bullet/Safety-Gymnasium task uses the
    base values except ``episode_len``, which is the task's T (OSRL's per-task classes say the same)."""

    #: "all" (BC-All) or "safe" (BC-Safe). OSRL's "frontier" needs oapackage (no numpy-1.x wheel).
    bc_mode: str = "all"
    #: OSRL: actor_lr 0.001.
    actor_lr: float = 1e-3
    #: OSRL: batch_size 512.
    batch_size: int = 512
    #: OSRL: a_hidden_sizes [256, 256].
    a_hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    #: OSRL: gamma 1.0 (episode cost used by the "safe" filter is undiscounted).
    gamma: float = 1.0
    #: Gradient steps; None = the profile's train_steps (OSRL: 100k = the paper profile).
    update_steps: int | None = None
    #: BC needs no GPU (about 500 steps/s on one CPU core): no CPU cap.
    cpu_max_steps: int | None = None
    #: Episode length T (OSRL's per-task episode_len); None = the task's.
    episode_len: int | None = None


class _BCBase(Algorithm):
    uses_ground_truth: ClassVar[bool] = True
    needs_feedback: ClassVar[bool] = False
    bc_mode: ClassVar[str] = "all"

    @classmethod
    def config_for(cls, spec: TrainSpec) -> BCConfig:
        config = BCConfig(bc_mode=cls.bc_mode, episode_len=spec.task.episode_length)
        config = oc.apply_overrides(config, spec.overrides, cls.name)
        if config.bc_mode not in ("all", "safe"):
            raise BadInput(f"{cls.name}: bc_mode must be 'all' or 'safe' (got '{config.bc_mode}')")
        return config

    def train(self, spec: TrainSpec, inputs: TrainInputs) -> TrainOutput:
        config = self.config_for(spec)
        data = oc.ground_truth_dict(self.name, inputs)
        return train_bc(spec, config, data, self.name)


def train_bc(spec: TrainSpec, config: BCConfig, data: dict[str, Any], name: str) -> TrainOutput:
    """train_bc.py's sequence: seed_all, process_bc_dataset, BC, BCTrainer, DataLoader, train_one_step."""
    oc.import_osrl()
    from osrl.algorithms import BC, BCTrainer
    from osrl.common import TransitionDataset
    from osrl.common.dataset import process_bc_dataset
    from osrl.common.exp_util import seed_all

    steps, planned, note = oc.resolve_steps(config, spec, name, "")
    seed_all(spec.seed)
    bound = oc.max_action(spec.task)  # train_bc.py makes the env right after seed_all
    with oc.quiet():
        process_bc_dataset(data, spec.threshold, config.gamma, config.bc_mode)
    kept = int(len(data["observations"]))
    if kept == 0:
        raise BadInput(
            f"{name}: no episode of the dataset has cost <= {spec.threshold:g}; BC-Safe has nothing to clone "
            "(use a larger threshold or a dataset with safe episodes)"
        )
    model = BC(
        state_dim=data["observations"].shape[1],
        action_dim=data["actions"].shape[1],
        max_action=bound,
        a_hidden_sizes=list(config.a_hidden_sizes),
        episode_len=int(config.episode_len or spec.task.episode_length),
        device=spec.device,
    )
    logger = oc.CaptureLogger()
    trainer = BCTrainer(model, None, logger=logger, actor_lr=config.actor_lr, bc_mode=config.bc_mode,
                        cost_limit=spec.threshold, device=spec.device)
    batches = oc.dataloader(TransitionDataset(data), config.batch_size, spec.device)

    def step() -> None:
        observations, _, actions, _, _, _ = [b.to(spec.device) for b in next(batches)]
        trainer.train_one_step(observations, actions)

    def make_policy() -> oc.TorchPolicy:
        return oc.TorchPolicy({"actor": model.actor}, lambda m, obs: m["actor"](obs), spec.device)

    loop = oc.TrainingLoop(spec, model, trainer, logger, make_policy, oc.checkpoint_path(spec, f"{name}.pt"))
    result = loop.run(steps, step)
    return oc.finish(loop, result, {"bc_mode": config.bc_mode, "bc_transitions": kept}, note, planned)


class BCAll(_BCBase):
    """BC-All (ground truth): behaviour cloning of the whole dataset (osrl BC, bc_mode="all")."""

    name: ClassVar[str] = "bc-all"
    bc_mode: ClassVar[str] = "all"


class BCSafe(_BCBase):
    """BC-Safe (ground truth): behaviour cloning of the episodes with cost <= threshold (osrl BC, bc_mode="safe")."""

    name: ClassVar[str] = "bc-safe"
    bc_mode: ClassVar[str] = "safe"
