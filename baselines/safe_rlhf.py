"""Safe-RLHF-style two-stage baseline: learned reward and cost models, then constrained offline RL.

Stage 1 (learns only from TrainInputs.data + .feedback, never from the simulator's reward/cost):
- reward model r(s, a): Bradley-Terry on segment sums, P(sigma1 > sigma0) = sigmoid(R1 - R0) with
  R = sum_t r(s_t, a_t); soft targets (0.5 for ties);
- cost model c(s, a) in (0, 1) (a sigmoid, like the 0/1 per-step costs of the DSRL tasks): logistic
  on segment sums calibrated at the labelling rule, P(safe | sigma) = sigmoid((b - sum_t c) / temperature)
  with b = kappa * H / T, the segment budget at which the synthetic labels flip (presa-method.md).
  The relabelled episode cost sum_t c over T steps is then on the scale of kappa, so the constrained
  learner uses the run's threshold unchanged.
- ``holdout_fraction`` of the pairs and of the labels are held out; their accuracies are reported
  (TrainOutput.info: reward_model_accuracy on non-tied pairs, cost_model_accuracy).
Stage 2: every transition is relabelled with r (standardised: BT fixes a reward only up to a shift
and a scale) and c, and BCQ-Lag (default), CPQ or COptiDICE from osrl-lib trains on it
(baselines/constrained.py, OSRL's defaults; settings of that stage are passed as ``rl.<name>``;
``update_steps`` and ``cpu_max_steps``, which every baseline takes, mean stage 2's).

Checkpoints: the two models are saved when stage 1 ends (a rerun loads them and skips it); stage 2
checkpoints and resumes like every osrl wrapper. Both models are batched over all segments of a
minibatch (one forward pass over (B, H) transitions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from baselines import osrl_common as oc
from baselines.constrained import CONSTRAINED, train_constrained
from bench.errors import BadInput, FeedbackError
from bench.interfaces import Algorithm, TrainInputs, TrainOutput, TrainSpec

RL_PREFIX = "rl."


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
    #: Gradient steps of each model; None = the profile's train_steps / 5 (at least 200): the models
    #: converge much faster than the offline RL stage.
    model_steps: int | None = None
    #: Pairs and labels per model step.
    model_batch_size: int = 128
    #: Fraction of the pairs and of the labels held out for the reported accuracies.
    holdout_fraction: float = 0.1
    #: Temperature of the cost model's logistic, in units of summed per-step cost.
    cost_temperature: float = 1.0
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


def safety_logit(cost_sums: Any, budget: float, temperature: float) -> Any:
    """Logit of P(safe): positive when the segment's summed cost is under the budget kappa * H / T."""
    return (budget - cost_sums) / temperature


