"""The actor as a batched ensemble: E independent MLPs evaluated with one torch.baddbmm per layer.

One PreSa run is an ensemble of size 1; `presa.trainer.PreSaLearner` trains several cells (seeds,
thresholds) as one ensemble, so that every layer is one batched matrix product instead of E small
ones. Each member draws its initial weights and dropout masks from its own torch.Generator, so a
member's numbers do not depend on which other members it is trained with.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

#: Orthogonal-init gain of the output layer (CPL/TraC initialise the last layer small).
OUTPUT_GAIN = 0.01


def dropout_mask(shape: tuple[int, ...], keep: float, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """A dropout keep-mask: 1.0 with probability ``keep``, else 0.0, drawn from ``generator``
    (the inverted-dropout scale 1/keep is applied by `EnsembleActor.forward`, to the next layer).

    Where 256 * keep is a whole number (dropout 0.25, 0.5, ...) each element is one random BYTE
    compared with 256 * keep: exact, and one 64-bit draw serves eight elements, which makes the mask
    about 5x cheaper than uniform_ + compare (measured on CPU, 11,520 x 256: 2 ms against 9.8 ms;
    bernoulli_ takes 33 ms). Other probabilities fall back to uniform floats.
    """
    numel = math.prod(shape)
    threshold = 256.0 * keep
    if threshold == int(threshold):
        words = torch.empty((numel + 7) // 8, dtype=torch.int64, device=device)
        words.random_(-(2**63), None, generator=generator)  # the full 64-bit range: all eight bytes uniform
        mask = torch.empty(shape, device=device)
        # compare straight into a float tensor: 8x faster than a bool result converted afterwards
        torch.lt(words.view(torch.uint8)[:numel].view(shape), int(threshold), out=mask)
        return mask
    mask = torch.empty(shape, device=device).uniform_(generator=generator)
    return mask.lt_(keep)


class _ReluDropout(torch.autograd.Function):
    """relu(x) * keep, in place on x (the fresh output of a layer's matrix product, which no backward
    needs), with keep a 0/1 mask. Its backward is ONE pass, relu's own: the gradient passes where the
    output is positive, which already excludes the dropped units. Against torch.relu followed by
    ``x * mask`` this saves two activation-sized allocations forward and one pass backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        ctx.mark_dirty(x)
        out = x.clamp_min_(0.0).mul_(keep)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, out, 0.0), None


def mlp(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    product: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    masks: list[torch.Tensor] | None = None,
    scale: float | None = None,
    fused: bool = True,
) -> torch.Tensor:
    """THE actor's layers, written once for training, the frozen reference and evaluation: relu
    hidden layers, output pre-activations. ``product(bias, x, weight)`` is torch.baddbmm for the
    (E, N, .) ensemble and torch.addmm for one policy's (N, .) rows; each keeps the kernel that made
    the stored numbers (the two can round differently). With ``masks``, dropout: the 1/keep ``scale``
    multiplies every weight after the first, and relu + mask run as `_ReluDropout` (``fused``) or as
    plain ops (for torch.compile)."""
    last = len(weights) - 1
    for layer, (weight, bias) in enumerate(zip(weights, biases)):
        if masks is not None and layer > 0:
            weight = weight * scale
        x = product(bias, x, weight)
        if layer < last:
            if masks is None:
                x = torch.relu(x)
            elif fused:
                x = _ReluDropout.apply(x, masks[layer])
            else:
                x = torch.relu(x) * masks[layer]
    return x


