"""PreSa as a bench Learner: BC warm-up, frozen reference, then joint policy / multiplier updates.

`PreSaLearner.step` reads top to bottom: a behaviour-cloning step during the warm-up; at the first
joint step the reference policy is frozen (its log-likelihoods on every labelled segment computed
once, and S* measured); then the joint step (CPL preference loss + safety score under a Lagrangian
constraint, dual ascent on the multiplier). Logging, online evaluation, best-policy selection,
checkpoints and resume are bench.training's one loop; this module says what a step is and what
state it depends on (`state_dicts`: parameters, Adam slots, multiplier, z0, both generators,
reference log-likelihoods), so that a killed run resumes to exactly the numbers of an uninterrupted one.

Several cells (same config and data, different seed or threshold) train as ONE batched ensemble:
every layer is one torch.baddbmm over the members, each member has its own optimizer slots (Adam is
elementwise, and the summed loss keeps every member's gradient its own), its own multiplier, its
own numpy generator for batches and its own torch generator for init and dropout, so a cell's
numbers do not depend on what it was batched with.

Data handling: the dataset's observations and actions are copied to the device once; labelled
segments are precomputed (P, 2, H) / (L, H) arrays of transition indices, and a batch is one gather
(no Python loop over segments).

The learner sees only `OfflineData` (states, actions, episode boundaries) and the `FeedbackView`;
no reward or cost ever reaches this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from bench.errors import BadInput, BenchError
from bench.interfaces import Learner, TrainInputs, TrainSpec
from presa import losses
from presa.config import PreSaConfig
from presa.networks import ActorPolicy, EnsembleActor

#: Layout version of a member's state (`PreSaLearner.state_dicts`).
STATE_VERSION = 3
#: Metrics logged during the warm-up and during the joint phase (interval means, per cell).
BC_METRICS = ("bc_loss",)
JOINT_METRICS = ("pref_loss", "pref_accuracy", "safety_score", "constraint_gap", "bc_loss")
#: Logged at every log step of the joint phase, on the held-out feedback (never trained on).
HELDOUT_METRICS = ("heldout_safety_score", "heldout_constraint_gap", "heldout_safety_accuracy", "heldout_pref_accuracy")


@dataclass
class Cell:
    """One run inside an ensemble: its spec, resolved config and labelled segments as index arrays."""

    spec: TrainSpec
    config: PreSaConfig
    pair_index: np.ndarray  # (P, 2, H) transition indices
    pair_label: np.ndarray  # (P,)
    safety_index: np.ndarray  # (L, H)
    safety_label: np.ndarray  # (L,)
    heldout_pair_index: np.ndarray  # (P', 2, H): held out, never trained on
    heldout_pair_label: np.ndarray
    heldout_safety_index: np.ndarray  # (L', H)
    heldout_safety_label: np.ndarray


def build_cell(spec: TrainSpec, config: PreSaConfig, inputs: TrainInputs) -> Cell:
    """Check the inputs and turn the feedback into index arrays (one vectorised gather each)."""
    feedback = inputs.feedback
    if feedback is None:
        raise BadInput("presa needs feedback (preference pairs and safety labels); none was given")
    if feedback.num_pairs == 0:
        raise BadInput("presa: the feedback has no preference pairs; build feedback with num_queries > 0")
    if config.use_safety and feedback.num_safety_labels == 0:
        raise BadInput("presa: the feedback has no safety labels; give safety labels or use the cpl algorithm")
    data = inputs.data
    length = int(feedback.segment_length)
    train, heldout = feedback.split(config.holdout_fraction, spec.seed)
    if train.num_pairs == 0 or (config.use_safety and train.num_safety_labels == 0):
        raise BadInput("presa: too little feedback to hold out a share; give more queries or set holdout_fraction=0")

    def indices(view: Any) -> tuple[np.ndarray, np.ndarray]:
        try:
            pairs = data.segment_indices(view.pair_episode.reshape(-1), view.pair_start.reshape(-1), length)
            segments = data.segment_indices(view.safety_episode, view.safety_start, length)
        except ValueError:
            raise BadInput("presa: a feedback segment lies outside its episode: the feedback belongs to another dataset") from None
        return pairs.reshape(-1, 2, length), segments.reshape(-1, length)

    pair_index, safety_index = indices(train)
    held_pair_index, held_safety_index = indices(heldout)
    return Cell(
        spec=spec,
        config=config,
        pair_index=pair_index,
        pair_label=np.asarray(train.pair_label, np.float32),
        safety_index=safety_index,
        safety_label=np.asarray(train.safety_label, np.float32),
        heldout_pair_index=held_pair_index,
        heldout_pair_label=np.asarray(heldout.pair_label, np.float32),
        heldout_safety_index=held_safety_index,
        heldout_safety_label=np.asarray(heldout.safety_label, np.float32),
    )


class PreSaLearner(Learner):
    """Trains a list of cells that share config, data, segment length and device as one ensemble."""

    def __init__(self, cells: Sequence[Cell], inputs: TrainInputs, device: torch.device) -> None:
        self.cells = list(cells)
        self.config = config = cells[0].config
        self.members = len(cells)
        self.device = device
        data = inputs.data
        self.obs = torch.as_tensor(np.asarray(data.observations, np.float32), device=device)
        self.act = torch.as_tensor(np.asarray(data.actions, np.float32), device=device)
        self.num_transitions = len(self.obs)
        self.segment_length = cells[0].pair_index.shape[-1]
        self.total_steps = config.train_steps
        self.warmup_steps = config.warmup_steps
        self.phase_ends = (self.warmup_steps,)  # the warm-up's log interval closes before the joint phase
        self.bc_batch = config.bc_batch_size or config.batch_size * self.segment_length
        self.pair_index = [torch.as_tensor(c.pair_index, device=device) for c in cells]
        self.pair_label = [torch.as_tensor(c.pair_label, device=device) for c in cells]
        self.safety_index = [torch.as_tensor(c.safety_index, device=device) for c in cells]
        self.safety_label = [torch.as_tensor(c.safety_label, device=device) for c in cells]
        self.heldout_pair_index = [torch.as_tensor(c.heldout_pair_index, device=device) for c in cells]
        self.heldout_pair_label = [torch.as_tensor(c.heldout_pair_label, device=device) for c in cells]
        self.heldout_safety_index = [torch.as_tensor(c.heldout_safety_index, device=device) for c in cells]
        self.heldout_safety_label = [torch.as_tensor(c.heldout_safety_label, device=device) for c in cells]
        # the hot path's view of the same data: members stacked (padded to the longest) so that a
        # batch is one gather for all members instead of E small ones (kernel launches on a GPU)
        self.member_rows = torch.arange(self.members, device=device)[:, None]
        self.pair_index_all = _stack_padded(self.pair_index)
        self.pair_label_all = _stack_padded(self.pair_label)
        self.safety_index_all = _stack_padded(self.safety_index)
        self.safety_label_all = _stack_padded(self.safety_label)
        self.ref_pair_all: torch.Tensor | None = None
        self.ref_safety_all: torch.Tensor | None = None
        # what a joint step draws per member, in this order (highs per member, sizes): B pairs, B safety
        # segments (PreSa), bc_batch transitions (bc_coeff > 0)
        safety, bc = config.use_safety, config.bc_coeff > 0
        highs = [
            [len(self.pair_label[e])] + [len(self.safety_label[e])] * safety + [self.num_transitions] * bc
            for e in range(self.members)
        ]
        batch = config.batch_size
        self.joint_draws = (highs, [batch] + [batch] * safety + [self.bc_batch] * bc)
        self.rngs = [np.random.default_rng(c.spec.seed) for c in cells]
        self.generators = [torch.Generator(device=device).manual_seed(c.spec.seed) for c in cells]
        self.actor = EnsembleActor(
            self.generators, data.obs_dim, data.act_dim, config.hidden_sizes, config.dropout, config.actor,
            config.log_std_min, config.log_std_max, config.init_gain, device,
        )
        self.optimizer = self._new_optimizer(warmup=self.warmup_steps > 0)
        self._compiled = None if config.compile == "off" else torch.compile(self.actor.logp, mode=config.compile)
        self.lam = torch.full((self.members,), float(config.lambda_init), device=device)
        # the learned reference point z0 of the safety values (one per member, its own Adam: an
        # elementwise optimizer keeps members independent)
        self.z0 = torch.zeros((self.members, 1), device=device, requires_grad=True)
        self.z0_optimizer = torch.optim.Adam([self.z0], lr=config.z0_lr, foreach=False)
        self.learned_z0 = config.reference_point == "learned"
        self.s_ref = torch.zeros(self.members, device=device)
        self.s_star = torch.zeros(self.members, device=device)
        self.heldout_s_star = torch.full((self.members,), float("nan"), device=device)
        self.ref_pair: list[torch.Tensor] | None = None
        self.ref_safety: list[torch.Tensor] | None = None
        self.ref_heldout_pair: list[torch.Tensor] | None = None
        self.ref_heldout_safety: list[torch.Tensor] | None = None
        self.attainable = torch.ones(self.members, device=device)
        self.max_logp = losses.max_log_likelihood(config.actor, data.act_dim, config.log_std_min)

    # ------------------------------------------------------------------ steps
    def step(self, step: int) -> dict[str, torch.Tensor]:
        """Warm-up (behaviour cloning), then freeze the reference once, then the joint step."""
        if step < self.warmup_steps:
            return self._bc_step()
        if self.ref_pair is None:
            self._freeze_reference()
        return self._joint_step()

    def _bc_step(self) -> dict[str, torch.Tensor]:
        (rows,) = self._draw([[self.num_transitions]] * self.members, [self.bc_batch])
        logp = self._forward_logp(self.obs[rows], self.act[rows])
        bc_loss = -logp.mean(dim=-1)  # deterministic actor: the squared error; Gaussian: the NLL
        self.optimizer.zero_grad(set_to_none=True)
        bc_loss.sum().backward()
        self.optimizer.step()
        return {"bc_loss": bc_loss}

    def _freeze_reference(self) -> None:
        """pi_ref := the policy now; its log-likelihoods on every labelled segment, computed once."""
        c = self.config
        self.ref_pair = [self._member_logp(e, self.pair_index[e]) for e in range(self.members)]
        self.ref_safety = [self._member_logp(e, self.safety_index[e]) for e in range(self.members)]
        self._stack_reference()
        normalise = c.score_norm == "mean"

        def attainable(e: int, form: str) -> torch.Tensor:
            weights = losses.label_weights(self.safety_label[e], c.unsafe_weight, c.balance_labels)
            return losses.attainable_safety(
                self.ref_safety[e], self.safety_label[e], c.safety_alpha, c.gamma, self.max_logp, normalise, form, weights
            )

        self.attainable = torch.stack([attainable(e, c.constraint_form) for e in range(self.members)])
        self.ref_heldout_pair = [self._member_logp(e, self.heldout_pair_index[e]) for e in range(self.members)]
        self.ref_heldout_safety = [self._member_logp(e, self.heldout_safety_index[e]) for e in range(self.members)]
        if c.use_safety:
            self.s_ref = torch.stack([
                losses.reference_safety_score(
                    self.safety_label[e], self._label_weights(self.safety_label[e]), c.constraint_form, self.learned_z0
                )
                for e in range(self.members)
            ])
            if c.delta_mode == "separation":
                self._measure_separation()
        self.optimizer = self._new_optimizer()  # the joint phase starts with fresh Adam moments

    def _joint_step(self) -> dict[str, torch.Tensor]:
        c = self.config
        assert self.ref_pair_all is not None and self.ref_safety_all is not None
        B, H, E = c.batch_size, self.segment_length, self.members
        members = self.member_rows
        drawn = self._draw(*self.joint_draws)
        pair_rows = drawn[0]
        parts = [self.pair_index_all[members, pair_rows].reshape(E, -1)]
        if c.use_safety:
            safety_rows = drawn[1]
            parts.append(self.safety_index_all[members, safety_rows].reshape(E, -1))
        if c.bc_coeff > 0:
            parts.append(drawn[-1])
        transitions = torch.cat(parts, dim=1)
        logp = self._forward_logp(self.obs[transitions], self.act[transitions])  # one forward pass for all three batches

        normalise = c.score_norm == "mean"
        n_pair = B * 2 * H
        pair_logp = logp[:, :n_pair].reshape(E, B, 2, H)
        ref_pair = self.ref_pair_all[members, pair_rows]
        score = losses.segment_score(pair_logp, ref_pair, c.alpha, c.gamma, normalise)
        label = self.pair_label_all[members, pair_rows]
        pref_loss, accuracy = losses.cpl_loss(score[..., 0], score[..., 1], label, c.bias)
        metrics = {"pref_loss": pref_loss, "pref_accuracy": accuracy}
        objective = pref_loss
        offset = n_pair
        if c.use_safety:
            safety_logp = logp[:, offset : offset + B * H].reshape(E, B, H)
            offset += B * H
            ref_safety = self.ref_safety_all[members, safety_rows]
            safety_label = self.safety_label_all[members, safety_rows]
            constraint_s, s_z0 = self._safety_terms(safety_logp, ref_safety, safety_label)
            target = self._target()
            objective = losses.lagrangian(pref_loss, constraint_s, self.lam, target) - s_z0
            gap = (target - constraint_s).detach()
            metrics["safety_score"] = constraint_s.detach()
            metrics["constraint_gap"] = gap
        if c.bc_coeff > 0:
            bc_loss = -logp[:, offset:].mean(dim=-1)
            objective = objective + c.bc_coeff * bc_loss
            metrics["bc_loss"] = bc_loss
        self.optimizer.zero_grad(set_to_none=True)
        self.z0_optimizer.zero_grad(set_to_none=True)
        objective.sum().backward()
        self.optimizer.step()
        if c.use_safety and self.learned_z0:
            self.z0_optimizer.step()
        if c.use_safety and c.dual_ascent:
            if c.delta_mode == "separation":  # per unit of the attainable separation
                gap = gap / (self.s_star - self.s_ref).abs().clamp(min=1e-3)
            self.lam = losses.dual_update(self.lam, gap, c.lambda_lr, c.lambda_param, c.lambda_max)
        return metrics

    # ------------------------------------------------------------------ setup
    def _new_optimizer(self, warmup: bool = False) -> torch.optim.Adam:
        lr = (self.config.warmup_lr or self.config.lr) if warmup else self.config.lr
        if self.device.type == "cuda":
            # one fused kernel for all parameters: a PreSa step on a GPU is kernel-launch-bound, and
            # the per-tensor loop launches about ten kernels per parameter tensor
            return torch.optim.Adam(self.actor.parameters(), lr=lr, fused=True)
        # foreach=False: the plain per-tensor loop, whose numbers do not depend on tensor grouping
        return torch.optim.Adam(self.actor.parameters(), lr=lr, foreach=False)

    def _member_logp(self, member: int, index: torch.Tensor) -> torch.Tensor:
        """log pi of member ``member`` (no dropout) on the transitions ``index`` (any shape), chunked."""
        flat = index.reshape(-1)
        out = torch.empty(flat.shape[0], device=self.device)
        chunk = self.config.reference_chunk * self.segment_length
        with torch.no_grad():
            for begin in range(0, flat.shape[0], chunk):
                rows = flat[begin : begin + chunk]
                logp = self.actor.logp(self.obs[rows].unsqueeze(0), self.act[rows].unsqueeze(0), member=member)
                out[begin : begin + chunk] = logp[0]
        return out.reshape(index.shape)

    def _label_weights(self, label: torch.Tensor) -> torch.Tensor | None:
        c = self.config
        if c.unsafe_weight == 1.0 and not c.balance_labels:
            return None
        return losses.label_weights(label, c.unsafe_weight, c.balance_labels)

    def _safety_terms(self, logp: torch.Tensor, ref: torch.Tensor, label: torch.Tensor, z0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(S for the policy's gradient, S for the reference point's gradient) on a (E, B, H) batch."""
        c = self.config
        score = losses.segment_score(logp, ref, c.safety_alpha, c.gamma, c.safety_score_norm == "mean")
        weights = self._label_weights(label)
        z0 = self.z0 if z0 is None else z0
        if self.learned_z0:
            s_policy = losses.safety_score(score, label, z0.detach(), c.constraint_form, weights)
            s_z0 = losses.safety_score(score.detach(), label, z0, c.constraint_form, weights)
            return s_policy, s_z0
        fixed = losses.kto_reference_point(score) if c.reference_point == "kto" else 0.0
        return losses.safety_score(score, label, fixed, c.constraint_form, weights), score.new_zeros(())

    def _measure_separation(self) -> None:
        """S*: maximise S ALONE from pi_ref (its own Adam and z0) for ``attainable_steps`` steps and take
        the mean training-batch S of the last fifth; then restore pi_ref. The rngs advance, so this is
        part of the seeded run (deterministic)."""
        c = self.config
        steps = c.attainable_steps or max(100, (self.total_steps - self.warmup_steps) // 4)
        if c.s_ref == "measured":
            self.s_ref = self._measure_reference_score(max(1, steps // 5))
        saved = [p.detach().clone() for p in self.actor.parameters()]
        z0 = torch.zeros((self.members, 1), device=self.device, requires_grad=True)
        optimizer = torch.optim.Adam(list(self.actor.parameters()), lr=c.lr, foreach=False)
        z0_optimizer = torch.optim.Adam([z0], lr=c.z0_lr, foreach=False)
        tail: list[torch.Tensor] = []
        E = self.members
        for step in range(steps):
            s_policy, s_z0 = self._safety_batch(z0)
            optimizer.zero_grad(set_to_none=True)
            z0_optimizer.zero_grad(set_to_none=True)
            (-(s_policy.sum() + s_z0.sum())).backward()
            optimizer.step()
            z0_optimizer.step()
            if step >= steps - max(1, steps // 5):
                tail.append(s_policy.detach())
        self.s_star = torch.stack(tail).mean(dim=0)
        self.heldout_s_star = torch.stack([self._heldout_safety(e, z0[e]) [0] for e in range(E)])
        with torch.no_grad():
            for param, value in zip(self.actor.parameters(), saved):
                param.copy_(value)

    def _measure_reference_score(self, batches: int) -> torch.Tensor:
        """S_ref measured the way S and S* are: the mean S of pi_ref itself over ``batches`` dropout
        training batches, at the best constant reference point of the labels (the analytic S_ref's
        z0). Dropout makes pi_ref's scores noisy, so this differs from the analytic value; comparing S
        with it keeps the margin delta (S* - S_ref) from only offsetting that noise."""
        z0 = torch.stack([
            losses.constant_reference_point(self.safety_label[e], self._label_weights(self.safety_label[e]))
            for e in range(self.members)
        ]) if self.learned_z0 else None
        with torch.no_grad():
            return torch.stack([self._safety_batch(z0)[0] for _ in range(batches)]).mean(dim=0)

    def _safety_batch(self, z0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """`_safety_terms` on one drawn batch of B labelled segments per member (dropout on)."""
        assert self.ref_safety_all is not None
        B, H, E = self.config.batch_size, self.segment_length, self.members
        (rows,) = self._draw([[len(self.safety_label[e])] for e in range(E)], [B])
        transitions = self.safety_index_all[self.member_rows, rows].reshape(E, -1)
        logp = self._forward_logp(self.obs[transitions], self.act[transitions]).reshape(E, B, H)
        return self._safety_terms(
            logp, self.ref_safety_all[self.member_rows, rows], self.safety_label_all[self.member_rows, rows], z0
        )

    def _heldout_safety(self, e: int, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, accuracy) of member e on its held-out safety labels (no dropout); NaN when none."""
        label = self.heldout_safety_label[e]
        if len(label) == 0 or self.ref_heldout_safety is None:
            nan = torch.tensor(float("nan"), device=self.device)
            return nan, nan
        c = self.config
        logp = self._member_logp(e, self.heldout_safety_index[e])
        score = losses.segment_score(logp, self.ref_heldout_safety[e], c.safety_alpha, c.gamma, c.safety_score_norm == "mean")
        point = z0.detach() if self.learned_z0 else (losses.kto_reference_point(score) if c.reference_point == "kto" else 0.0)
        weights = self._label_weights(label)
        s = losses.safety_score(score, label, point, c.constraint_form, weights)
        correct = ((score > point).float() == label).float()
        accuracy = correct.mean() if weights is None else (weights * correct).sum() / weights.sum()
        return s, accuracy

    def _heldout_metrics(self, e: int) -> dict[str, float]:
        """Held-out S, gap and accuracies of member e (never trained on)."""
        c = self.config
        out: dict[str, float] = {}
        if c.use_safety:
            s, accuracy = self._heldout_safety(e, self.z0[e])
            target_e = self._member_target(e)
            out.update(heldout_safety_score=float(s), heldout_constraint_gap=target_e - float(s), heldout_safety_accuracy=float(accuracy))
        label = self.heldout_pair_label[e]
        strict = label != 0.5
        if self.ref_heldout_pair is not None and bool(strict.any()):
            logp = self._member_logp(e, self.heldout_pair_index[e])
            score = losses.segment_score(logp, self.ref_heldout_pair[e], c.alpha, c.gamma, c.score_norm == "mean")
            right = ((score[..., 1] > score[..., 0]).float() == label)[strict]
            out["heldout_pref_accuracy"] = float(right.float().mean())
        return out

    def _target(self) -> torch.Tensor | float:
        c = self.config
        if c.delta_mode == "separation":
            return losses.separation_target(self.s_ref, self.s_star, c.delta)
        relative = self.attainable if c.delta_mode == "relative" else None
        return losses.constraint_target(c.delta, c.constraint_form, relative)

    def _member_target(self, e: int) -> float:
        """Member e's constraint bound (the target is per member in the separation and relative modes)."""
        target = self._target()
        return float(target[e]) if isinstance(target, torch.Tensor) and target.dim() > 0 else float(target)

    # ------------------------------------------------------------------ batches
    def _stack_reference(self) -> None:
        assert self.ref_pair is not None and self.ref_safety is not None
        self.ref_pair_all = _stack_padded(self.ref_pair)
        self.ref_safety_all = _stack_padded(self.ref_safety)

    def _draw(self, highs: Sequence[Sequence[int]], sizes: Sequence[int]) -> list[torch.Tensor]:
        """Uniform row indices: member e draws ``sizes[k]`` integers below ``highs[e][k]`` from its own
        generator, in order; one (E, sum(sizes)) host array, moved to the device in ONE copy (pinned and
        asynchronous on a GPU, so the host never waits for the previous step's kernels)."""
        rows = np.empty((self.members, sum(sizes)), np.int64)
        for e, rng in enumerate(self.rngs):
            begin = 0
            for high, size in zip(highs[e], sizes):
                rows[e, begin : begin + size] = rng.integers(high, size=size)
                begin += size
        tensor = torch.from_numpy(rows)
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        return list(tensor.split(list(sizes), dim=1))

    def _forward_logp(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        masks = self.actor.dropout_masks(self.generators, obs.shape[1])
        if self._compiled is not None:  # the masks stay eager: each member's from its own generator
            return self._compiled(obs, act, masks, fused=False)
        return self.actor.logp(obs, act, masks)

    # ------------------------------------------------------------------ the Learner protocol
    def policies(self) -> list[ActorPolicy]:
        return [self._policy(self.actor.member_state(e)) for e in range(self.members)]

    def policy_from_state(self, member: int, state: dict[str, torch.Tensor]) -> ActorPolicy:
        return self._policy(state)

    def _policy(self, state: dict[str, torch.Tensor]) -> ActorPolicy:
        return ActorPolicy(state, self.config.hidden_sizes, self.actor.act_dim, self.config.actor)


    def log_row(self, member: int, means: dict[str, float]) -> dict[str, float]:
        e, joint = member, self.ref_pair is not None
        row: dict[str, float] = {"phase_joint": float(joint), **means}
        if joint and self.config.use_safety:
            row["lambda"] = float(self.lam[e])
            row["safety_target"] = self._member_target(e)
            row["safety_score_ref"] = float(self.s_ref[e])
            row["safety_score_star"] = float(self.s_star[e])
            row["z0"] = float(self.z0[e, 0].detach())
        if joint:
            row.update(self._heldout_metrics(e))
        return row

    def info(self, member: int, curve: Sequence[dict[str, float]]) -> dict[str, Any]:
        e = member

        def last(key: str) -> float:
            return next((row[key] for row in reversed(curve) if key in row), float("nan"))

        lambdas = [row["lambda"] for row in curve if "lambda" in row]
        return {
            "ensemble_size": self.members,
            "final_lambda": float(self.lam[e]),
            "lambda_range": [min(lambdas, default=float("nan")), max(lambdas, default=float("nan"))],
            "pref_accuracy": last("pref_accuracy"),
            "safety_score": last("safety_score"),
            "safety_target": last("safety_target"),
            "safety_score_ref": float(self.s_ref[e]),
            "safety_score_star": float(self.s_star[e]),
            "heldout_safety_score_star": float(self.heldout_s_star[e]),
            "heldout_safety_score": last("heldout_safety_score"),
            "heldout_constraint_gap": last("heldout_constraint_gap"),
            "heldout_safety_accuracy": last("heldout_safety_accuracy"),
            "heldout_pref_accuracy": last("heldout_pref_accuracy"),
            "heldout_pairs": int(len(self.heldout_pair_label[e])),
            "heldout_safety_labels": int(len(self.heldout_safety_label[e])),
        }

    def state_dicts(self) -> list[dict[str, Any]]:
        """Per member: parameters, Adam slots, multiplier, z0, both generators, reference log-likelihoods."""
        optimizer, z0_optimizer = self.optimizer.state_dict(), self.z0_optimizer.state_dict()
        return [
            {
                "version": STATE_VERSION,
                "config": self.config.to_dict(),
                "seed": self.cells[e].spec.seed,
                "threshold": float(self.cells[e].spec.threshold),
                "params": {k: v[e : e + 1].detach().cpu().clone() for k, v in self.actor.named_parameters()},
                "optimizer": _member_slots(optimizer, e),
                "lambda": float(self.lam[e]),
                "z0": self.z0[e : e + 1].detach().cpu().clone(),
                "z0_optimizer": _member_slots(z0_optimizer, e),
                "s_ref": float(self.s_ref[e]),
                "s_star": float(self.s_star[e]),
                "heldout_s_star": float(self.heldout_s_star[e]),
                "numpy_rng": self.rngs[e].bit_generator.state,
                "torch_rng": self.generators[e].get_state(),
                "ref_pair": None if self.ref_pair is None else self.ref_pair[e].cpu(),
                "ref_safety": None if self.ref_safety is None else self.ref_safety[e].cpu(),
                "ref_heldout_pair": None if self.ref_heldout_pair is None else self.ref_heldout_pair[e].cpu(),
                "ref_heldout_safety": None if self.ref_heldout_safety is None else self.ref_heldout_safety[e].cpu(),
                "attainable": float(self.attainable[e]),
            }
            for e in range(self.members)
        ]

    def load_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        for cell, state in zip(self.cells, states):
            if state.get("version") != STATE_VERSION or state["config"] != self.config.to_dict() or state["seed"] != cell.spec.seed:
                raise BenchError(
                    f"presa checkpoint in {cell.spec.checkpoint_dir} belongs to another config or seed; "
                    "delete it (or use another checkpoint directory) to start afresh"
                )
        dev = self.device
        with torch.no_grad():
            for name, param in self.actor.named_parameters():
                param.copy_(torch.cat([s["params"][name] for s in states]).to(dev))
        if states[0]["ref_pair"] is not None:
            self.ref_pair = [s["ref_pair"].to(dev) for s in states]
            self.ref_safety = [s["ref_safety"].to(dev) for s in states]
            self.ref_heldout_pair = [s["ref_heldout_pair"].to(dev) for s in states]
            self.ref_heldout_safety = [s["ref_heldout_safety"].to(dev) for s in states]
            self._stack_reference()
            self.optimizer = self._new_optimizer()
        _load_member_slots(self.optimizer, [s["optimizer"] for s in states], dev)
        self.lam = torch.tensor([s["lambda"] for s in states], device=dev, dtype=torch.float32)
        with torch.no_grad():
            self.z0.copy_(torch.cat([s["z0"] for s in states]).to(dev))
        _load_member_slots(self.z0_optimizer, [s["z0_optimizer"] for s in states], dev)
        self.s_ref = torch.tensor([s["s_ref"] for s in states], device=dev)
        self.s_star = torch.tensor([s["s_star"] for s in states], device=dev)
        self.heldout_s_star = torch.tensor([s["heldout_s_star"] for s in states], device=dev)
        for e, s in enumerate(states):
            self.rngs[e].bit_generator.state = s["numpy_rng"]
            self.generators[e].set_state(s["torch_rng"])
        self.attainable = torch.tensor([s["attainable"] for s in states], device=dev)


def _member_slots(optimizer_state: dict[str, Any], e: int) -> dict[Any, dict[str, torch.Tensor]]:
    """Member e's rows of every Adam slot (the step counter is shared and copied)."""
    return {
        slot: {k: (v[e : e + 1].clone() if v.dim() > 0 else v.clone()) for k, v in state.items()}
        for slot, state in optimizer_state["state"].items()
    }


def _load_member_slots(optimizer: torch.optim.Optimizer, members: list[dict[Any, dict[str, torch.Tensor]]], device: torch.device) -> None:
    """Inverse of `_member_slots`: stack each member's slots back into one optimizer."""
    state = optimizer.state_dict()
    state["state"] = {
        slot: {
            k: (torch.cat([m[slot][k] for m in members]).to(device) if v.dim() > 0 else v.clone())
            for k, v in members[0][slot].items()
        }
        for slot in members[0]
    }
    optimizer.load_state_dict(state)


def _stack_padded(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """(E, max_len, ...) with member e's tensor in its first len_e rows (the rest zeros, never drawn)."""
    if all(t.shape == tensors[0].shape for t in tensors):
        return torch.stack(list(tensors))
    out = tensors[0].new_zeros((len(tensors), max(len(t) for t in tensors), *tensors[0].shape[1:]))
    for e, t in enumerate(tensors):
        out[e, : len(t)] = t
    return out


def _same_data(a: Any, b: Any) -> bool:
    if a is b:
        return True
    return (
        a.observations.shape == b.observations.shape
        and np.array_equal(a.observations, b.observations)
        and np.array_equal(a.actions, b.actions)
    )


#: Cells per batched ensemble on CPU. Measured (`make bench`: benchmarks/bench_presa.py, one thread,
#: BallCircle, batch 96, H 40): 3 and 10 batched cells ran at 0.98x the seed-steps/s of one cell after
#: another -- one core is compute-bound either way, so batching gains nothing there and cells train
#: one at a time unless asked (--ensemble-size). On a GPU all cells of a group train together.
CPU_ENSEMBLE_SIZE = 1


def learner(cells: list[Cell], inputs_list: Sequence[TrainInputs], device: torch.device) -> PreSaLearner:
    """One ensemble of these cells; they must share config, segment length, data and device."""
    first = cells[0]
    for cell, inputs in zip(cells, inputs_list):
        if cell.config.to_dict() != first.config.to_dict():
            diff = sorted(k for k, v in cell.config.to_dict().items() if first.config.to_dict()[k] != v)
            raise BadInput(f"presa: cells trained together must share one config (they differ in {', '.join(diff)}); train them apart")
        if cell.pair_index.shape[-1] != first.pair_index.shape[-1]:
            raise BadInput("presa: cells trained together must share one feedback segment length; train them apart")
        if not _same_data(inputs.data, inputs_list[0].data):
            raise BadInput("presa: cells trained together must share one dataset; train them apart")
        if cell.spec.device != first.spec.device:
            raise BadInput("presa: cells trained together must share one device; train them apart")
    return PreSaLearner(cells, inputs_list[0], device)
