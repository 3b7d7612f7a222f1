"""Budgets: `smoke` (about a minute, CI), `quick` (10,000 steps: measured on one CPU thread, PreSa 827 s and
BC-Safe 36 s on BallCircle; `presa-bench run` prints an estimate from configs/speeds.yaml before a cell
starts), `paper` (the paper's budgets)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import BadInput

#: Slurm time limit per job (minutes) when a sweep or a data fetch sets none (`slurm: {timeout_min: M}`,
#: --slurm-timeout-min); submitit's own default, 5 minutes, would kill every real cell.
SLURM_TIMEOUT_MIN = 720


@dataclass(frozen=True)
class Profile:
    name: str
    #: Gradient steps of the main training phase (the paper/precursor: 100k).
    train_steps: int
    #: Fraction of train_steps used for behaviour-cloning warm-up where a method has one (TraC: 30%).
    warmup_fraction: float
    #: Deterministic evaluation episodes at the end (the field: 20).
    eval_episodes: int
    #: Evaluate every this many steps during training (0 = only at the end).
    eval_every: int
    #: Episodes in the online evaluations during training.
    eval_episodes_during: int
    #: Log scalars every this many steps.
    log_every: int
    #: Checkpoint every this many steps.
    checkpoint_every: int
    #: Preference pairs / safety labels of the default synthetic feedback (the paper: about 10,000).
    num_queries: int


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", 300, 0.3, 4, 0, 2, 50, 100, 2_000),
    "quick": Profile("quick", 10_000, 0.3, 10, 2_500, 5, 250, 1_000, 10_000),
    "paper": Profile("paper", 100_000, 0.3, 20, 1_000, 20, 1_000, 5_000, 10_000),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name.lower()]
    except KeyError:
        raise BadInput(f"unknown profile '{name}': choose one of {', '.join(PROFILES)}") from None
