"""The speed work of issue 9 must not change what PreSa computes: the byte-wise dropout masks are
Bernoulli(keep) in every byte position, the fused relu-dropout node equals the plain ops forward and
backward, a torch.compile'd trainer follows the eager one, the allocator tuning is harmless, and
`make bench`'s script runs in its small mode."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.data import Dataset
from bench.devices import tune_cpu_allocator
from bench.errors import BadInput
from bench.training import train
from presa.algorithm import PreSa
from presa.networks import EnsembleActor, dropout_mask
from test_presa_train import make_inputs, make_spec, params

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("keep", [0.75, 0.5, 0.9])
def test_dropout_mask_is_bernoulli_in_every_byte_position(keep: float) -> None:
    # 0.75 and 0.5 take the byte path, 0.9 (not a multiple of 1/256) the uniform fallback
    generator = torch.Generator().manual_seed(0)
    mask = dropout_mask((4000, 256), keep, generator, "cpu")
    assert mask.dtype == torch.float32 and set(mask.unique().tolist()) <= {0.0, 1.0}
    flat = mask.reshape(-1)
    # each of the 8 bytes of a 64-bit draw decides one element: a biased byte (e.g. a sign bit that
    # is never set) would show up as one position with the wrong rate (128k samples each: sd 0.0012)
    for position in range(8):
        assert flat[position::8].mean().item() == pytest.approx(keep, abs=0.006)
    again = dropout_mask((4000, 256), keep, torch.Generator().manual_seed(0), "cpu")
    other = dropout_mask((4000, 256), keep, torch.Generator().manual_seed(1), "cpu")
    assert torch.equal(mask, again) and not torch.equal(mask, other)


def test_fused_relu_dropout_equals_plain_ops_forward_and_backward() -> None:
    generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
    actor = EnsembleActor(generators, 6, 3, (64, 32), 0.25, "gaussian", -5.0, 2.0, 1.41)
    obs, act = torch.randn(2, 300, 6), torch.rand(2, 300, 3) * 2 - 1
    masks = actor.dropout_masks(generators, 300)
    assert masks is not None and masks[0].shape == (2, 300, 64) and masks[1].shape == (2, 300, 32)

    def grads(fused: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        actor.zero_grad(set_to_none=True)
        logp = actor.logp(obs, act, masks, fused=fused)
        logp.sum().backward()
        return logp.detach(), [p.grad.clone() for p in actor.parameters()]

    fused_logp, fused_grads = grads(True)
    plain_logp, plain_grads = grads(False)
    torch.testing.assert_close(fused_logp, plain_logp, rtol=1e-6, atol=1e-6)
    for a, b in zip(fused_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # and the plain ops are inverted dropout: relu(x) * mask / keep
    x = obs
    for layer, (w, b) in enumerate(zip(actor.weights, actor.biases)):
        x = torch.baddbmm(b, x, w)
        if layer < 2:
            x = torch.relu(x) * masks[layer] / 0.75
    mean, log_std = actor.head(x)
    torch.testing.assert_close(actor.log_likelihood(mean, log_std, act).detach(), plain_logp, rtol=1e-5, atol=1e-5)


def test_compiled_trainer_follows_the_eager_one(sim_dataset: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = make_inputs(sim_dataset)
    eager = train(PreSa, make_spec(sim_dataset, steps=12, warmup_steps=4, attainable_steps=3), inputs)
    modes, calls, real_compile = [], [], torch.compile

    def spy(fn, mode=None, **kw):  # noqa: ANN001, ANN202 - torch.compile's own signature
        modes.append(mode)
        compiled_fn = real_compile(fn, mode=mode, **kw)

        def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls.append(1)
            return compiled_fn(*args, **kwargs)

        return counted

    monkeypatch.setattr(torch, "compile", spy)
    compiled = train(PreSa, make_spec(sim_dataset, steps=12, warmup_steps=4, attainable_steps=3, compile="default"), inputs)
    # 12 training steps + the 3 steps of the safety-only run that measures S* + the max(1, 3 // 5)
    # dropout batch that measures S_ref
    assert modes == ["default"] and len(calls) == 12 + 3 + 1, "every training step must go through the compiled forward"
    for a, b in zip(params(eager.policy), params(compiled.policy)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(BadInput, match="compile"):
        PreSa.config_for(dataclasses.replace(make_spec(sim_dataset), overrides={"compile": "fast"}))


def test_allocator_tuning_keeps_the_numbers(sim_dataset: Dataset) -> None:
    inputs = make_inputs(sim_dataset)
    before = train(PreSa, make_spec(sim_dataset, steps=8), inputs)
    assert tune_cpu_allocator() is True  # glibc here (the CI machine is the same kind)
    assert tune_cpu_allocator() is True  # idempotent
    after = train(PreSa, make_spec(sim_dataset, steps=8), inputs)
    assert all(torch.equal(a, b) for a, b in zip(params(before.policy), params(after.policy)))


def test_bench_script_small_mode(sim_dataset_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_presa.py"), "--task", "BallRun", "--dataset", str(sim_dataset_path),
           "--seconds", "0.3", "--rounds", "1", "--seeds", "1,2", "--num-queries", "100", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [row["seeds"] for row in result["presa"]] == [1, 2]
    assert all(row["steps_per_second"] > 0 and row["measured_steps"] >= 1 for row in result["presa"] + result["osrl_bc"])
    assert result["presa"][1]["seed_steps_per_second"] == pytest.approx(2 * result["presa"][1]["steps_per_second"])
    assert result["presa_gflops_vs_bc"] > 0 and result["allocator"] == "tuned"
    assert "PreSa GFLOP/s / OSRL BC GFLOP/s" in proc.stdout
