"""PreSa's pure loss functions against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from presa import losses


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_segment_score_hand_computed() -> None:
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    ref = torch.tensor([[0.0, -1.0, -1.0]])
    # differences -1, -1, -2 weighted by 1, 0.5, 0.25 -> -2.0; times alpha 0.5 -> -1.0
    assert losses.segment_score(logp, ref, alpha=0.5, gamma=0.5).item() == pytest.approx(-1.0)
    # per-step average: divided by 1 + 0.5 + 0.25
    assert losses.segment_score(logp, ref, 0.5, 0.5, normalise=True).item() == pytest.approx(-1.0 / 1.75)


def test_segment_score_keeps_leading_axes() -> None:
    logp = torch.zeros(3, 4, 2, 5)
    assert losses.segment_score(logp, logp, 0.2, 0.99).shape == (3, 4, 2)


def test_cpl_loss_hand_computed() -> None:
    first, second = torch.tensor([1.0]), torch.tensor([2.0])
    bias = 0.5
    # y = 1 (second preferred): softplus(-(2 - 0.5 * 1)) ; y = 0: softplus(-(1 - 0.5 * 2)) = log 2
    loss1, acc1 = losses.cpl_loss(first, second, torch.tensor([1.0]), bias)
    loss0, acc0 = losses.cpl_loss(first, second, torch.tensor([0.0]), bias)
    loss_tie, _ = losses.cpl_loss(first, second, torch.tensor([0.5]), bias)
    assert loss1.item() == pytest.approx(softplus(-1.5))
    assert loss0.item() == pytest.approx(math.log(2.0))
    assert loss_tie.item() == pytest.approx(0.5 * softplus(-1.5) + 0.5 * math.log(2.0))
    assert acc1.item() == 1.0 and acc0.item() == 0.0


def test_cpl_loss_gradient_raises_the_preferred_segment() -> None:
    first = torch.tensor([0.3, -0.2], requires_grad=True)
    second = torch.tensor([0.1, 0.4], requires_grad=True)
    label = torch.tensor([1.0, 0.0])  # pair 0: second preferred; pair 1: first preferred
    loss, _ = losses.cpl_loss(first, second, label, bias=0.75)
    loss.backward()
    # gradient descent moves a score against its gradient: preferred up, the other down
    assert second.grad[0] < 0 and first.grad[0] > 0
    assert first.grad[1] < 0 and second.grad[1] > 0


def test_safety_values_and_reference_point() -> None:
    score = torch.tensor([2.0, 2.0, -1.0])
    label = torch.tensor([1.0, 0.0, 0.0])
    v = losses.safety_values(score, label)
    assert v.tolist() == pytest.approx([sigmoid(2.0), sigmoid(-2.0), sigmoid(1.0)])
    z0 = losses.kto_reference_point(score)
    assert z0.item() == pytest.approx(1.0)  # mean 1.0, clamped at >= 0
    assert losses.kto_reference_point(torch.tensor([-3.0, -1.0])).item() == 0.0
    v_kto = losses.safety_values(score, label, z0)
    assert v_kto.tolist() == pytest.approx([sigmoid(1.0), sigmoid(-1.0), sigmoid(2.0)])
    s_mean = losses.safety_score(score, label, 0.0, "mean")
    s_log = losses.safety_score(score, label, 0.0, "log")
    assert s_mean.item() == pytest.approx((sigmoid(2.0) + sigmoid(-2.0) + sigmoid(1.0)) / 3)
    assert s_log.item() == pytest.approx((math.log(sigmoid(2.0)) + math.log(sigmoid(-2.0)) + math.log(sigmoid(1.0))) / 3)


def test_constraint_target_and_lagrangian() -> None:
    assert losses.constraint_target(0.9, "mean") == 0.9
    assert losses.constraint_target(0.9, "log") == pytest.approx(math.log(0.9))
    attainable = torch.tensor([0.8])
    assert losses.constraint_target(0.9, "mean", attainable).item() == pytest.approx(0.72)
    assert losses.constraint_target(0.9, "log", torch.tensor([-0.5])).item() == pytest.approx(math.log(0.9) - 0.5)
    lam = torch.tensor([2.0], requires_grad=True)
    safety = torch.tensor([0.6], requires_grad=True)
    value = losses.lagrangian(torch.tensor([0.3]), safety, lam, 0.9)
    assert value.item() == pytest.approx(0.3 + 2.0 * 0.3)
    value.sum().backward()
    assert lam.grad is None  # the multiplier is not trained by the policy's optimizer
    assert safety.grad.item() == pytest.approx(-2.0)


def test_dual_update_projected_and_log() -> None:
    lam = torch.tensor([1.0, 0.05, 9.9])
    out = losses.dual_update(lam, torch.tensor([0.5, -0.5, 0.5]), lr=0.2, param="projected", lam_max=10.0)
    assert out.tolist() == pytest.approx([1.1, 0.0, 10.0])  # rises, projected at 0, capped
    out = losses.dual_update(torch.tensor([1.0, 1.0]), torch.tensor([0.5, -0.5]), lr=0.2, param="log")
    assert out.tolist() == pytest.approx([math.exp(0.1), math.exp(-0.1)])
    with pytest.raises(ValueError):
        losses.dual_update(lam, lam, 0.1, param="sideways")


def test_attainable_safety_hand_computed() -> None:
    # deterministic actor: max log pi = 0; safe segment with ref log pi -1 at each of 2 steps,
    # gamma 1, alpha 0.5 -> best score 1.0 -> value sigmoid(1); the unsafe segment can reach 1.
    ref = torch.tensor([[-1.0, -1.0], [-4.0, -4.0]])
    label = torch.tensor([1.0, 0.0])
    s = losses.attainable_safety(ref, label, alpha=0.5, gamma=1.0, max_logp=0.0)
    assert s.item() == pytest.approx((sigmoid(1.0) + 1.0) / 2)
    s_log = losses.attainable_safety(ref, label, 0.5, 1.0, 0.0, form="log")
    assert s_log.item() == pytest.approx(math.log(sigmoid(1.0)) / 2)
    assert losses.max_log_likelihood("deterministic", 2, -5.0) == 0.0
    assert losses.max_log_likelihood("gaussian", 2, -5.0) == pytest.approx(2 * (5.0 - 0.5 * math.log(2 * math.pi)))


def test_label_weights_and_weighted_score() -> None:
    label = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert losses.label_weights(label).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert losses.label_weights(label, 0.25).tolist() == pytest.approx([1.0, 0.25, 0.25, 0.25])
    # balanced: unsafe weight 0.25 * n_safe / n_unsafe = 0.25 / 3 (TraC's lambda_u)
    assert losses.label_weights(label, 0.25, balance=True).tolist() == pytest.approx([1.0, 0.25 / 3, 0.25 / 3, 0.25 / 3])
    score = torch.tensor([1.0, -2.0, 0.0, 3.0])
    w = losses.label_weights(label, 0.5)
    values = [sigmoid(1.0), sigmoid(2.0), sigmoid(0.0), sigmoid(-3.0)]
    expected = (values[0] + 0.5 * sum(values[1:])) / 2.5
    assert losses.safety_score(score, label, 0.0, "mean", w).item() == pytest.approx(expected)


def test_balanced_weights_of_a_batch_without_safe_segments_are_not_all_zero() -> None:
    """Issue 27: with class balance, a batch of unsafe segments only had every weight 0, so S was 0
    (its maximum) and the dual step got a large negative gap. It gets plain weights instead; a row
    with both classes keeps its balanced weights."""
    label = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    weights = losses.label_weights(label, 0.25, balance=True)
    assert weights[0].tolist() == pytest.approx([0.25] * 4)
    assert weights[1].tolist() == pytest.approx([1.0, 0.25 / 3, 0.25 / 3, 0.25 / 3])
    score = torch.tensor([[1.0, -2.0, 0.0, 3.0]] * 2)
    s = losses.safety_score(score, label, 0.0, "log", weights)
    assert s[0].item() == pytest.approx(torch.nn.functional.logsigmoid(-score[0]).mean().item())
    assert s[0].item() < 0.0


def test_constant_reference_point_is_the_logit_of_the_weighted_safe_share() -> None:
    label = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert losses.constant_reference_point(label, None).item() == pytest.approx(math.log(0.25 / 0.75))
    balanced = losses.label_weights(label, 1.0, balance=True)
    assert losses.constant_reference_point(label, balanced).item() == pytest.approx(0.0, abs=1e-6)
