"""Safe-RLHF-style two-stage baseline: learned reward and cost models, then constrained offline RL.

Stage 1 learns only from TrainInputs.data + .feedback (never from the simulator's reward/cost, the
run's threshold kappa or the teacher's budget in the feedback's provenance). It trains on the
``train`` part of ``FeedbackView.split(holdout_fraction, spec.seed)``, the partition PreSa uses, so
both learners see exactly the same feedback; the ``held-out`` part gives the reported accuracies
(TrainOutput.info: reward_model_accuracy on non-tied held-out pairs, cost_model_accuracy on the
held-out safety labels).
- reward model r(s, a): Bradley-Terry on segment sums, P(sigma1 > sigma0) = sigmoid(R1 - R0) with
  R = sum_t r(s_t, a_t); soft targets (0.5 for ties);
- cost model c(s, a) in (0, 1) (a sigmoid, like the 0/1 per-step costs of the DSRL tasks) and a
  logistic regression of the binary safety labels on the segment's summed cost with a LEARNED
  intercept and a learned positive slope: P(safe | sigma) = sigmoid(k (b - sum_t c)), b = H sigmoid(beta)
  in (0, H) (the range of a sum of H costs in (0, 1)), k = softplus(rho). Nothing tells it where the
  labels flip: b is the segment budget the labels imply in the model's own cost units.
Stage 2: every transition is relabelled with r and c, and BCQ-Lag (default), CPQ or COptiDICE from
osrl-lib trains on it (baselines/constrained.py, OSRL's defaults; settings of that stage are passed as
``rl.<name>``; ``update_steps`` and ``cpu_max_steps``, which every baseline takes, mean stage 2's).
- cost limit: the learned segment budget scaled to an episode, b T / H (the labelling rule's own
  scaling, kappa H / T, inverted), in the same units as the relabelled episode cost sum_t c; the
  run's threshold is recorded but not used (the final evaluation uses it in the simulator).
- reward: (r - min r) / std r over the dataset. Bradley-Terry fixes r only up to a shift and a scale;
  the scale is harmless, the shift is not where episodes can end before the time limit: with a zero
  mean many transitions pay, so ending an episode early looks attractive. The min-shift makes every relabelled
  reward >= 0, so no termination is ever worth seeking (on the tasks without terminals the shift
  changes nothing).

Checkpoints: the models and the calibration are saved when stage 1 ends (a rerun loads them and skips
it); stage 2 is the osrl wrapper's learner, checkpointed and resumed by bench.training's loop. Both
models are batched over all segments of a minibatch (one forward pass over (B, H) transitions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from baselines import osrl_common as oc
from baselines.constrained import CONSTRAINED, constrained_learner
from bench.errors import BadInput, FeedbackError
from bench.interfaces import Algorithm, Learner, TrainInputs, TrainSpec
from bench.io import atomic_torch_save

RL_PREFIX = "rl."
#: Stage-1 checkpoint; the version tag changes when what it holds does (v2: the learned calibration).
MODELS_FILE = "safe_rlhf_models.pt"
MODELS_FORMAT = 2


@dataclass
class SafeRLHFConfig:
    """Stage-1 settings are [inferred] (no reference implementation of this offline two-stage baseline):
    the MLP sizes and learning rate follow common preference-reward-model practice (e.g. CPL's and
    PEBBLE's reward nets, 256x256 / Adam 3e-4); stage 2 uses OSRL's defaults."""

    #: Hidden layers of each model (ReLU MLP on [obs, action]).
    hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    #: Adam learning rate and weight decay of both models.
    model_lr: float = 3e-4
    weight_decay: float = 1e-4
    #: Adam learning rate of the cost model's two calibration scalars (intercept b and slope k), no
    #: weight decay. [inferred] Larger than model_lr so that b can cross its range (0, H) within a few
    #: hundred steps whatever H is (b = H sigmoid(beta); beta moves about this much per step).
    calibration_lr: float = 1e-2
    #: Gradient steps of each model; None = the profile's train_steps / 5 (at least 200): the models
    #: converge much faster than the offline RL stage.
    model_steps: int | None = None
    #: Pairs and labels per model step.
    model_batch_size: int = 128
    #: Fraction of the pairs and of the labels held out (FeedbackView.split with the cell's seed) for
    #: the reported accuracies. Keep it equal to PreSa's (0.1) so that both train on the same feedback.
    holdout_fraction: float = 0.1
    #: Constrained offline RL algorithm of stage 2: bcq-lag, cpq or coptidice.
    offline_rl: str = "bcq-lag"
    #: Settings of the stage-2 algorithm (``--set rl.batch_size=256``), resolved by its own config.
    rl: dict[str, Any] = field(default_factory=dict)


class SegmentModel:
    """An MLP per-step score f(s, a) summed over segments; built lazily so torch is imported on use."""

    def __init__(self, in_dim: int, hidden: list[int], device: str) -> None:
        import torch.nn as nn

        layers: list[Any] = []
        last = in_dim
        for h in hidden:
            layers += [nn.Linear(last, h), nn.ReLU()]
            last = h
        layers.append(nn.Linear(last, 1))
        self.net = nn.Sequential(*layers).to(device)

    def per_step(self, x: Any) -> Any:
        return self.net(x).squeeze(-1)


class CostCalibration:
    """The learned logistic link of the cost model: logit P(safe) = k (b - C) for a segment of summed
    cost C, with b = H sigmoid(beta) in (0, H) and k = softplus(rho) > 0. Starts at b = H / 2 (where
    the summed cost of an untrained sigmoid head, about 0.5 per step, lies) and k = 1."""

    def __init__(self, segment_length: int, device: str) -> None:
        import torch

        self.segment_length = int(segment_length)
        self.beta = torch.zeros((), device=device, requires_grad=True)
        self.rho = torch.full((), math.log(math.e - 1.0), device=device, requires_grad=True)

    def parameters(self) -> list[Any]:
        return [self.beta, self.rho]

    def budget(self) -> Any:
        import torch

        return self.segment_length * torch.sigmoid(self.beta)

    def slope(self) -> Any:
        import torch.nn.functional as F

        return F.softplus(self.rho)

    def logit(self, cost_sums: Any) -> Any:
        return safety_logit(cost_sums, self.budget(), self.slope())

    def state_dict(self) -> dict[str, Any]:
        return {"segment_length": self.segment_length, "beta": self.beta.detach().clone(), "rho": self.rho.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import torch

        if int(state["segment_length"]) != self.segment_length:
            raise FeedbackError(f"safe-rlhf: the stage-1 checkpoint was fitted on segments of {state['segment_length']} "
                                f"steps, this feedback has {self.segment_length}; delete the checkpoint directory")
        with torch.no_grad():
            self.beta.copy_(state["beta"])
            self.rho.copy_(state["rho"])


@dataclass
class StageOne:
    """What stage 1 hands to stage 2: both models, the cost calibration and the info to record."""

    reward_model: SegmentModel
    cost_model: SegmentModel
    calibration: CostCalibration
    info: dict[str, Any]

    @property
    def segment_budget(self) -> float:
        return float(self.calibration.budget().item())

    def episode_cost_limit(self, episode_length: int) -> float:
        """The stage-2 cost limit: the learned segment budget b scaled to an episode, b T / H."""
        return self.segment_budget * float(episode_length) / self.calibration.segment_length


def segment_sums(model: SegmentModel, features: Any, index: Any, squash: bool) -> Any:
    """Sum over each segment of the model's per-step output. ``index``: (..., H) transition indices."""
    import torch

    out = model.per_step(features[index.reshape(-1)]).reshape(index.shape)
    if squash:
        out = torch.sigmoid(out)
    return out.sum(-1)


def preference_loss(returns0: Any, returns1: Any, label: Any) -> Any:
    """Bradley-Terry: BCE of sigmoid(R1 - R0) against label (1 = second preferred, 0.5 = tie)."""
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(returns1 - returns0, label)


def safety_logit(cost_sums: Any, budget: Any, slope: Any) -> Any:
    """Logit of P(safe) = slope * (budget - summed cost): positive when the segment's summed cost is
    under the (learned) segment budget."""
    return slope * (budget - cost_sums)


def relabel_rewards(raw: np.ndarray) -> np.ndarray:
    """Per-step reward for stage 2 from the reward model's raw outputs: (raw - min) / std. Positive
    affine, so Bradley-Terry's ordering is kept; every reward is >= 0, so an episode that ends early
    forfeits reward and never gains (a mean-0 standardisation would make many steps costly)."""
    r = np.asarray(raw, np.float64)
    return ((r - r.min()) / (r.std() + 1e-8)).astype(np.float32)


class SafeRLHF(Algorithm):
    """Safe-RLHF-style baseline: reward model (preferences) + cost model (safety labels) + constrained offline RL."""

    name: ClassVar[str] = "safe-rlhf"
    uses_ground_truth: ClassVar[bool] = False
    needs_feedback: ClassVar[bool] = True

    @classmethod
    def config_for(cls, spec: TrainSpec) -> SafeRLHFConfig:
        stage2_keys = ("update_steps", "cpu_max_steps")  # the budget keys every baseline takes go to stage 2
        config = oc.apply_overrides(
            SafeRLHFConfig(), {k: v for k, v in spec.overrides.items() if k != "rl" and k not in stage2_keys},
            cls.name, skip_prefixes=(RL_PREFIX,))
        if config.offline_rl not in CONSTRAINED:
            raise BadInput(f"safe-rlhf: offline_rl must be one of {', '.join(CONSTRAINED)} (got '{config.offline_rl}')")
        if not 0.0 <= config.holdout_fraction < 1.0:
            raise BadInput(f"safe-rlhf: holdout_fraction must be in [0, 1) (got {config.holdout_fraction})")
        if config.model_steps is None:
            config.model_steps = max(200, spec.profile.train_steps // 5)
        rl_overrides = {k: v for k, v in spec.overrides.items() if k in stage2_keys}
        rl_overrides.update({k[len(RL_PREFIX):]: v for k, v in spec.overrides.items() if k.startswith(RL_PREFIX)})
        # stage 2's steps come from the profile or the budget protocol (update_steps), not from the
        # stage-2 algorithm's own CPU cap (BCQ-Lag's 1,000 steps); `--set cpu_max_steps=N` still caps
        rl_config = CONSTRAINED[config.offline_rl][0](episode_len=spec.task.episode_length, cpu_max_steps=None)
        oc.apply_overrides(rl_config, rl_overrides, f"safe-rlhf's {config.offline_rl} (rl.*)")
        config.rl = vars(rl_config)
        return config

    @classmethod
    def learner(cls, specs: Sequence[TrainSpec], inputs_list: Sequence[TrainInputs]) -> Learner:
        """Stage 1 (fitted here, or loaded from its checkpoint), the relabelling, then stage 2's learner."""
        spec, inputs = specs[0], inputs_list[0]
        config = cls.config_for(spec)
        stage1 = cls().stage_one(spec, inputs, config)
        rewards, costs = cls._relabel(stage1.reward_model, stage1.cost_model, inputs.data, spec.device)
        limit = stage1.episode_cost_limit(spec.task.episode_length)
        episode_costs = np.add.reduceat(costs.astype(np.float64), inputs.data.episodes.starts)
        info = {**stage1.info, "relabelled_mean_episode_cost": float(episode_costs.mean()),
                "relabelled_safe_episode_share": float(np.mean(episode_costs <= limit))}
        data = oc.dsrl_data_dict(inputs.data.observations, inputs.data.next_observations, inputs.data.actions,
                                 rewards, costs, inputs.data.terminals, inputs.data.timeouts)
        rl_config = CONSTRAINED[config.offline_rl][0](**config.rl)
        # stage 2's cost limit is the learned one (in the relabelled cost's units), not the run's kappa
        # (the loop evaluates the policies at the run's own spec, kappa included)
        return constrained_learner(config.offline_rl, replace(spec, threshold=limit), rl_config, data, cls.name, info)

    def stage_one(self, spec: TrainSpec, inputs: TrainInputs, config: SafeRLHFConfig | None = None) -> StageOne:
        """Fit (or load from the checkpoint) the reward model, the cost model and its calibration."""
        config = config or self.config_for(spec)
        feedback = inputs.feedback
        if feedback is None:
            raise FeedbackError("safe-rlhf learns from preference pairs and safety labels but got no feedback")
        if feedback.num_pairs < 2 or feedback.num_safety_labels < 2:
            raise FeedbackError(
                f"safe-rlhf needs at least 2 preference pairs and 2 safety labels (got {feedback.num_pairs} "
                f"and {feedback.num_safety_labels}); raise num_queries"
            )
        stage1 = self._build(spec, config, inputs.data, int(feedback.segment_length))
        models_path = Path(spec.checkpoint_dir) / MODELS_FILE if spec.checkpoint_dir is not None else None
        if models_path is not None and models_path.is_file():
            saved = oc.torch_load(models_path)
            if saved.get("format") != MODELS_FORMAT:
                raise FeedbackError(f"safe-rlhf: {models_path} is a stage-1 checkpoint of an older version "
                                    f"(calibrated at the threshold); delete it to refit the models")
            stage1.reward_model.net.load_state_dict(saved["reward_model"])
            stage1.cost_model.net.load_state_dict(saved["cost_model"])
            stage1.calibration.load_state_dict(saved["calibration"])
            stage1.info = saved["info"]
            return stage1
        train, held = feedback.split(config.holdout_fraction, spec.seed)
        stage1.info = self._fit(spec, config, inputs.data, train, held, stage1)
        if models_path is not None:
            atomic_torch_save({"format": MODELS_FORMAT, "reward_model": stage1.reward_model.net.state_dict(),
                                  "cost_model": stage1.cost_model.net.state_dict(),
                                  "calibration": stage1.calibration.state_dict(), "info": stage1.info}, models_path)
        return stage1

    @staticmethod
    def _build(spec: TrainSpec, config: SafeRLHFConfig, data: Any, segment_length: int) -> StageOne:
        import torch

        torch.manual_seed(spec.seed)
        in_dim = data.obs_dim + data.act_dim
        return StageOne(SegmentModel(in_dim, list(config.hidden_sizes), spec.device),
                        SegmentModel(in_dim, list(config.hidden_sizes), spec.device),
                        CostCalibration(segment_length, spec.device), {})

    @staticmethod
    def _fit(spec: TrainSpec, config: SafeRLHFConfig, data: Any, train: Any, held: Any, stage1: StageOne) -> dict[str, Any]:
        """Train on ``train`` (a FeedbackView), report accuracies on ``held``. Reads no threshold."""
        import torch
        import torch.nn.functional as F

        device, H = spec.device, int(train.segment_length)
        reward_model, cost_model, calibration = stage1.reward_model, stage1.cost_model, stage1.calibration

        def tensors(view: Any) -> tuple[Any, Any, Any, Any]:
            try:
                pair_idx = data.segment_indices(view.pair_episode.reshape(-1), view.pair_start.reshape(-1), H)
                label_idx = data.segment_indices(view.safety_episode, view.safety_start, H)
            except ValueError as exc:
                raise FeedbackError(f"safe-rlhf: a feedback segment does not fit this dataset ({exc}); "
                                    "labels of another dataset?") from None
            return (torch.as_tensor(pair_idx.reshape(-1, 2, H), device=device),
                    torch.as_tensor(np.asarray(view.pair_label, np.float32), device=device),
                    torch.as_tensor(label_idx.reshape(-1, H), device=device),
                    torch.as_tensor(np.asarray(view.safety_label, np.float32), device=device))

        features = torch.as_tensor(np.concatenate([data.observations, data.actions], axis=1), dtype=torch.float32, device=device)
        pair_idx, pair_label, label_idx, safe_label = tensors(train)
        optim = torch.optim.Adam([
            {"params": list(reward_model.net.parameters()) + list(cost_model.net.parameters()),
             "lr": config.model_lr, "weight_decay": config.weight_decay},
            {"params": calibration.parameters(), "lr": config.calibration_lr, "weight_decay": 0.0},
        ])
        generator = torch.Generator().manual_seed(spec.seed)
        losses = {"reward_model_loss": 0.0, "cost_model_loss": 0.0}
        for _ in range(int(config.model_steps)):
            p = torch.randint(len(pair_label), (config.model_batch_size,), generator=generator).to(device)
            q = torch.randint(len(safe_label), (config.model_batch_size,), generator=generator).to(device)
            returns = segment_sums(reward_model, features, pair_idx[p], squash=False)  # (B, 2)
            reward_loss = preference_loss(returns[:, 0], returns[:, 1], pair_label[p])
            cost_sums = segment_sums(cost_model, features, label_idx[q], squash=True)
            cost_loss = F.binary_cross_entropy_with_logits(calibration.logit(cost_sums), safe_label[q])
            optim.zero_grad()
            (reward_loss + cost_loss).backward()
            optim.step()
            losses = {"reward_model_loss": reward_loss.item(), "cost_model_loss": cost_loss.item()}

        with torch.no_grad():
            budget = float(calibration.budget().item())
            info: dict[str, Any] = {
                **losses, "segment_cost_budget": budget, "cost_model_slope": float(calibration.slope().item()),
                "stage2_cost_limit": budget * spec.task.episode_length / H,
                "feedback_split": {"holdout_fraction": float(config.holdout_fraction), "seed": int(spec.seed)},
                "held_out_pairs": int(held.num_pairs), "held_out_labels": int(held.num_safety_labels)}
            held_pair_idx, held_pair_label, held_label_idx, held_safe_label = tensors(held)
            decided = held_pair_label != 0.5
            if bool(decided.any()):
                r = segment_sums(reward_model, features, held_pair_idx[decided], squash=False)
                pred = (r[:, 1] > r[:, 0]).float()
                info["reward_model_accuracy"] = float((pred == held_pair_label[decided]).float().mean())
            if held.num_safety_labels:
                c = segment_sums(cost_model, features, held_label_idx, squash=True)
                pred = (calibration.logit(c) > 0).float()
                info["cost_model_accuracy"] = float((pred == held_safe_label).float().mean())
        return info

    @staticmethod
    def _relabel(reward_model: SegmentModel, cost_model: SegmentModel, data: Any, device: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-transition reward (relabel_rewards: min-shifted, std-scaled) and cost in (0, 1), in chunks."""
        import torch

        features = np.concatenate([data.observations, data.actions], axis=1).astype(np.float32)
        rewards, costs = [], []
        with torch.no_grad():
            for start in range(0, len(features), 65_536):
                x = torch.as_tensor(features[start:start + 65_536], device=device)
                rewards.append(reward_model.per_step(x).cpu().numpy())
                costs.append(torch.sigmoid(cost_model.per_step(x)).cpu().numpy())
        return relabel_rewards(np.concatenate(rewards)), np.concatenate(costs).astype(np.float32)
