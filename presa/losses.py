"""PreSa's losses as pure torch functions (unit-tested against hand-computed values).

Every function reduces over the LAST axis only, so a leading ensemble axis (one entry per seed /
cell trained together, see presa.trainer) passes through untouched: a batch of E cells gives E
independent losses, and summing them keeps each cell's gradient exactly what it would be alone.

Conventions follow bench.feedback.FeedbackView: a preference label y = 1 means the SECOND segment
of the pair is preferred, 0 the first, 0.5 a tie; a safety label z = 1 means safe.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def discount_weights(length: int, gamma: float, normalise: bool = False, device: torch.device | str | None = None) -> torch.Tensor:
    """gamma^t for t = 0..H-1; with ``normalise`` divided by their sum (a per-step average)."""
    weights = gamma ** torch.arange(length, dtype=torch.float32, device=device)
    return weights / weights.sum() if normalise else weights


def segment_score(
    logp: torch.Tensor, ref_logp: torch.Tensor, alpha: float, gamma: float, normalise: bool = False
) -> torch.Tensor:
    """alpha * sum_t gamma^t (log pi(a_t|s_t) - log pi_ref(a_t|s_t)) over the last axis (H).

    This is CPL's discounted "advantage" sum with the KL-regularised form of CPL/TraC (the frozen
    reference policy pi_ref is the policy after behaviour-cloning warm-up).
    """
    weights = discount_weights(logp.shape[-1], gamma, normalise, logp.device)
    return alpha * ((logp - ref_logp) * weights).sum(dim=-1)


def cpl_loss(
    score_first: torch.Tensor, score_second: torch.Tensor, label: torch.Tensor, bias: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """CPL's preference loss with conservative bias b, and the preference accuracy.

    logit_21 = score(second) - b * score(first) is the logit of "second preferred";
    loss = y * softplus(-logit_21) + (1 - y) * softplus(-logit_12), averaged over the last axis.
    This is jhejna/cpl's ``biased_bce_with_logits`` written with softplus (same values, stable).
    Accuracy counts pairs whose higher-scored segment is the labelled one (ties are never right).
    """
    logit_21 = score_second - bias * score_first
    logit_12 = score_first - bias * score_second
    loss = label * F.softplus(-logit_21) + (1.0 - label) * F.softplus(-logit_12)
    with torch.no_grad():
        accuracy = ((score_second > score_first).float() == torch.round(label)).float().mean(dim=-1)
    return loss.mean(dim=-1), accuracy


def kto_reference_point(score: torch.Tensor) -> torch.Tensor:
    """KTO's reference point: a detached batch estimate of the KL term, clamped at >= 0 (keepdim)."""
    return score.detach().mean(dim=-1, keepdim=True).clamp(min=0.0)


def safety_values(score: torch.Tensor, label: torch.Tensor, z0: torch.Tensor | float = 0.0) -> torch.Tensor:
    """HALO/KTO value of each labelled segment: sigmoid(score - z0) if safe, sigmoid(z0 - score) if unsafe."""
    return label * torch.sigmoid(score - z0) + (1.0 - label) * torch.sigmoid(z0 - score)


def log_safety_values(score: torch.Tensor, label: torch.Tensor, z0: torch.Tensor | float = 0.0) -> torch.Tensor:
    """log of `safety_values`, computed stably with logsigmoid."""
    return label * F.logsigmoid(score - z0) + (1.0 - label) * F.logsigmoid(z0 - score)


def label_weights(label: torch.Tensor, unsafe_weight: float = 1.0, balance: bool = False) -> torch.Tensor:
    """Per-segment weights of the safety score: 1 for safe segments, ``unsafe_weight`` for unsafe ones,
    times n_safe / n_unsafe (over the last axis) with ``balance``. TraC weighs its undesirable class
    by eta * n_desirable / n_undesirable with eta = 0.25 on Bullet tasks."""
    unsafe = 1.0 - label
    scale = torch.full_like(label[..., :1], unsafe_weight)
    if balance:
        n_safe = label.sum(dim=-1, keepdim=True)
        ratio = n_safe / unsafe.sum(dim=-1, keepdim=True).clamp(min=1.0)
        # a batch with no safe segment has nothing to balance against: plain weights, not all zeros
        # (all-zero weights made S = 0, its maximum, and fed the dual step a large negative gap)
        scale = scale * torch.where(n_safe > 0, ratio, torch.ones_like(ratio))
    return label + unsafe * scale


