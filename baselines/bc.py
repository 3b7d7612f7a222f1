"""BC-All and BC-Safe (ground truth): osrl-lib's BC/BCTrainer, as in OSRL's examples/train/train_bc.py.

BC-All clones every transition of the dataset; BC-Safe only the episodes whose (undiscounted, gamma
1.0) episode cost is <= the threshold -- osrl's ``process_bc_dataset(bc_mode="safe")``. Both read
the dataset's ground-truth cost (BC-Safe to filter, BC-All only to be comparable) and are oracle
baselines: ``uses_ground_truth = True``.

``train_many`` trains cells that differ only in seed / threshold as one torch.func-stacked model
(`train_bc_batched`); each cell's numbers equal its solo run's to float tolerance (docs/baselines.md).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

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
    #: BC needs no GPU (about 300 steps/s at batch 512 on one CPU core, docs/baselines.md): no CPU cap.
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

    @classmethod
    def train_many(
        cls, specs: Sequence[TrainSpec], inputs_list: Sequence[TrainInputs], ensemble_size: int | None = None
    ) -> list[TrainOutput]:
        """Train cells that differ only in seed / threshold as batched models of at most ``ensemble_size``
        members (None: all of them on a GPU, CPU_ENSEMBLE_SIZE on CPU). Each cell's output equals (to
        float tolerance) its solo ``train``; a batch of one IS the solo ``train``."""
        if len(specs) != len(inputs_list) or not specs:
            raise BadInput(f"{cls.name} train_many: give one TrainInputs per TrainSpec (and at least one)")
        configs = [cls.config_for(spec) for spec in specs]
        _check_group(cls.name, specs, inputs_list, configs)
        if ensemble_size is None:
            ensemble_size = len(specs) if str(specs[0].device).startswith("cuda") else CPU_ENSEMBLE_SIZE
        if ensemble_size < 1:
            raise BadInput(f"{cls.name} train_many: ensemble_size must be >= 1, got {ensemble_size}")
        # cells resuming from different steps cannot share a batch: group them by their checkpoint's step
        groups: dict[int, list[int]] = {}
        for i, spec in enumerate(specs):
            groups.setdefault(_checkpoint_step(oc.checkpoint_path(spec, f"{cls.name}.pt")), []).append(i)
        outputs: list[TrainOutput | None] = [None] * len(specs)
        for group in groups.values():
            for begin in range(0, len(group), ensemble_size):
                chunk = group[begin : begin + ensemble_size]
                if len(chunk) == 1:  # exactly the solo run (osrl's own train_one_step)
                    i = chunk[0]
                    outputs[i] = train_bc(specs[i], configs[i], oc.ground_truth_dict(cls.name, inputs_list[i]), cls.name)
                    continue
                datas = [oc.ground_truth_dict(cls.name, inputs_list[i]) for i in chunk]
                for i, out in zip(chunk, train_bc_batched([specs[i] for i in chunk], configs[chunk[0]], datas, cls.name)):
                    outputs[i] = out
        return outputs  # type: ignore[return-value]


#: Cells per batched model on CPU when train_many is not told (``--ensemble-size``). Measured (bc-all,
#: BallCircle, batch 512, 256x256, one thread, docs/baselines.md): 1, 3 and 9 members gave 270-277,
#: 254-284 and 267-268 cell-steps/s -- one core is compute-bound either way, so cells train one at a
#: time on CPU unless asked. On a GPU all cells of a group train together.
CPU_ENSEMBLE_SIZE = 1


def _check_group(name: str, specs: Sequence[TrainSpec], inputs_list: Sequence[TrainInputs], configs: list[BCConfig]) -> None:
    """Cells of one batch must share everything but seed and threshold (BadInput names what differs)."""
    first, first_config = specs[0], asdict(configs[0])
    for spec, inputs, config in zip(specs, inputs_list, configs):
        diff = sorted(k for k, v in asdict(config).items() if first_config[k] != v)
        if diff:
            raise BadInput(f"{name} train_many: cells must share one config (they differ in {', '.join(diff)}); train them apart")
        for attr in ("task", "profile", "device"):
            if getattr(spec, attr) != getattr(first, attr):
                raise BadInput(f"{name} train_many: cells must share one {attr}; train them apart")
        if not _same_dataset(inputs.dataset, inputs_list[0].dataset):
            raise BadInput(f"{name} train_many: cells must share one dataset; train them apart")


def _same_dataset(a: Any, b: Any) -> bool:
    if a is b or a is None or b is None:  # None: ground_truth_dict reports it with its own message
        return True
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("observations", "actions", "costs", "rewards", "terminals", "timeouts"))


def _checkpoint_step(path: Path | None) -> int:
    """The step of the checkpoint a run would resume from (-1: none, a fresh start)."""
    if path is None or not path.is_file():
        return -1
    return int(oc.torch_load(path)["step"])


@dataclass
class _Setup:
    """What train_bc.py builds before its first step."""

    model: Any
    trainer: Any
    logger: oc.CaptureLogger
    dataset: Any  # osrl TransitionDataset over the (BC-Safe: filtered) data
    kept: int
    steps: int
    planned: int
    note: str


def _setup(spec: TrainSpec, config: BCConfig, data: dict[str, Any], name: str) -> _Setup:
    """train_bc.py's sequence up to the data loader: seed_all, env (max_action), process_bc_dataset, BC, BCTrainer.

    A batched member runs this same sequence, so it starts from its solo run's parameters and RNG states."""
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
    return _Setup(model, trainer, logger, TransitionDataset(data), kept, steps, planned, note)


