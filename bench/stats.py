"""Aggregate statistics over a runs x tasks score matrix, following rliable's definitions.

rliable 1.2.0's bootstrap (rliable.library) needs ``arch``, which does not import with the pinned
pandas 3.0.x (docs/install.md), and its ragged-task support is limited (a dict of (runs, tasks)
arrays: every task the same number of runs); the benchmark also needs bootstraps of statistics of
several aligned arrays (reward among safe runs). So the functions presa-bench needs are written
here in numpy with rliable's (Agarwal et al., NeurIPS 2021) definitions, and tests/test_stats.py
compares them with rliable's own numbers on a fixed score matrix where rliable can be imported:

- IQM = interquartile mean = 25%-trimmed mean of ALL scores pooled over runs and tasks
  (rliable.metrics.aggregate_iqm = scipy.stats.trim_mean(scores, 0.25, axis=None)).
- Stratified bootstrap: each replicate resamples runs with replacement independently WITHIN each
  task (rliable.library.StratifiedBootstrap); the CI is the percentile interval of the replicates
  (rliable's default method), 95% by default.
- Probability of improvement P(X > Y) = mean over tasks of the Mann-Whitney U statistic / (n m),
  i.e. the fraction of (run of X, run of Y) pairs where X scores higher, ties counting 1/2
  (rliable.metrics.probability_of_improvement); its CI resamples X's and Y's runs independently
  within each task (rliable's StratifiedIndependentBootstrap).

- Paired probability of improvement (`paired_probability_of_improvement`): the reports compare
  runs that share task, threshold and seed, so X's run is compared with Y's MATCHED run only.

- Performance profile (rliable.metrics.run_score_distribution / library.create_performance_profile):
  the fraction of runs whose score exceeds tau, for each tau; CI by the stratified bootstrap.

Seeds: every function draws from its own ``numpy.random.default_rng(seed)``: the same call gives
the same interval, and nothing touches numpy's global generator.

Scores may be a (runs, tasks) array or a list of per-task 1-D arrays (tasks may have different
numbers of runs, e.g. when some cells failed). With unequal runs, pooled statistics weigh every
run the same (as rliable pools a (runs, tasks) matrix).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

#: rliable's default is 50,000 replicates (about 27 s on a 10x5 matrix here); reports default lower.
DEFAULT_REPS = 2_000
#: Fewest seeds per (task, threshold) for which a report gives an interval, a probability of
#: improvement or a best method: a bootstrap of one or two seeds only restates them.
MIN_SEEDS = 3
TRIM = 0.25

Scores = np.ndarray | Sequence[np.ndarray]


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval."""

    point: float
    low: float
    high: float


def _per_task(scores: Scores) -> list[np.ndarray]:
    if isinstance(scores, np.ndarray):
        if scores.ndim != 2:
            raise ValueError("a score matrix must be 2-D: (runs, tasks)")
        columns = [scores[:, t] for t in range(scores.shape[1])]
    else:
        columns = [np.asarray(s, float).ravel() for s in scores]
    if not columns or any(len(c) == 0 for c in columns):
        raise ValueError("every task needs at least one run")
    return [np.asarray(c, float) for c in columns]


def trimmed_mean(values: np.ndarray, proportion: float = TRIM, axis: int = -1) -> np.ndarray:
    """scipy.stats.trim_mean: sort, drop int(proportion * n) values at each end, average the rest."""
    values = np.sort(np.asarray(values, float), axis=axis)
    n = values.shape[axis]
    cut = int(proportion * n)
    kept = np.take(values, np.arange(cut, n - cut), axis=axis)
    return kept.mean(axis=axis)


def iqm(scores: Scores) -> float:
    """Interquartile mean of all scores pooled over runs and tasks."""
    return float(trimmed_mean(np.concatenate(_per_task(scores))))


def mean(scores: Scores) -> float:
    return float(np.concatenate(_per_task(scores)).mean())


def _pooled_replicates(columns: list[np.ndarray], reps: int, rng: np.random.Generator) -> np.ndarray:
    """(reps, total runs) matrix: each replicate resamples every task's runs within that task."""
    parts = []
    for column in columns:
        idx = rng.integers(0, len(column), size=(reps, len(column)))
        parts.append(column[idx])
    return np.concatenate(parts, axis=1)