def _split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    held = int(round(n * fraction))
    if n - held < 1:
        held = 0
    return order[held:], order[:held]


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
        if config.cost_temperature <= 0:
            raise BadInput(f"safe-rlhf: cost_temperature must be > 0 (got {config.cost_temperature})")
        if config.model_steps is None:
            config.model_steps = max(200, spec.profile.train_steps // 5)
        rl_overrides = {k: v for k, v in spec.overrides.items() if k in stage2_keys}
        rl_overrides.update({k[len(RL_PREFIX):]: v for k, v in spec.overrides.items() if k.startswith(RL_PREFIX)})
        rl_config = CONSTRAINED[config.offline_rl][0](episode_len=spec.task.episode_length)
        oc.apply_overrides(rl_config, rl_overrides, f"safe-rlhf's {config.offline_rl} (rl.*)")
        config.rl = vars(rl_config)
        return config

    def train(self, spec: TrainSpec, inputs: TrainInputs) -> TrainOutput:
        config = self.config_for(spec)
        feedback = inputs.feedback
        if feedback is None:
            raise FeedbackError("safe-rlhf learns from preference pairs and safety labels but got no feedback")
        if feedback.num_pairs < 2 or feedback.num_safety_labels < 2:
            raise FeedbackError(
                f"safe-rlhf needs at least 2 preference pairs and 2 safety labels (got {feedback.num_pairs} "
                f"and {feedback.num_safety_labels}); raise num_queries"
            )
        models_path = oc.checkpoint_path(spec, "safe_rlhf_models.pt")
        if models_path is not None and models_path.is_file():
            saved = oc.torch_load(models_path)
            reward_model, cost_model = self._build(spec, config, inputs.data)
            reward_model.net.load_state_dict(saved["reward_model"])
            cost_model.net.load_state_dict(saved["cost_model"])
            info = saved["info"]
        else:
            reward_model, cost_model = self._build(spec, config, inputs.data)
            info = self._fit(spec, config, inputs.data, feedback, reward_model, cost_model)
            if models_path is not None:
                oc.atomic_torch_save({"reward_model": reward_model.net.state_dict(),
                                      "cost_model": cost_model.net.state_dict(), "info": info}, models_path)
        rewards, costs = self._relabel(reward_model, cost_model, inputs.data, spec.device)
        info["relabelled_mean_episode_cost"] = float(np.add.reduceat(costs, inputs.data.episodes.starts).mean())
        data = oc.dsrl_data_dict(inputs.data.observations, inputs.data.next_observations, inputs.data.actions,
                                 rewards, costs, inputs.data.terminals, inputs.data.timeouts)
        rl_config = CONSTRAINED[config.offline_rl][0](**config.rl)
        out = train_constrained(config.offline_rl, spec, rl_config, data, self.name, "safe_rlhf_rl.pt")
        out.info = {**info, **out.info}
        return out

    @staticmethod
    def _build(spec: TrainSpec, config: SafeRLHFConfig, data: Any) -> tuple[SegmentModel, SegmentModel]:
        import torch

        torch.manual_seed(spec.seed)
        in_dim = data.obs_dim + data.act_dim
        return (SegmentModel(in_dim, list(config.hidden_sizes), spec.device),
                SegmentModel(in_dim, list(config.hidden_sizes), spec.device))

    @staticmethod
    def _fit(spec: TrainSpec, config: SafeRLHFConfig, data: Any, feedback: Any,
             reward_model: SegmentModel, cost_model: SegmentModel) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        device, H = spec.device, int(feedback.segment_length)
        try:
            pair_idx = data.segment_indices(feedback.pair_episode.reshape(-1), feedback.pair_start.reshape(-1), H)
            label_idx = data.segment_indices(feedback.safety_episode, feedback.safety_start, H)
        except ValueError as exc:
            raise FeedbackError(f"safe-rlhf: a feedback segment does not fit this dataset ({exc}); labels of another dataset?") from None
        features = torch.as_tensor(np.concatenate([data.observations, data.actions], axis=1), dtype=torch.float32, device=device)
        pair_idx = torch.as_tensor(pair_idx.reshape(-1, 2, H), device=device)
        label_idx = torch.as_tensor(label_idx, device=device)
        pair_label = torch.as_tensor(np.asarray(feedback.pair_label, np.float32), device=device)
        safe_label = torch.as_tensor(np.asarray(feedback.safety_label, np.float32), device=device)
        budget = spec.threshold * H / spec.task.episode_length

        rng = np.random.default_rng(spec.seed)
        pair_train, pair_held = _split(len(pair_label), config.holdout_fraction, rng)
        label_train, label_held = _split(len(safe_label), config.holdout_fraction, rng)
        params = list(reward_model.net.parameters()) + list(cost_model.net.parameters())
        optim = torch.optim.Adam(params, lr=config.model_lr, weight_decay=config.weight_decay)
        generator = torch.Generator().manual_seed(spec.seed)
        pair_train_t, label_train_t = torch.as_tensor(pair_train), torch.as_tensor(label_train)
        losses = {"reward_model_loss": 0.0, "cost_model_loss": 0.0}
        for _ in range(int(config.model_steps)):
            p = pair_train_t[torch.randint(len(pair_train_t), (config.model_batch_size,), generator=generator)]
            q = label_train_t[torch.randint(len(label_train_t), (config.model_batch_size,), generator=generator)]
            returns = segment_sums(reward_model, features, pair_idx[p], squash=False)  # (B, 2)
            reward_loss = preference_loss(returns[:, 0], returns[:, 1], pair_label[p])
            cost_sums = segment_sums(cost_model, features, label_idx[q], squash=True)
            cost_loss = F.binary_cross_entropy_with_logits(safety_logit(cost_sums, budget, config.cost_temperature), safe_label[q])
            optim.zero_grad()
            (reward_loss + cost_loss).backward()
            optim.step()
            losses = {"reward_model_loss": reward_loss.item(), "cost_model_loss": cost_loss.item()}

        with torch.no_grad():
            info: dict[str, Any] = {**losses, "segment_cost_budget": budget,
                                    "held_out_pairs": int(len(pair_held)), "held_out_labels": int(len(label_held))}
            decided = pair_held[np.asarray(feedback.pair_label)[pair_held] != 0.5]
            if len(decided):
                r = segment_sums(reward_model, features, pair_idx[torch.as_tensor(decided)], squash=False)
                pred = (r[:, 1] > r[:, 0]).float()
                info["reward_model_accuracy"] = float((pred == pair_label[torch.as_tensor(decided)]).float().mean())
            if len(label_held):
                held = torch.as_tensor(label_held)
                c = segment_sums(cost_model, features, label_idx[held], squash=True)
                pred = (safety_logit(c, budget, config.cost_temperature) > 0).float()
                info["cost_model_accuracy"] = float((pred == safe_label[held]).float().mean())
        return info

    @staticmethod
    def _relabel(reward_model: SegmentModel, cost_model: SegmentModel, data: Any, device: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-transition reward (standardised) and cost in (0, 1), in chunks to bound memory."""
        import torch

        features = np.concatenate([data.observations, data.actions], axis=1).astype(np.float32)
        rewards, costs = [], []
        with torch.no_grad():
            for start in range(0, len(features), 65_536):
                x = torch.as_tensor(features[start:start + 65_536], device=device)
                rewards.append(reward_model.per_step(x).cpu().numpy())
                costs.append(torch.sigmoid(cost_model.per_step(x)).cpu().numpy())
        r = np.concatenate(rewards).astype(np.float64)
        r = (r - r.mean()) / (r.std() + 1e-8)
        return r.astype(np.float32), np.concatenate(costs).astype(np.float32)