def _actor_policy(actor: Any, device: str) -> oc.TorchPolicy:
    return oc.TorchPolicy({"actor": actor}, lambda m, obs: m["actor"](obs), device)


def train_bc(spec: TrainSpec, config: BCConfig, data: dict[str, Any], name: str) -> TrainOutput:
    """train_bc.py's sequence: seed_all, process_bc_dataset, BC, BCTrainer, DataLoader, train_one_step."""
    s = _setup(spec, config, data, name)
    model, trainer = s.model, s.trainer
    batches = oc.dataloader(s.dataset, config.batch_size, spec.device)  # TransitionBatches: the DataLoader's batches

    def step() -> None:
        observations, _, actions, _, _, _ = [b.to(spec.device) for b in next(batches)]
        trainer.train_one_step(observations, actions)

    loop = oc.TrainingLoop(spec, model, trainer, s.logger, lambda: _actor_policy(model.actor, spec.device),
                           oc.checkpoint_path(spec, f"{name}.pt"))
    result = loop.run(s.steps, step)
    info = {"bc_mode": config.bc_mode, "bc_transitions": s.kept, "ensemble_size": 1}
    return oc.finish(loop, result, info, s.note, s.planned)


@dataclass
class _Member:
    """One cell of a batched run: its solo objects (model, trainer, loop) and its own numpy RNG."""

    setup: _Setup
    loop: oc.TrainingLoop
    sampler: oc.TransitionBatches
    random_state: np.random.RandomState
    #: python/torch RNG states as the solo run holds them from here on (BC's training draws only numpy).
    rng: dict[str, Any]