class EnsembleActor(nn.Module):
    """E MLP actors: obs (E, N, obs_dim) -> tanh mean (E, N, act_dim) [and log-std for "gaussian"]."""

    def __init__(
        self,
        generators: Sequence[torch.Generator],
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int],
        dropout: float,
        actor: str,
        log_std_min: float,
        log_std_max: float,
        init_gain: float,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.members = len(generators)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.hidden_sizes = tuple(hidden_sizes)
        self.dropout = dropout
        self.actor = actor
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        out_dim = act_dim * (2 if actor == "gaussian" else 1)
        sizes = [obs_dim, *self.hidden_sizes, out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            gain = OUTPUT_GAIN if layer == len(sizes) - 2 else init_gain
            weight = torch.empty(self.members, fan_in, fan_out, device=device)
            for member, generator in enumerate(generators):
                # orthogonal init of the (out, in) matrix as nn.Linear would hold it [CPL/TraC]
                block = torch.empty(fan_out, fan_in, device=device)
                nn.init.orthogonal_(block, gain=gain, generator=generator)
                weight[member] = block.T
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(torch.zeros(self.members, 1, fan_out, device=device)))

    def dropout_masks(self, generators: Sequence[torch.Generator], rows: int) -> list[torch.Tensor] | None:
        """Dropout keep-masks (E, rows, width) per hidden layer, member e from generator e."""
        if self.dropout <= 0.0:
            return None
        device = self.weights[0].device
        keep = 1.0 - self.dropout
        return [
            torch.stack([dropout_mask((rows, width), keep, generator, device) for generator in generators])
            if len(generators) > 1
            else dropout_mask((rows, width), keep, generators[0], device).unsqueeze(0)
            for width in self.hidden_sizes
        ]

    def forward(
        self, obs: torch.Tensor, masks: list[torch.Tensor] | None = None, fused: bool = True, member: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``masks``: 0/1 keep-masks from `dropout_masks` (inverted dropout: the 1/keep scale is folded
        into the next layer's weight, a (width x width) product instead of one over the activations).
        ``fused``: relu and dropout as one in-place autograd node (eager); False writes them as plain
        ops, which is what torch.compile wants to see (it fuses them itself). ``member``: only that
        member's layers, obs (1, N, obs_dim) (the frozen reference's log-likelihoods, held-out scores)."""
        weights, biases = list(self.weights), list(self.biases)
        if member is not None:
            weights = [w[member : member + 1] for w in weights]
            biases = [b[member : member + 1] for b in biases]
        scale = 1.0 / (1.0 - self.dropout) if masks is not None else None
        return self.head(mlp(obs, weights, biases, torch.baddbmm, masks, scale, fused))

    def logp(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        masks: list[torch.Tensor] | None = None,
        fused: bool = True,
        member: int | None = None,
    ) -> torch.Tensor:
        """log pi(actions | obs) (E, N) of every member (or (1, N) of ``member``), with dropout when
        ``masks`` are given."""
        mean, log_std = self.forward(obs, masks, fused, member)
        return self.log_likelihood(mean, log_std, actions)

    def head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Output layer pre-activations -> (tanh mean, log-std or None)."""
        if self.actor == "gaussian":
            mean, raw_log_std = x.split(self.act_dim, dim=-1)
            # soft clamp into [log_std_min, log_std_max] (CPL's DiagonalGaussian does the same)
            span = self.log_std_max - self.log_std_min
            log_std = self.log_std_min + 0.5 * span * (torch.tanh(raw_log_std) + 1.0)
            return torch.tanh(mean), log_std
        return torch.tanh(x), None

    def log_likelihood(self, mean: torch.Tensor, log_std: torch.Tensor | None, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) summed over action dims: -||mu - a||^2 (deterministic, CPL/TraC) or the
        diagonal Gaussian density around the tanh mean."""
        if log_std is None:
            return -((mean - actions) ** 2).sum(dim=-1)
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(dim=-1)

    def member_state(self, member: int) -> dict[str, torch.Tensor]:
        """Detached CPU copy of one member's parameters."""
        return {name: p[member].detach().to("cpu").clone() for name, p in self.named_parameters()}


class ActorPolicy:
    """A trained member as a `bench.interfaces.Policy`: deterministic tanh mean, no dropout, CPU."""

    def __init__(self, state: dict[str, torch.Tensor], hidden_sizes: Sequence[int], act_dim: int, actor: str) -> None:
        layers = len(hidden_sizes) + 1
        self.weights = [state[f"weights.{i}"].clone() for i in range(layers)]
        self.biases = [state[f"biases.{i}"].clone() for i in range(layers)]
        self.act_dim = act_dim
        self.actor = actor

    def act(self, observations: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = mlp(torch.as_tensor(np.asarray(observations, np.float32)), self.weights, self.biases, torch.addmm)
            return torch.tanh(x[:, : self.act_dim]).numpy()

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"weights.{i}": w for i, w in enumerate(self.weights)}
        out.update({f"biases.{i}": b for i, b in enumerate(self.biases)})
        return out