def safety_score(
    score: torch.Tensor,
    label: torch.Tensor,
    z0: torch.Tensor | float = 0.0,
    form: str = "mean",
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """S(theta): the (weighted) mean of the values ("mean", the paper's Eq. 11) or of their logs
    ("log", which is minus TraC's weighted cross-entropy). Without weights a plain mean."""
    if form == "mean":
        values = safety_values(score, label, z0)
    elif form == "log":
        values = log_safety_values(score, label, z0)
    else:
        raise ValueError(f"unknown constraint form {form!r}")
    if weights is None:
        return values.mean(dim=-1)
    return (weights * values).sum(dim=-1) / weights.sum(dim=-1).clamp(min=1e-12)


def constraint_target(delta: float, form: str, attainable: torch.Tensor | None = None) -> torch.Tensor | float:
    """The bound S must reach: delta (mean form) or log delta (log form); with ``attainable`` (S_max in
    the same form) the bound is relative: delta * S_max, or log delta + S_max for the log form."""
    if form == "mean":
        return delta if attainable is None else delta * attainable
    if form == "log":
        return math.log(delta) if attainable is None else math.log(delta) + attainable
    raise ValueError(f"unknown constraint form {form!r}")


def reference_safety_score(label: torch.Tensor, weights: torch.Tensor | None, form: str, learned_z0: bool) -> torch.Tensor:
    """S of the reference policy (every score 0). With z0 = 0 (or KTO's, which is 0 there) every value
    is sigmoid(0) = 1/2; with a LEARNED z0 the best constant is the (weighted) safe share p, so S_ref
    = p log p + (1 - p) log(1 - p) (log form) or p^2 + (1 - p)^2 (mean form): log 1/2 or 1/2 with
    balanced classes. Reduces over the last axis."""
    if not learned_z0:
        value = math.log(0.5) if form == "log" else 0.5
        return torch.full(label.shape[:-1], value, device=label.device)
    w = torch.ones_like(label) if weights is None else weights
    p = ((w * label).sum(dim=-1) / w.sum(dim=-1).clamp(min=1e-12)).clamp(1e-6, 1 - 1e-6)
    if form == "log":
        return p * torch.log(p) + (1 - p) * torch.log(1 - p)
    return p * p + (1 - p) * (1 - p)


def constant_reference_point(label: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The best constant z0 when every score is 0: logit of the (weighted) safe share p (0 with
    balanced classes), the point at which ``reference_safety_score`` is reached. Shape (..., 1)."""
    w = torch.ones_like(label) if weights is None else weights
    p = ((w * label).sum(dim=-1, keepdim=True) / w.sum(dim=-1, keepdim=True).clamp(min=1e-12)).clamp(1e-6, 1 - 1e-6)
    return torch.log(p) - torch.log1p(-p)


def separation_target(s_ref: torch.Tensor, s_star: torch.Tensor, delta: float) -> torch.Tensor:
    """S_ref + delta (S* - S_ref): keep the share delta of the separation that maximising S alone
    reached (S*). Attainable by construction for delta < 1 (S* was reached from the same start)."""
    return s_ref + delta * (s_star - s_ref)


def lagrangian(pref_loss: torch.Tensor, safety: torch.Tensor, lam: torch.Tensor, target: torch.Tensor | float) -> torch.Tensor:
    """Policy objective of Eq. 14, L_pref + lambda * (target - S), with lambda held fixed (detached)."""
    return pref_loss + lam.detach() * (target - safety)


def dual_update(
    lam: torch.Tensor,
    violation: torch.Tensor,
    lr: float,
    param: str = "projected",
    lam_max: float = math.inf,
) -> torch.Tensor:
    """One ascent step of the multiplier on the detached violation (target - S_hat).

    "projected": lambda + lr * violation, projected onto [0, lam_max];
    "log": exp(log lambda + lr * violation) capped at lam_max (stays positive, moves multiplicatively).
    """
    violation = violation.detach()
    if param == "projected":
        return (lam + lr * violation).clamp(min=0.0, max=lam_max)
    if param == "log":
        return torch.exp(torch.log(lam) + lr * violation).clamp(max=lam_max)
    raise ValueError(f"unknown lambda parameterisation {param!r}")


def max_log_likelihood(actor: str, act_dim: int, log_std_min: float) -> float:
    """The supremum of log pi(a|s) per step: 0 for the deterministic actor (mu = a), and for the
    Gaussian the density at its mean with the smallest allowed std."""
    if actor == "deterministic":
        return 0.0
    return act_dim * (-log_std_min - 0.5 * math.log(2 * math.pi))


def attainable_safety(
    ref_logp: torch.Tensor,
    label: torch.Tensor,
    alpha: float,
    gamma: float,
    max_logp: float,
    normalise: bool = False,
    form: str = "mean",
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The largest S the actor can reach on these labelled segments (z0 = 0): safe segments at their
    maximal score (log pi = max_logp at every step), unsafe ones at score -> -inf (value 1). Each
    segment is bounded separately, so this is an upper bound of what one policy reaches on all."""
    best_score = segment_score(torch.full_like(ref_logp, max_logp), ref_logp, alpha, gamma, normalise)
    if form == "mean":
        values = label * torch.sigmoid(best_score) + (1.0 - label)
    else:
        values = label * F.logsigmoid(best_score)
    if weights is None:
        return values.mean(dim=-1)
    return (weights * values).sum(dim=-1) / weights.sum(dim=-1)
