"""BC-All and BC-Safe (ground truth): osrl-lib's BC/BCTrainer, as in OSRL's examples/train/train_bc.py.

BC-All clones every transition of the dataset; BC-Safe only the episodes whose (undiscounted, gamma
1.0) episode cost is <= the threshold -- osrl's ``process_bc_dataset(bc_mode="safe")``. Both read
the dataset's ground-truth cost (BC-Safe to filter, BC-All only to be comparable) and are oracle
baselines: ``uses_ground_truth = True``.

Cells that differ only in seed / threshold train as one torch.func-stacked model (`BatchedBCLearner`,
``--ensemble-size``); each cell's numbers equal its solo run's to float tolerance (docs/baselines.md).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np

from baselines import osrl_common as oc
from bench.errors import BadInput
from bench.interfaces import Algorithm, Learner, TrainInputs, TrainSpec


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

    @classmethod
    def cells_per_learner(cls, specs: Sequence[TrainSpec], requested: int | None) -> int:
        """Cells that differ only in seed / threshold train as batched models of at most ``requested``
        members (None: all of them on a GPU, CPU_ENSEMBLE_SIZE on CPU). Each cell's numbers equal (to
        float tolerance) its solo run's; a learner of one cell IS the solo run."""
        _check_group(cls.name, specs, [cls.config_for(spec) for spec in specs])
        if requested is None:
            return len(specs) if str(specs[0].device).startswith("cuda") else CPU_ENSEMBLE_SIZE
        return int(requested)

    @classmethod
    def learner(cls, specs: Sequence[TrainSpec], inputs_list: Sequence[TrainInputs]) -> Learner:
        configs = [cls.config_for(spec) for spec in specs]
        _check_group(cls.name, specs, configs)
        if not all(_same_dataset(inputs.dataset, inputs_list[0].dataset) for inputs in inputs_list):
            raise BadInput(f"{cls.name}: cells of one batch must share one dataset; train them apart")
        datas = [oc.ground_truth_dict(cls.name, inputs) for inputs in inputs_list]
        if len(specs) == 1:  # exactly the solo run (osrl's own train_one_step)
            return bc_learner(specs[0], configs[0], datas[0], cls.name)
        return BatchedBCLearner(specs, configs[0], datas, cls.name)


#: Cells per batched model on CPU when train_many is not told (``--ensemble-size``). Measured (bc-all,
#: BallCircle, batch 512, 256x256, one thread, docs/baselines.md): 1, 3 and 9 members gave 270-277,
#: 254-284 and 267-268 cell-steps/s -- one core is compute-bound either way, so cells train one at a
#: time on CPU unless asked. On a GPU all cells of a group train together.
CPU_ENSEMBLE_SIZE = 1


def _check_group(name: str, specs: Sequence[TrainSpec], configs: list[BCConfig]) -> None:
    """Cells trained together must share everything but seed and threshold (BadInput names what differs)."""
    first, first_config = specs[0], asdict(configs[0])
    for spec, config in zip(specs, configs):
        diff = sorted(k for k, v in asdict(config).items() if first_config[k] != v)
        if diff:
            raise BadInput(f"{name} train_many: cells must share one config (they differ in {', '.join(diff)}); train them apart")
        for attr in ("task", "profile", "device"):
            if getattr(spec, attr) != getattr(first, attr):
                raise BadInput(f"{name} train_many: cells must share one {attr}; train them apart")


def _same_dataset(a: Any, b: Any) -> bool:
    if a is b or a is None or b is None:  # None: ground_truth_dict reports it with its own message
        return True
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("observations", "actions", "costs", "rewards", "terminals", "timeouts"))


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


def bc_learner(spec: TrainSpec, config: BCConfig, data: dict[str, Any], name: str) -> oc.OSRLLearner:
    """train_bc.py's sequence (`_setup`, then the DataLoader's batches, one train_one_step per step).

    The batches are `TransitionBatches`' (the DataLoader's, vectorised), drawn from a RandomState that
    starts where numpy's global RNG stands, as a batched member's do: the same draws as OSRL's, and the
    learner's state carries them, so a solo run and a batched member resume each other."""
    s = _setup(spec, config, data, name)
    random_state = np.random.RandomState()
    batches = oc.TransitionBatches(s.dataset, config.batch_size, pin_memory=str(spec.device).startswith("cuda"),
                                   random_state=random_state)  # draws the loader's torch seed, as iter(DataLoader)
    random_state.set_state(np.random.get_state())

    def step() -> None:
        observations, _, actions, _, _, _ = [b.to(spec.device) for b in next(batches)]
        s.trainer.train_one_step(observations, actions)

    return oc.OSRLLearner(s.model, s.trainer, s.logger, step, lambda: _actor_policy(s.model.actor, spec.device),
                          s.steps, _info(config, s, 1), random_state)


def _info(config: BCConfig, s: _Setup, members: int) -> dict[str, Any]:
    return {"bc_mode": config.bc_mode, "bc_transitions": s.kept, "ensemble_size": members, **oc.budget_info(s.planned, s.note)}


