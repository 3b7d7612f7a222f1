"""Throughput of PreSa's joint-phase gradient step (1, 3, 10 seeds batched) against OSRL's BC.

A benchmark script, not a test. Both sides see the same data on the same thread count:
- PreSa: presa.trainer.PreSaLearner after the warm-up (reference frozen), one gradient step =
  batch_size preference pairs (2 x H state-action pairs each) + batch_size safety segments (H each);
- OSRL BC: osrl.algorithms.BC + BCTrainer.train_one_step on a batch with the SAME number of
  state-action pairs, and on OSRL's default batch (512), same [256, 256] MLP.
GFLOP/s counts the dense layers only: 2 * sum(fan_in * fan_out) flops per sample forward,
x3 for forward + backward.

Usage: .venv/bin/python benchmarks/bench_presa.py [--task BallCircle] [--threads 1] [--seconds 8]
       [--seeds 1,3,10] [--device cpu|cuda] [--compile off,reduce-overhead] [--json out.json]
Uses the task's shipped/DSRL dataset if one is found, else 30 random-action episodes of the real simulator.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any, Callable

import numpy as np

import bench  # noqa: F401  (compat patches before dsrl/osrl)


def load_data(task_name: str, path: str = "") -> Any:
    from bench.data import from_arrays, load_task_dataset
    from bench.envs import make_env
    from bench.errors import DatasetError
    from bench.tasks import get_task

    task = get_task(task_name)
    if path:
        return load_task_dataset(task, path), path
    try:
        return load_task_dataset(task), "dataset"
    except DatasetError:
        pass
    env = make_env(task)
    rng = np.random.default_rng(0)
    rows: dict[str, list[Any]] = {k: [] for k in ("observations", "next_observations", "actions", "rewards", "costs", "terminals", "timeouts")}
    for ep in range(30):
        np.random.seed(ep)
        obs, _ = env.reset(seed=ep)
        done = False
        while not done:
            action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            nxt, r, term, trunc, info = env.step(action)
            for k, v in zip(rows, (obs, nxt, action, r, info.get("cost", 0.0), term, trunc and not term)):
                rows[k].append(v)
            obs, done = nxt, term or trunc
    return from_arrays({k: np.asarray(v) for k, v in rows.items()}, task), "30 random-action episodes"


def measure(steppers: dict[str, Callable[[], Any]], seconds: float, rounds: int, warmup: int = 2) -> dict[str, dict[str, float]]:
    """Steps per second of each stepper: ``rounds`` rounds, each timing every stepper in turn for
    seconds / rounds; the median over rounds, so that load on a shared machine hits all alike."""
    for step in steppers.values():
        for _ in range(warmup):
            step()
    rates: dict[str, list[float]] = {name: [] for name in steppers}
    counts = dict.fromkeys(steppers, 0)
    for _ in range(rounds):
        for name, step in steppers.items():
            count, started = 0, time.perf_counter()
            while count == 0 or time.perf_counter() - started < seconds / rounds:
                step()
                count += 1
            rates[name].append(count / (time.perf_counter() - started))
            counts[name] += count
    return {name: {"rate": float(np.median(r)), "min": min(r), "max": max(r), "steps": counts[name]} for name, r in rates.items()}


#: The paper's grid: 29 tasks x 3 thresholds x 3 seeds, 100k gradient steps each (TraC/PreSa budget).
GRID_CELLS, GRID_STEPS = 29 * 3 * 3, 100_000


def dense_flops(sizes: list[int]) -> int:
    return 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="BallCircle")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per variant, split over --rounds")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds; the median round is reported")
    parser.add_argument("--seeds", default="1,3,10")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=0, help="PreSa segments per batch (0 = the config's 96)")
    parser.add_argument("--dataset", default="", help="a DSRL HDF5 file (default: the task's shipped/DSRL dataset)")
    parser.add_argument("--num-queries", type=int, default=10_000, help="preference pairs and safety labels (the paper: 10k); only the set-up time depends on it")
    parser.add_argument("--default-allocator", action="store_true", help="skip bench.devices.tune_cpu_allocator (what presa-bench run does)")
    parser.add_argument("--compile", default="off", help="comma-separated PreSa compile modes to measure (off, default, reduce-overhead, ...)")
    parser.add_argument("--json", default="", help="also write the numbers to this file")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from bench.devices import tune_cpu_allocator

    allocator = "glibc default" if args.default_allocator else ("tuned" if tune_cpu_allocator() else "default (not glibc)")
    from bench.feedback import FeedbackSettings, make_feedback
    from bench.interfaces import TrainInputs, TrainSpec
    from bench.profiles import get_profile
    from presa.algorithm import PreSa
    from bench.devices import resolve_device

    dataset, source = load_data(args.task, args.dataset)
    task = dataset.task
    length = FeedbackSettings().resolve(task).segment_length
    distinct = len(dataset.segment_starts(length)[0])
    # the paper's 10k queries where the data has that many distinct segments (the batch cost does not depend on it)
    settings = FeedbackSettings(num_queries=min(args.num_queries, distinct // 2))
    feedback = make_feedback(dataset, task.thresholds[1], 0, settings).view()
    inputs = TrainInputs(dataset.learner_view(), feedback)
    profile = dataclasses.replace(get_profile("paper"), log_every=10**9, eval_every=0, checkpoint_every=10**9)
    overrides: dict[str, Any] = {"batch_size": args.batch_size} if args.batch_size else {}
    # the S* measurement (a safety-only run at the end of the warm-up) is set-up, not the step timed here
    overrides["attainable_steps"] = 1
    device = torch.device(resolve_device(args.device))
    results: dict[str, Any] = {
        "task": task.name, "data": source, "transitions": dataset.num_transitions, "threads": args.threads,
        "device": str(device), "allocator": allocator, "segment_length": feedback.segment_length, "torch": torch.__version__,
    }
    config = None
    def synced(step: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()

        return run

    steppers: dict[str, Callable[[], None]] = {}
    reference_seconds: dict[int, float] = {}
    seed_counts = [int(s) for s in args.seeds.split(",")]
    modes = args.compile.split(",")
    variants = [(mode, seeds) for mode in modes for seeds in seed_counts]
    for mode, seeds in variants:
        specs = [TrainSpec(task, task.thresholds[1], s, profile, device=str(device), overrides={**overrides, "compile": mode})
                 for s in range(seeds)]
        trainer = PreSa.learner(specs, [inputs] * seeds)
        config = trainer.config
        t0 = time.perf_counter()
        trainer._freeze_reference()
        reference_seconds[seeds] = time.perf_counter() - t0
        steppers[f"presa{seeds}-{mode}"] = synced(trainer._joint_step)
    assert config is not None
    H = feedback.segment_length
    pairs_per_step = config.batch_size * 3 * H  # 2H per preference pair + H per safety segment
    out_dim = dataset.act_dim * (2 if config.actor == "gaussian" else 1)
    presa_flops = 3 * dense_flops([dataset.obs_dim, *config.hidden_sizes, out_dim]) * pairs_per_step

    from osrl.algorithms import BC, BCTrainer

    obs_t = torch.as_tensor(dataset.observations, device=device)
    act_t = torch.as_tensor(dataset.actions, device=device)
    bc_flops_per_sample = 3 * dense_flops([dataset.obs_dim, *config.hidden_sizes, dataset.act_dim])
    bc_batches = (pairs_per_step, 512)
    for batch in bc_batches:
        torch.manual_seed(0)
        model = BC(dataset.obs_dim, dataset.act_dim, 1.0, list(config.hidden_sizes), task.episode_length, str(device))
        trainer_bc = BCTrainer(model, env=None, actor_lr=config.lr, device=str(device))
        gen = np.random.default_rng(0)

        def bc_step(batch: int = batch, trainer_bc: Any = trainer_bc, gen: Any = gen) -> None:
            idx = torch.as_tensor(gen.integers(len(obs_t), size=batch), device=device)
            trainer_bc.train_one_step(obs_t[idx], act_t[idx])

        steppers[f"bc{batch}"] = synced(bc_step)

    timing = measure(steppers, args.seconds, args.rounds)
    presa_rows = []
    for mode, seeds in variants:
        t = timing[f"presa{seeds}-{mode}"]
        presa_rows.append({"seeds": seeds, "compile": mode, "steps_per_second": t["rate"], "seed_steps_per_second": t["rate"] * seeds,
                           "range_steps_per_second": [t["min"], t["max"]], "measured_steps": t["steps"],
                           "reference_seconds": reference_seconds[seeds]})
    single = presa_rows[0]["seed_steps_per_second"] / presa_rows[0]["seeds"]  # the first mode, first seed count
    for row in presa_rows:
        row["speedup_vs_sequential"] = row["seed_steps_per_second"] / single
        row["gflops"] = row["seed_steps_per_second"] * presa_flops / 1e9
    results["presa"] = presa_rows
    results["state_action_pairs_per_seed_step"] = pairs_per_step
    bc_rows = []
    for batch in bc_batches:
        t = timing[f"bc{batch}"]
        bc_rows.append({"batch": batch, "steps_per_second": t["rate"], "range_steps_per_second": [t["min"], t["max"]],
                        "measured_steps": t["steps"], "gflops": t["rate"] * batch * bc_flops_per_sample / 1e9})
    results["osrl_bc"] = bc_rows
    same = bc_rows[0]["steps_per_second"]
    results["presa_step_cost_vs_bc_same_pairs"] = same / (presa_rows[0]["steps_per_second"] * presa_rows[0]["seeds"])
    results["presa_gflops_vs_bc"] = presa_rows[0]["gflops"] / bc_rows[0]["gflops"]
    # an upper bound: every step priced as a joint step (the 30% BC warm-up steps do a third of the work)
    best_rate = max(row["seed_steps_per_second"] for row in presa_rows)
    results["paper_grid_hours_upper_bound"] = GRID_CELLS * GRID_STEPS / best_rate / 3600

    print(f"data: {task.name} ({source}, {dataset.num_transitions} transitions), H={H}, threads={args.threads}, device={device}, allocator {allocator}")
    print(f"PreSa step = {config.batch_size} pairs + {config.batch_size} safety segments = {pairs_per_step} state-action pairs per seed")
    for row in presa_rows:
        tag = "" if row["compile"] == "off" else f" compile={row['compile']}"
        print(f"  PreSa {row['seeds']:>2} seed(s){tag}: {row['steps_per_second']:7.2f} steps/s, {row['seed_steps_per_second']:7.2f} seed-steps/s, "
              f"x{row['speedup_vs_sequential']:.2f} vs one after another, {row['gflops']:.1f} GFLOP/s "
              f"(reference log-likelihoods once: {row['reference_seconds']:.2f} s)")
    for row in bc_rows:
        print(f"  OSRL BC batch {row['batch']:>5}: {row['steps_per_second']:7.2f} steps/s, {row['gflops']:.1f} GFLOP/s")
    print(f"PreSa GFLOP/s / OSRL BC GFLOP/s (same state-action pairs per step): {results['presa_gflops_vs_bc']:.2f}")
    best = max(presa_rows, key=lambda r: r["seed_steps_per_second"])
    print(f"paper grid (29 tasks x 3 thresholds x 3 seeds x {GRID_STEPS:,} steps) at the best rate here "
          f"({best['seed_steps_per_second']:.0f} seed-steps/s, {best['seeds']} seeds, compile={best['compile']}): "
          f"at most {results['paper_grid_hours_upper_bound']:.1f} hours of PreSa training, if every task cost what this one does")
    print(f"one PreSa step costs {results['presa_step_cost_vs_bc_same_pairs']:.2f} OSRL BC steps on the same number of state-action pairs")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
