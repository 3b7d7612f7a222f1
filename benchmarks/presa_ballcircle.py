"""Experiment: PreSa on BallCircle at thresholds 10/20/40 x seeds, next to BC-All and BC-Safe.

Not a test. All PreSa cells (every threshold x seed) go through bench.training.train_many
(one batched ensemble with --ensemble-size 9); each cell gets its own synthetic feedback from bench.feedback's scripted teacher
(threshold-dependent safety labels, seed-dependent queries). BC-All and BC-Safe are the baselines
engineer's registered algorithms (baselines.bc, OSRL's BC) on the same data, same evaluation.
Every policy is evaluated with bench.evaluation.evaluate_policy (real simulator, 20 deterministic
episodes, seed = cell seed, DSRL normalisation). Prints S, constraint gap and lambda over training.

Example (the numbers in docs/presa.md):
  .venv/bin/python benchmarks/presa_ballcircle.py --steps 2000 --bc-steps 2000 --ensemble-size 9 \
      --set batch_size=32 --set warmup_lr=1e-3 --out /tmp/presa_bc.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

import numpy as np

import bench  # noqa: F401  (compat patches before dsrl/osrl)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="BallCircle")
    parser.add_argument("--dataset", default=None, help="DSRL file or directory (default: the standard lookup)")
    parser.add_argument("--thresholds", default="10,20,40")
    parser.add_argument("--seeds", default="0,10,20")
    parser.add_argument("--steps", type=int, default=3000, help="PreSa gradient steps in total (warm-up included)")
    parser.add_argument("--warmup-fraction", type=float, default=0.3)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--log-every", type=int, default=250)
    parser.add_argument("--bc-steps", type=int, default=3000, help="gradient steps of BC-All / BC-Safe (0 = skip them)")
    parser.add_argument("--algo", default="presa", choices=("presa", "cpl"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="PreSa config override key=value")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ensemble-size", type=int, default=None,
                        help="cells per batched ensemble (default: all on a GPU, 1 on CPU; docs/presa.md used 9)")
    parser.add_argument("--live", action="store_true", help="print every logged interval while training")
    parser.add_argument("--out", default="", help="write all numbers and curves to this JSON file")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from bench import training
    from bench.algorithms import get_algorithm
    from bench.data import find_dataset, load_dataset
    from bench.evaluation import evaluate_policy
    from bench.feedback import FeedbackSettings, make_feedback
    from bench.interfaces import TrainInputs, TrainSpec
    from bench.profiles import get_profile
    from bench.runner import parse_overrides
    from bench.tasks import get_task

    task = get_task(args.task)
    path = find_dataset(task, args.dataset)
    dataset = load_dataset(path, task)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = dict(parse_overrides(args.overrides))
    profile = dataclasses.replace(
        get_profile("paper"), train_steps=args.steps, warmup_fraction=args.warmup_fraction, log_every=args.log_every,
        eval_every=0, checkpoint_every=10**9,
    )
    cells = [(k, s) for k in thresholds for s in seeds]
    specs, inputs = [], []
    for k, s in cells:
        live = None
        if args.live:
            def live(step: int, metrics: dict[str, float], k: float = k, s: int = s) -> None:
                keys = ("safety_score", "safety_target", "heldout_safety_score", "lambda", "pref_accuracy", "bc_loss", "steps_per_second")
                print(f"  [k={k:g} seed={s}] step {step}: " + " ".join(f"{key}={metrics[key]:.3f}" for key in keys if key in metrics), flush=True)
        specs.append(TrainSpec(task, k, s, profile, overrides=overrides, log=live))
        feedback = make_feedback(dataset, k, s, FeedbackSettings(num_queries=args.queries)).view()
        inputs.append(TrainInputs(dataset.learner_view(), feedback))
    algo = get_algorithm(args.algo)
    config = algo.config_for(specs[0])
    print(f"{task.name}: {path} ({dataset.num_episodes} episodes), {len(cells)} cells, H={inputs[0].feedback.segment_length}")
    print(f"{args.algo} config: {json.dumps(config.to_dict())}")
    started = time.perf_counter()
    outputs = training.train_many(algo, specs, inputs, ensemble_size=args.ensemble_size)
    train_seconds = time.perf_counter() - started
    rows: list[dict[str, Any]] = []
    for (k, s), fb, out in zip(cells, inputs, outputs):
        summary = evaluate_policy(out.policy, task, k, episodes=args.eval_episodes, seed=s, num_envs=10).summary()
        rows.append({"algo": args.algo, "threshold": k, "seed": s, **summary, "info": out.info, "curve": out.curve,
                     "safe_label_fraction": float(np.mean(fb.feedback.safety_label))})

    size = outputs[0].info["ensemble_size"]
    print(f"\n{args.algo}: trained {len(cells)} cells x {args.steps} steps in {train_seconds:.0f} s (ensembles of {size})")
    print("training curve, mean over seeds (S = mean safety value, gap = target - S in the constraint's form):")
    for k in thresholds:
        group = [r for r in rows if r["threshold"] == k]
        for i, row in enumerate(group[0]["curve"]):
            if "pref_loss" not in row:
                continue
            mean = {key: float(np.mean([g["curve"][i].get(key, np.nan) for g in group]))
                    for key in ("pref_accuracy", "safety_score", "safety_target", "constraint_gap", "heldout_safety_score",
                                "heldout_constraint_gap", "heldout_safety_accuracy", "heldout_pref_accuracy", "lambda", "z0")}
            print(f"  k={k:g} step {int(row['step']):>6}: " + " ".join(f"{key}={v:.3f}" for key, v in mean.items() if np.isfinite(v)))

    baseline_rows: list[dict[str, Any]] = []
    if args.bc_steps > 0:
        bc_profile = dataclasses.replace(profile, train_steps=args.bc_steps, warmup_fraction=0.0)
        for name in ("bc-all", "bc-safe"):
            cls = get_algorithm(name)
            for k, s in cells:
                torch.manual_seed(s)
                np.random.seed(s)
                spec = TrainSpec(task, k, s, bc_profile)
                out = training.train(cls, spec, TrainInputs(dataset.learner_view(), None, dataset))
                summary = evaluate_policy(out.policy, task, k, episodes=args.eval_episodes, seed=s, num_envs=10).summary()
                baseline_rows.append({"algo": name, "threshold": k, "seed": s, **summary})

    print("\nnormalized reward / cost (mean over seeds; safe iff cost <= 1):")
    print(f"  {'algo':<8} " + " ".join(f"{'k=' + format(k, 'g'):>16}" for k in thresholds) + f" {'average':>16}")
    for name in [args.algo] + (["bc-all", "bc-safe"] if baseline_rows else []):
        group = [r for r in rows + baseline_rows if r["algo"] == name]
        cols = []
        for k in thresholds + [None]:
            sel = [r for r in group if k is None or r["threshold"] == k]
            rew = np.mean([r["normalized_reward"] for r in sel])
            cost = np.mean([r["normalized_cost"] for r in sel])
            cols.append(f"{rew:6.3f} / {cost:5.2f}{'*' if cost > 1 else ' '}")
        print(f"  {name:<8} " + " ".join(f"{c:>16}" for c in cols))
    print("  (* = unsafe)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "config": config.to_dict(), "train_seconds": train_seconds,
                       "presa": rows, "baselines": baseline_rows}, f, indent=1, default=float)


if __name__ == "__main__":
    main()
