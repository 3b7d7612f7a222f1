"""Experiment: safe-rlhf's stage 1 alone (reward model, cost model and its learned calibration) on a
dataset, with the scripted teacher's feedback of a cell. Not a test.

Prints one JSON line: the stage-1 info a cell records (held-out accuracies on FeedbackView.split's
held-out part, learned segment budget b and slope k, stage-2 cost limit b T / H) and how the derived
limit separates the dataset's episodes compared with the true cost under kappa (share under the
limit, per-episode agreement, Spearman correlation of relabelled and true episode costs). The true
costs are read here, for the diagnostic only; the learner never sees them.

Example (the numbers in docs/baselines.md):
  nice -n 10 .venv/bin/python benchmarks/safe_rlhf_stage1.py --task BallCircle --threshold 20 --seed 0
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from baselines.safe_rlhf import SafeRLHF
from bench.data import load_dataset
from bench.feedback import feedback_for_run
from bench.interfaces import TrainInputs, TrainSpec
from bench.profiles import get_profile
from bench.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="BallCircle")
    parser.add_argument("--threshold", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default="quick", help="num_queries and model_steps (train_steps / 5) come from it")
    parser.add_argument("--dataset", type=Path, default=None, help="default: the shipped 600-episode dataset")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    path = args.dataset or Path(__file__).resolve().parents[1] / "bench/assets/datasets" / task.dataset_filename(600)
    ds = load_dataset(path, task)
    profile = get_profile(args.profile)
    with tempfile.TemporaryDirectory() as cache:
        fb = feedback_for_run(task, ds, args.threshold, args.seed, num_queries=profile.num_queries, cache_dir=Path(cache)).view()
    spec = TrainSpec(task=task, threshold=args.threshold, seed=args.seed, profile=profile)
    start = time.time()
    stage1 = SafeRLHF().stage_one(spec, TrainInputs(data=ds.learner_view(), feedback=fb))
    _, costs = SafeRLHF._relabel(stage1.reward_model, stage1.cost_model, ds.learner_view(), "cpu")
    relabelled = np.add.reduceat(costs.astype(np.float64), ds.episodes.starts)
    limit = stage1.episode_cost_limit(task.episode_length)
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    print(json.dumps({
        "task": args.task, "threshold": args.threshold, "seed": args.seed, "dataset": str(path),
        "stage1_s": round(time.time() - start, 1), "segment_length": int(fb.segment_length),
        "safe_label_share": float(fb.safety_label.mean()), **stage1.info,
        "relabelled_safe_episode_share": float(np.mean(relabelled <= limit)),
        "true_safe_episode_share": float(np.mean(ds.episode_costs <= args.threshold)),
        "episode_safety_agreement": float(np.mean((relabelled <= limit) == (ds.episode_costs <= args.threshold))),
        "spearman_episode_cost": float(np.corrcoef(rank(relabelled), rank(ds.episode_costs))[0, 1]),
    }))


if __name__ == "__main__":
    main()