def train_bc_batched(specs: Sequence[TrainSpec], config: BCConfig, datas: list[dict[str, Any]], name: str) -> list[TrainOutput]:
    """K cells as ONE model: the members' osrl MLPActors stacked with torch.func.stack_module_state and
    run under torch.vmap (functional_call), the sum of their MSE losses, one Adam over the stacked
    parameters -- Adam is elementwise and a member's loss reaches only its own slice, so every member
    takes the update it would take alone. Each member starts from its solo run's parameters
    (`_setup`) and draws its solo run's batches from its own RandomState, holding the state the global
    numpy RNG would have; logging, evaluation, best policy and checkpoints are its own TrainingLoop's,
    so its checkpoint is the one a solo run writes (either can resume the other)."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, stack_module_state

    device = specs[0].device
    members: list[_Member] = []
    for spec, data in zip(specs, datas):
        s = _setup(spec, config, data, name)
        random_state = np.random.RandomState()
        sampler = oc.TransitionBatches(s.dataset, config.batch_size, random_state=random_state)  # draws the loader's torch seed
        rng = oc.rng_state()  # what the solo run's global RNGs hold when its first batch is drawn
        random_state.set_state(rng["numpy"])
        loop = oc.TrainingLoop(
            spec, s.model, s.trainer, s.logger, (lambda a=s.model.actor, d=device: _actor_policy(a, d)),
            oc.checkpoint_path(spec, f"{name}.pt"),
            get_rng=(lambda r=rng, rs=random_state: {**r, "numpy": rs.get_state()}),
            set_rng=(lambda state, r=rng, rs=random_state: (r.update(state), rs.set_state(state["numpy"]))),
        )
        loop.resume()
        members.append(_Member(s, loop, sampler, random_state, rng))
    if len({m.loop.step for m in members}) != 1:  # train_many groups cells by their checkpoint's step
        raise BadInput(f"{name}: cells of one batch must resume from one step; train them apart")

    actors = [m.setup.model.actor for m in members]
    params, buffers = stack_module_state(actors)  # (K, ...) leaves, in the actors' parameter order
    optimizer = torch.optim.Adam(list(params.values()), lr=config.actor_lr)
    solo_optims = [m.setup.model.actor_optim for m in members]
    if solo_optims[0].state:  # resumed: stack the members' Adam slots (exp_avg, exp_avg_sq; one step count)
        slots = [o.state_dict()["state"] for o in solo_optims]
        stacked = {
            i: {k: (torch.stack([s[i][k] for s in slots]) if v.dim() > 0 else v.clone()) for k, v in slots[0][i].items()}
            for i in slots[0]
        }
        optimizer.load_state_dict({"state": stacked, "param_groups": optimizer.state_dict()["param_groups"]})
    base = copy.deepcopy(actors[0]).to("meta")  # structure only: functional_call supplies each member's tensors

    def member_loss(p: dict[str, Any], b: dict[str, Any], obs: Any, act: Any) -> Any:
        return F.mse_loss(functional_call(base, (p, b), (obs,)), act)  # BC.actor_loss

    batched_loss = torch.vmap(member_loss)

    def sync(e: int) -> None:
        """Copy member e's slice of the stacked parameters and Adam slots into its solo model/optimizer."""
        with torch.no_grad():
            for key, param in members[e].setup.model.actor.named_parameters():
                param.copy_(params[key][e])
        state = optimizer.state_dict()
        member_state = {
            i: {k: (v[e].clone() if v.dim() > 0 else v.clone()) for k, v in slot.items()} for i, slot in state["state"].items()
        }
        solo = solo_optims[e]
        solo.load_state_dict({"state": member_state, "param_groups": solo.state_dict()["param_groups"]})

    for e, member in enumerate(members):
        member.loop.sync = (lambda e=e: sync(e))

    def step() -> None:
        idx = [m.sampler.indices() for m in members]
        obs = np.stack([m.setup.dataset.dataset["observations"][i] for m, i in zip(members, idx)])
        act = np.stack([m.setup.dataset.dataset["actions"][i] for m, i in zip(members, idx)])
        losses = batched_loss(params, buffers, torch.from_numpy(obs).to(device), torch.from_numpy(act).to(device))
        optimizer.zero_grad()
        losses.sum().backward()
        optimizer.step()
        for m, value in zip(members, losses.detach().tolist()):
            m.setup.logger.store(**{"loss/actor_loss": value})  # what BCTrainer.train_one_step stores

    total = members[0].setup.steps
    seconds = 0.0
    while members[0].loop.step < total:
        started = time.perf_counter()
        step()
        seconds += time.perf_counter() - started
        for member in members:
            member.loop.advance(total)
    outputs = []
    for e, member in enumerate(members):
        sync(e)
        info = {"bc_mode": config.bc_mode, "bc_transitions": member.setup.kept, "ensemble_size": len(members)}
        outputs.append(oc.finish(member.loop, member.loop.result(seconds), info, member.setup.note, member.setup.planned))
    return outputs


class BCAll(_BCBase):
    """BC-All (ground truth): behaviour cloning of the whole dataset (osrl BC, bc_mode="all")."""

    name: ClassVar[str] = "bc-all"
    bc_mode: ClassVar[str] = "all"


class BCSafe(_BCBase):
    """BC-Safe (ground truth): behaviour cloning of the episodes with cost <= threshold (osrl BC, bc_mode="safe")."""

    name: ClassVar[str] = "bc-safe"
    bc_mode: ClassVar[str] = "safe"
