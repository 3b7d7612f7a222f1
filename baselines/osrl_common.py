"""What every osrl-lib wrapper shares: data hand-over, configs, policies, state capture, `OSRLLearner`.

The wrappers call osrl-lib exactly the way OSRL's example scripts (examples/train/train_*.py of
github.com/liuzuxin/OSRL) do -- ``seed_all(seed)``, build the model and trainer, a ``DataLoader``
over OSRL's ``TransitionDataset``/``SequenceDataset``, ``trainer.train_one_step(next batch)`` -- so
that the same seed, data and steps give the same parameters as the scripts (tests/test_baselines_osrl.py
checks it). What differs, and why:

- The data dict is built from bench's ``Dataset`` (the DSRL arrays) instead of ``env.get_dataset()``;
  ``env.pre_process_data`` with the scripts' default arguments returns the episodes unchanged.
- No wandb: a capturing logger stands in for OSRL's WandbLogger (its ``store`` calls become the
  learner's per-step metrics, which bench.training's loop averages and logs).
- ``DataLoader(num_workers=0)``: OSRL's datasets draw samples from numpy's global RNG, which forked
  workers would each copy (duplicated batches, irreproducible order); in-process loading makes a
  run reproducible and resumable from the saved RNG state.
- For ``TransitionDataset`` the DataLoader's per-sample Python loop (one ``np.random.choice`` and one
  tuple per transition, then collation) is replaced by `TransitionBatches`, which draws a batch's
  indices in one call and gathers them with fancy indexing: bitwise the same tensors, dtypes and
  numpy RNG consumption (tests/test_bc_vectorised.py), several times faster. ``SequenceDataset``
  (CDT) stays on the DataLoader.
- Evaluation is the benchmark's (bench.evaluation, raw env rewards); OSRL's own ``trainer.evaluate``
  (reward-scaled env) is never called. Policies are batched and deterministic.
- Training runs in bench.training's one loop (logging, online evaluation with the RNG states kept,
  best policy, checkpoints, resume): each wrapper builds an `OSRLLearner` (baselines/bc.py's
  batched BC its own multi-member Learner), whose state is everything training changes in the
  model and trainer (`capture_state`: optimizers, schedulers, plain tensors such as CPQ's
  ``log_alpha``, BCQ-Lag's PID controller), so that a killed run resumes to the same numbers as an
  uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

import bench  # noqa: F401  (compat patches before dsrl/osrl/fsrl)
from bench import settings
from bench.errors import BadInput, BenchError
from bench.interfaces import Learner, TrainSpec
from bench.tasks import Task

log = logging.getLogger("baselines")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence osrl-lib's prints and tqdm bars (dataset processing), which go to stdout/stderr."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def import_osrl() -> Any:
    """Import osrl (after bench.compat's wandb stub), hiding its "OApackage is not installed" print.

    oapackage is needed only by ``bc_mode="frontier"`` (not offered here); CDT itself works without it.
    """
    with quiet():
        import osrl.algorithms  # noqa: F401
        import osrl.common  # noqa: F401
    import osrl

    return osrl


# ----------------------------------------------------------------------------------------- data
def dsrl_data_dict(
    observations: np.ndarray,
    next_observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    costs: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray,
) -> dict[str, np.ndarray]:
    """The dict ``env.get_dataset()`` returns (DSRL keys and dtypes), as fresh copies: osrl mutates it."""
    return {
        "observations": np.array(observations, np.float32),
        "next_observations": np.array(next_observations, np.float32),
        "actions": np.array(actions, np.float32),
        "rewards": np.array(rewards, np.float32),
        "costs": np.array(costs, np.float32),
        "terminals": np.array(terminals, bool),
        "timeouts": np.array(timeouts, bool),
    }


def ground_truth_dict(name: str, inputs: Any) -> dict[str, np.ndarray]:
    """The DSRL data dict of a ground-truth baseline's dataset (reward and cost from the simulator)."""
    dataset = inputs.dataset
    if dataset is None:
        raise BadInput(
            f"{name} is a ground-truth baseline and needs the dataset's reward and cost "
            "(TrainInputs.dataset); run it through `presa-bench run`, which passes them"
        )
    return dsrl_data_dict(
        dataset.observations, dataset.next_observations, dataset.actions, dataset.rewards,
        dataset.costs, dataset.terminals, dataset.timeouts,
    )


def max_action(task: Task) -> float:
    """The action bound OSRL passes as ``max_action`` (``env.action_space.high[0]``)."""
    from bench.envs import make_env

    env = make_env(task)
    try:
        return float(env.action_space.high[0])
    finally:
        env.close()


# -------------------------------------------------------------------------------------- configs
def apply_overrides(config: Any, overrides: dict[str, Any], algo: str, skip_prefixes: tuple[str, ...] = ()) -> Any:
    """Set config fields from ``--set key=value`` overrides by the one coercion rule of every algorithm
    (bench.settings.apply_overrides: by the field's declared type; unknown keys are BadInput)."""
    return settings.apply_overrides(config, overrides, algo, skip_prefixes)


def resolve_steps(config: Any, spec: TrainSpec, algo: str, gpu_note: str) -> tuple[int, int, str]:
    """(steps of this run, planned steps, a note saying why if fewer were run than planned).

    OSRL trains 100k updates; the paper profile's train_steps is also 100k, so ``update_steps``
    defaults to ``spec.profile.train_steps`` (same budget at the paper profile, scaled down in the
    smaller profiles). ``cpu_max_steps`` caps a run on CPU for the algorithms whose full budget needs
    a GPU (measured speeds in docs/baselines.md); the cap is reported, never silent.
    """
    try:
        planned = int(config.update_steps if config.update_steps is not None else spec.profile.train_steps)
    except (TypeError, ValueError):
        raise BadInput(f"{algo}: update_steps must be an integer (got {config.update_steps!r})") from None
    if planned < 1:
        raise BadInput(f"{algo}: update_steps must be >= 1 (got {planned})")
    cap = getattr(config, "cpu_max_steps", None)
    if cap is not None and not str(spec.device).startswith("cuda") and planned > cap:
        note = (
            f"{algo}: {planned} steps need a GPU ({gpu_note}); running {cap} steps on CPU "
            "(set cpu_max_steps=null to run the full budget anyway)"
        )
        log.warning(note)
        return int(cap), planned, note
    return planned, planned, ""


# ------------------------------------------------------------------------------------- policies
class TorchPolicy:
    """A deterministic batched policy around frozen copies of some modules of an OSRL model.

    ``forward(modules, obs_tensor) -> action_tensor`` says how the algorithm acts (e.g. BCQ-Lag:
    actor(obs, vae.decode(obs, z=0))). The copies are in eval mode (no dropout) and never trained.
    """

    def __init__(self, modules: dict[str, Any], forward: Callable[[dict[str, Any], Any], Any], device: str = "cpu") -> None:
        self.modules = {k: copy.deepcopy(m).eval() for k, m in modules.items()}
        self.forward = forward
        self.device = device

    def act(self, observations: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            obs = torch.as_tensor(np.asarray(observations, np.float32), device=self.device)
            actions = self.forward(self.modules, obs)
        return actions.detach().cpu().numpy().astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {k: m.state_dict() for k, m in self.modules.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, m in self.modules.items():
            m.load_state_dict(state[k])


# --------------------------------------------------------------------------------- train state
def _pid_type() -> type:
    from osrl.common.net import LagrangianPIDController

    return LagrangianPIDController


def capture_state(model: Any, trainer: Any) -> dict[str, Any]:
    """Everything that training changes in an OSRL model + trainer, as tensors/plain values."""
    import torch
    from torch.optim.lr_scheduler import LRScheduler

    pid = _pid_type()
    state: dict[str, Any] = {"model": model.state_dict(), "optimizers": {}, "schedulers": {}, "tensors": {}, "objects": {}}
    for owner_name, owner in (("model", model), ("trainer", trainer)):
        for attr, value in vars(owner).items():
            key = f"{owner_name}.{attr}"
            if isinstance(value, torch.optim.Optimizer):
                state["optimizers"][key] = value.state_dict()
            elif isinstance(value, LRScheduler):
                state["schedulers"][key] = value.state_dict()
            elif isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
                state["tensors"][key] = value.detach().clone()
            elif isinstance(value, pid):
                state["objects"][key] = {
                    k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in vars(value).items()
                }
    return state


def restore_state(model: Any, trainer: Any, state: dict[str, Any]) -> None:
    """Inverse of `capture_state`. Plain tensors are copied in place: optimizers hold references to them."""
    import torch

    model.load_state_dict(state["model"])
    owners = {"model": model, "trainer": trainer}
    for group in ("optimizers", "schedulers"):
        for key, value in state[group].items():
            owner, attr = key.split(".", 1)
            getattr(owners[owner], attr).load_state_dict(value)
    with torch.no_grad():
        for key, value in state["tensors"].items():
            owner, attr = key.split(".", 1)
            current = getattr(owners[owner], attr, None)
            if isinstance(current, torch.Tensor) and current.shape == value.shape:
                current.copy_(value)
            else:  # created during training (e.g. COptiDICE's _lmbda = softplus(lmbda))
                setattr(owners[owner], attr, value.clone())
    for key, value in state["objects"].items():
        owner, attr = key.split(".", 1)
        target = getattr(owners[owner], attr)
        for k, v in value.items():
            setattr(target, k, v)


def torch_load(path: Path) -> Any:
    """A saved model file, loaded with weights_only (bench.io.load_torch_file): never runs code."""
    from bench.io import load_torch_file

    return load_torch_file(path)


class CaptureLogger:
    """Stands in for OSRL's WandbLogger/DummyLogger: keeps the means of what trainers ``store``
    (`OSRLLearner` pops them after every step: they are that step's metrics)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def store(self, tab: str | None = None, **kwargs: Any) -> None:
        for key, value in kwargs.items():
            name = key.replace("loss/", "")
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
            self.counts[name] = self.counts.get(name, 0) + 1

    def pop_means(self) -> dict[str, float]:
        means = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums, self.counts = {}, {}
        return means

    # the rest of the logger interface the trainers may touch
    def write(self, *args: Any, **kwargs: Any) -> None:
        pass

    def write_without_reset(self, *args: Any, **kwargs: Any) -> None:
        pass

    def save_checkpoint(self, *args: Any, **kwargs: Any) -> None:
        pass


# ------------------------------------------------------------------------------------- learner
def budget_info(planned_steps: int, budget_note: str) -> dict[str, Any]:
    """What a result record says about the step budget (see `resolve_steps`)."""
    info: dict[str, Any] = {"planned_steps": int(planned_steps), "budget_reduced_for_cpu": bool(budget_note)}
    if budget_note:
        info["budget_note"] = budget_note
    return info


def member_state(model: Any, trainer: Any, random_state: np.random.RandomState | None, steps: int) -> dict[str, Any]:
    """A member's learner state: its model + trainer (`capture_state`), the numpy RandomState its batches
    come from when that is not the global one (the loop saves the global RNGs), and its step count.
    A batched BC member and a solo run write the same state, so either resumes the other."""
    return {"train_state": capture_state(model, trainer),
            "numpy_rng": random_state.get_state() if random_state is not None else None, "steps": int(steps)}


def load_member_state(model: Any, trainer: Any, random_state: np.random.RandomState | None, state: dict[str, Any]) -> int:
    """Inverse of `member_state`; returns the step count. A state of another config is a BenchError."""
    try:
        restore_state(model, trainer, state["train_state"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise BenchError(f"the checkpoint does not fit this model ({exc}); delete it to start the run afresh") from None
    if random_state is not None:
        if state.get("numpy_rng") is None:
            raise BenchError("the checkpoint holds no sampler RNG state for this run; delete it to start afresh")
        random_state.set_state(state["numpy_rng"])
    return int(state["steps"])


class OSRLLearner(Learner):
    """One OSRL model + trainer as a `bench.interfaces.Learner` of one member (bench.training's loop
    does the logging, evaluation, best policy, checkpoints and resume).

    ``step_fn`` runs one ``trainer.train_one_step`` on the next batch; what the trainer ``store``s in
    that step (``logger``) are the step's metrics. ``make_policy`` freezes the current model into a
    policy (TorchPolicy, CDTPolicy). ``random_state``: the numpy RandomState the batches are drawn
    from, if not numpy's global one (BC), kept in the learner's state.
    """

    members = 1

    def __init__(
        self,
        model: Any,
        trainer: Any,
        logger: CaptureLogger,
        step_fn: Callable[[], None],
        make_policy: Callable[[], Any],
        total_steps: int,
        info: dict[str, Any],
        random_state: np.random.RandomState | None = None,
    ) -> None:
        self.model, self.trainer, self.logger = model, trainer, logger
        self.step_fn, self.make_policy = step_fn, make_policy
        self.total_steps = int(total_steps)
        self.random_state = random_state
        self._info = dict(info)
        self.steps_done = self.resumed_from = 0

    def step(self, step: int) -> dict[str, list[float]]:
        self.step_fn()
        self.steps_done = step + 1
        return {key: [value] for key, value in self.logger.pop_means().items()}

    def policies(self) -> list[Any]:
        return [self.make_policy()]

    def policy_from_state(self, member: int, state: Any) -> Any:
        policy = self.make_policy()
        policy.load_state_dict(state)
        return policy

    def state_dicts(self) -> list[dict[str, Any]]:
        return [member_state(self.model, self.trainer, self.random_state, self.steps_done)]

    def load_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        self.steps_done = self.resumed_from = load_member_state(self.model, self.trainer, self.random_state, states[0])

    def info(self, member: int, curve: Sequence[dict[str, float]]) -> dict[str, Any]:
        info = dict(self._info)
        if self.resumed_from:
            info["resumed_from_step"] = self.resumed_from
        return info


def dataloader(dataset: Any, batch_size: int, device: str) -> Iterator[Any]:
    """OSRL's DataLoader (batch_size, pin_memory on GPU), in-process (see module docstring).

    An osrl ``TransitionDataset`` gets `TransitionBatches` instead: the same batches, vectorised.
    """
    from osrl.common import TransitionDataset
    from torch.utils.data import DataLoader

    pin = str(device).startswith("cuda")
    if type(dataset) is TransitionDataset:  # exact type: a subclass may sample differently
        return TransitionBatches(dataset, batch_size, pin_memory=pin)
    return iter(DataLoader(dataset, batch_size=batch_size, pin_memory=pin, num_workers=0))


class TransitionBatches:
    """The batches of ``iter(DataLoader(TransitionDataset, batch_size, num_workers=0))``, drawn vectorised.

    osrl's ``TransitionDataset.__iter__`` draws ONE index per sample with
    ``np.random.choice(size, p=sample_prob)`` and the DataLoader collates ``batch_size`` Python tuples.
    Here a batch's indices come from one ``choice(size, size=batch_size, p=sample_prob)``, which
    consumes the RNG exactly as the per-sample calls do (without p: one bounded integer each; with p:
    one ``random_sample`` each, looked up in the same normalised cdf), and every field is one fancy
    index. Values and dtypes follow the per-sample code and default_collate: 2-D fields keep their
    dtype; ``rewards * reward_scale`` and ``costs * cost_scale`` are numpy scalar products (float32
    times a Python float is float64 in numpy 1.x), so the product is taken in that dtype.

    ``random_state``: the numpy RandomState to draw from; None = numpy's global one (what
    TransitionDataset uses; bench.training checkpoints and restores it; a learner that passes its own
    keeps it in its state, as BC's do). ``sample_prob`` is read
    at every batch, as the dataset reads it at every sample.
    """

    def __init__(
        self, dataset: Any, batch_size: int, pin_memory: bool = False, random_state: np.random.RandomState | None = None
    ) -> None:
        import torch

        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.random_state = random_state
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()  # DataLoader: only with an accelerator
        data = dataset.dataset
        self._keys = ["observations", "next_observations", "actions", "rewards", "costs", "done"]
        self._scales = {"rewards": dataset.reward_scale, "costs": dataset.cost_scale}
        if dataset.state_init:
            self._keys.append("is_init")
        # the dtype of one per-sample product ``data[key][idx] * scale`` (numpy scalar promotion)
        self._dtypes = {k: np.asarray(data[k].dtype.type(1) * s).dtype for k, s in self._scales.items()}
        # iter(DataLoader) draws its workers' base seed from torch's global RNG once: so must we, or
        # everything after (e.g. BCQ-Lag's VAE noise) would see another torch RNG state.
        torch.empty((), dtype=torch.int64).random_()

    def __iter__(self) -> "TransitionBatches":
        return self

    def indices(self) -> np.ndarray:
        """The next batch's transition indices (advances the RNG by one batch)."""
        rng = self.random_state if self.random_state is not None else np.random.mtrand._rand
        return rng.choice(self.dataset.dataset_size, size=self.batch_size, p=self.dataset.sample_prob)

    def gather(self, idx: np.ndarray) -> list[Any]:
        """The batch of these indices, as the DataLoader collates it (a list: default_collate turns tuples into lists)."""
        import torch

        data = self.dataset.dataset
        out = []
        for key in self._keys:
            values = data[key][idx]
            if key in self._scales:
                dtype = self._dtypes[key]
                values = values.astype(dtype) * np.asarray(self._scales[key], dtype=dtype)
            tensor = torch.from_numpy(values)
            out.append(tensor.pin_memory() if self.pin_memory else tensor)
        return out

    def __next__(self) -> list[Any]:
        return self.gather(self.indices())