def _percentile_interval(point: float, replicates: np.ndarray, confidence: float) -> Interval:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(replicates, [100 * alpha, 100 * (1 - alpha)])
    return Interval(float(point), float(low), float(high))


def stratified_bootstrap_ci(
    scores: Scores,
    statistic: str = "iqm",
    reps: int = DEFAULT_REPS,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Point estimate and percentile CI of ``statistic`` ("iqm" or "mean") under the stratified bootstrap."""
    columns = _per_task(scores)
    pooled: Callable[[np.ndarray], np.ndarray]
    if statistic == "iqm":
        pooled = lambda m: trimmed_mean(m, TRIM, axis=1)  # noqa: E731
        point = iqm(columns)
    elif statistic == "mean":
        pooled = lambda m: m.mean(axis=1)  # noqa: E731
        point = mean(columns)
    else:
        raise ValueError(f"unknown statistic '{statistic}': use iqm or mean")
    rng = np.random.default_rng(seed)
    replicates = []
    chunk = max(1, min(reps, 5_000_000 // max(1, sum(len(c) for c in columns))))
    for start in range(0, reps, chunk):
        replicates.append(pooled(_pooled_replicates(columns, min(chunk, reps - start), rng)))
    return _percentile_interval(point, np.concatenate(replicates), confidence)


def _pairwise_greater(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fraction of pairs with x > y (ties 1/2) over the last two broadcast axes: U / (n m)."""
    diff = x[..., :, None] - y[..., None, :]
    return ((diff > 0) + 0.5 * (diff == 0)).mean(axis=(-2, -1))


def probability_of_improvement(x: Scores, y: Scores) -> float:
    """P(X > Y): per task the Mann-Whitney U / (n m) of X's runs against Y's, averaged over tasks."""
    xs, ys = _per_task(x), _per_task(y)
    if len(xs) != len(ys):
        raise ValueError(f"X has {len(xs)} tasks but Y has {len(ys)}")
    return float(np.mean([_pairwise_greater(a, b) for a, b in zip(xs, ys)]))


def probability_of_improvement_ci(
    x: Scores, y: Scores, reps: int = DEFAULT_REPS, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """P(X > Y) with a CI from resampling X's and Y's runs independently within each task."""
    xs, ys = _per_task(x), _per_task(y)
    point = probability_of_improvement(xs, ys)
    rng = np.random.default_rng(seed)
    per_task = []
    for a, b in zip(xs, ys):
        ra = a[rng.integers(0, len(a), size=(reps, len(a)))]
        rb = b[rng.integers(0, len(b), size=(reps, len(b)))]
        per_task.append(_pairwise_greater(ra, rb))
    return _percentile_interval(point, np.mean(per_task, axis=0), confidence)


def _matched(x: Scores, y: Scores) -> tuple[list[np.ndarray], list[np.ndarray]]:
    xs, ys = _per_task(x), _per_task(y)
    if len(xs) != len(ys) or any(len(a) != len(b) for a, b in zip(xs, ys)):
        raise ValueError("paired scores need the same strata and, in each, the same (matched) runs")
    return xs, ys


def _wins(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 where a > b, 1/2 on a tie, 0 otherwise."""
    return (a > b) + 0.5 * (a == b)


def paired_probability_of_improvement(x: Scores, y: Scores) -> float:
    """P(X > Y) over MATCHED runs: run i of X is compared with run i of Y only (the same task,
    threshold and seed, i.e. the same data, feedback and evaluation seeds), ties 1/2; the share of
    wins per stratum, averaged over strata. rliable's unpaired version compares every run of X with
    every run of Y, which within a stratum of several thresholds compares a method at one threshold
    with the other at another."""
    xs, ys = _matched(x, y)
    return float(np.mean([_wins(a, b).mean() for a, b in zip(xs, ys)]))


def paired_probability_of_improvement_ci(
    x: Scores, y: Scores, reps: int = DEFAULT_REPS, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """`paired_probability_of_improvement` with a CI from resampling matched pairs within each stratum."""
    xs, ys = _matched(x, y)
    point = paired_probability_of_improvement(xs, ys)
    rng = np.random.default_rng(seed)
    per_stratum = []
    for a, b in zip(xs, ys):
        wins = _wins(a, b)
        per_stratum.append(wins[rng.integers(0, len(wins), size=(reps, len(wins)))].mean(axis=1))
    return _percentile_interval(point, np.mean(per_stratum, axis=0), confidence)


def stratified_bootstrap_multi(
    arrays: Sequence[Scores],
    statistic: Callable[..., np.ndarray],
    reps: int = DEFAULT_REPS,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Stratified bootstrap of a statistic of several ALIGNED score sets (same runs, same tasks).

    ``statistic(*pooled)`` gets one (reps, total runs) matrix per array -- each replicate draws the
    same runs (within each task) for every array -- and returns one value per replicate; with
    (1, total runs) matrices of the original runs it gives the point estimate. NaN replicates (e.g.
    a ratio with no run in its denominator) are left out of the interval.
    """
    cols = [_per_task(a) for a in arrays]
    if any(len(c) != len(cols[0]) or any(len(x) != len(y) for x, y in zip(c, cols[0])) for c in cols):
        raise ValueError("the score sets of a joint bootstrap must have the same tasks and runs")
    point = float(np.asarray(statistic(*[np.concatenate(c)[None, :] for c in cols])).ravel()[0])
    rng = np.random.default_rng(seed)
    total = sum(len(c) for c in cols[0])
    chunk = max(1, min(reps, 5_000_000 // max(1, total * len(cols))))
    out = []
    for start in range(0, reps, chunk):
        n = min(chunk, reps - start)
        idx = [rng.integers(0, len(c), size=(n, len(c))) for c in cols[0]]
        pooled = [np.concatenate([col[i] for col, i in zip(c, idx)], axis=1) for c in cols]
        out.append(np.asarray(statistic(*pooled), float))
    replicates = np.concatenate(out)
    replicates = replicates[np.isfinite(replicates)]
    if replicates.size == 0:
        return Interval(point, float("nan"), float("nan"))
    return _percentile_interval(point, replicates, confidence)


def safe_share_ci(costs: Scores, limit: float = 1.0, reps: int = DEFAULT_REPS, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Share of runs whose (normalized) cost is <= limit, with its stratified-bootstrap CI."""
    safe = [(c <= limit).astype(float) for c in _per_task(costs)]
    return stratified_bootstrap_ci(safe, "mean", reps=reps, confidence=confidence, seed=seed)


def _ratio_of_sums(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    den = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (values * weights).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def reward_among_safe_ci(
    rewards: Scores, costs: Scores, limit: float = 1.0, reps: int = DEFAULT_REPS, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """Mean reward of the runs whose cost is <= limit (NaN when no run is safe), with a joint
    stratified-bootstrap CI (each replicate redraws runs, then averages the safe ones it drew)."""
    safe = [(c <= limit).astype(float) for c in _per_task(costs)]
    return stratified_bootstrap_multi([rewards, safe], _ratio_of_sums, reps=reps, confidence=confidence, seed=seed)


def performance_profile(scores: Scores, taus: np.ndarray) -> np.ndarray:
    """Fraction of all runs (pooled over tasks) whose score is > tau, for each tau (rliable's
    run_score_distribution)."""
    pooled = np.concatenate(_per_task(scores))
    return (pooled[None, :] > np.asarray(taus, float)[:, None]).mean(axis=1)


def performance_profile_ci(
    scores: Scores, taus: np.ndarray, reps: int = DEFAULT_REPS, confidence: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(profile, low, high) at each tau: rliable's create_performance_profile with the stratified bootstrap."""
    columns = _per_task(scores)
    taus = np.asarray(taus, float)
    point = performance_profile(columns, taus)
    rng = np.random.default_rng(seed)
    pooled = _pooled_replicates(columns, reps, rng)  # (reps, runs)
    alpha = (1.0 - confidence) / 2.0
    lows, highs = [], []
    for tau in taus:
        fractions = (pooled > tau).mean(axis=1)
        low, high = np.percentile(fractions, [100 * alpha, 100 * (1 - alpha)])
        lows.append(low)
        highs.append(high)
    return point, np.asarray(lows), np.asarray(highs)