class BatchedBCLearner(Learner):
    """K cells as ONE model: the members' osrl MLPActors stacked with torch.func.stack_module_state and
    run under torch.vmap (functional_call), the sum of their MSE losses, one Adam over the stacked
    parameters -- Adam is elementwise and a member's loss reaches only its own slice, so every member
    takes the update it would take alone. Each member starts from its solo run's parameters
    (`_setup`) and draws its solo run's batches from its own RandomState, holding the state the global
    numpy RNG would have. Its learner state is the one `bc_learner` keeps (`oc.member_state` of its solo
    model and trainer, into which `_sync` copies its slice), so either resumes the other."""

    def __init__(self, specs: Sequence[TrainSpec], config: BCConfig, datas: list[dict[str, Any]], name: str) -> None:
        import torch
        import torch.nn.functional as F
        from torch.func import functional_call, stack_module_state

        self.device = specs[0].device
        self.config = config
        self.setups: list[_Setup] = []
        self.random_states: list[np.random.RandomState] = []
        self.samplers: list[oc.TransitionBatches] = []
        for spec, data in zip(specs, datas):
            s = _setup(spec, config, data, name)
            random_state = np.random.RandomState()
            self.samplers.append(oc.TransitionBatches(s.dataset, config.batch_size, random_state=random_state))  # draws the loader's torch seed
            random_state.set_state(np.random.get_state())  # what the solo run's global RNG holds at its first batch
            self.setups.append(s)
            self.random_states.append(random_state)
        self.members = len(self.setups)
        self.total_steps = self.setups[0].steps
        self.steps_done = self.resumed_from = 0

        actors = [s.model.actor for s in self.setups]
        self.params, self.buffers = stack_module_state(actors)  # (K, ...) leaves, in the actors' parameter order
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=config.actor_lr)
        self.solo_optims = [s.model.actor_optim for s in self.setups]
        base = copy.deepcopy(actors[0]).to("meta")  # structure only: functional_call supplies each member's tensors

        def member_loss(p: dict[str, Any], b: dict[str, Any], obs: Any, act: Any) -> Any:
            return F.mse_loss(functional_call(base, (p, b), (obs,)), act)  # BC.actor_loss

        self.batched_loss = torch.vmap(member_loss)

    def step(self, step: int) -> dict[str, list[float]]:
        import torch

        idx = [sampler.indices() for sampler in self.samplers]
        obs = np.stack([s.dataset.dataset["observations"][i] for s, i in zip(self.setups, idx)])
        act = np.stack([s.dataset.dataset["actions"][i] for s, i in zip(self.setups, idx)])
        losses = self.batched_loss(self.params, self.buffers, torch.from_numpy(obs).to(self.device),
                                   torch.from_numpy(act).to(self.device))
        self.optimizer.zero_grad()
        losses.sum().backward()
        self.optimizer.step()
        self.steps_done = step + 1
        return {"actor_loss": losses.detach().tolist()}  # what BCTrainer.train_one_step stores, per member

    def _sync(self, e: int) -> None:
        """Copy member e's slice of the stacked parameters and Adam slots into its solo model/optimizer."""
        import torch

        with torch.no_grad():
            for key, param in self.setups[e].model.actor.named_parameters():
                param.copy_(self.params[key][e])
        state = self.optimizer.state_dict()
        member_state = {
            i: {k: (v[e].clone() if v.dim() > 0 else v.clone()) for k, v in slot.items()} for i, slot in state["state"].items()
        }
        solo = self.solo_optims[e]
        solo.load_state_dict({"state": member_state, "param_groups": solo.state_dict()["param_groups"]})

    def policies(self) -> list[Any]:
        for e in range(self.members):
            self._sync(e)
        return [_actor_policy(s.model.actor, self.device) for s in self.setups]

    def policy_from_state(self, member: int, state: Any) -> Any:
        policy = _actor_policy(self.setups[member].model.actor, self.device)
        policy.load_state_dict(state)
        return policy

    def state_dicts(self) -> list[dict[str, Any]]:
        states = []
        for e, (s, random_state) in enumerate(zip(self.setups, self.random_states)):
            self._sync(e)
            states.append(oc.member_state(s.model, s.trainer, random_state, self.steps_done))
        return states

    def load_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        """Each member's solo state (a batched member's or a solo run's), then stacked again: the
        parameters into their slices, the members' Adam slots (exp_avg, exp_avg_sq; one step count)."""
        import torch

        steps = {oc.load_member_state(s.model, s.trainer, rs, state)
                 for s, rs, state in zip(self.setups, self.random_states, states)}
        self.steps_done = self.resumed_from = max(steps)
        with torch.no_grad():
            for e, s in enumerate(self.setups):
                for key, param in s.model.actor.named_parameters():
                    self.params[key][e].copy_(param)
        if self.solo_optims[0].state:
            slots = [o.state_dict()["state"] for o in self.solo_optims]
            stacked = {
                i: {k: (torch.stack([s[i][k] for s in slots]) if v.dim() > 0 else v.clone()) for k, v in slots[0][i].items()}
                for i in slots[0]
            }
            self.optimizer.load_state_dict({"state": stacked, "param_groups": self.optimizer.state_dict()["param_groups"]})

    def info(self, member: int, curve: Sequence[dict[str, float]]) -> dict[str, Any]:
        info = _info(self.config, self.setups[member], self.members)
        if self.resumed_from:
            info["resumed_from_step"] = self.resumed_from
        return info


class BCAll(_BCBase):
    """BC-All (ground truth): behaviour cloning of the whole dataset (osrl BC, bc_mode="all")."""

    name: ClassVar[str] = "bc-all"
    bc_mode: ClassVar[str] = "all"


class BCSafe(_BCBase):
    """BC-Safe (ground truth): behaviour cloning of the episodes with cost <= threshold (osrl BC, bc_mode="safe")."""

    name: ClassVar[str] = "bc-safe"
    bc_mode: ClassVar[str] = "safe"
