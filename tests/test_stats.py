"""bench.stats against rliable's own numbers on a fixed score matrix, and the safety statistics.

rliable 1.2.0 is a test dependency (requirements/nodeps.txt): its metrics are plain numpy/scipy; its
bootstrap (rliable.library) subclasses arch's IIDBootstrap. rliable passes ``random_state=`` to arch,
which arch 8 (the first arch that imports with pandas 3) calls ``seed=``: the fixture below maps the
keyword and nothing else. rliable draws its resampling indices from numpy's GLOBAL generator
(np.random.choice), so each comparison seeds it first.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench import stats

#: 8 runs x 5 tasks whose means differ a lot: a bootstrap that did not resample within each task
#: (stratification) would give much wider intervals than rliable's.
RNG = np.random.default_rng(20260)
SCORES = RNG.normal(size=(8, 5)) * 0.3 + np.arange(5)[None, :]
OTHER = RNG.normal(size=(6, 5)) * 0.3 + np.arange(5)[None, :] - 0.2
REPS = 10_000


@pytest.fixture
def rliable(monkeypatch):  # type: ignore[no-untyped-def]
    import arch.bootstrap.base as base
    from rliable import library, metrics

    original = base.IIDBootstrap.__init__  # IndependentSamplesBootstrap passes through it too

    def init(self, *args, random_state=None, seed=None, **kwargs):  # type: ignore[no-untyped-def]
        original(self, *args, seed=seed if seed is not None else random_state, **kwargs)

    monkeypatch.setattr(base.IIDBootstrap, "__init__", init)
    return library, metrics


def _close(ours: stats.Interval, low: float, high: float, width_share: float = 0.06) -> None:
    """Two Monte-Carlo percentile intervals of the same bootstrap agree to a few % of their width."""
    width = high - low
    assert width > 0
    assert abs(ours.low - low) < width_share * width, (ours, low, high)
    assert abs(ours.high - high) < width_share * width, (ours, low, high)


def test_point_estimates_equal_rliable(rliable):
    _, metrics = rliable
    assert stats.iqm(SCORES) == pytest.approx(metrics.aggregate_iqm(SCORES), abs=1e-12)
    assert stats.mean(SCORES) == pytest.approx(metrics.aggregate_mean(SCORES), abs=1e-12)
    assert stats.probability_of_improvement(SCORES, OTHER) == pytest.approx(
        metrics.probability_of_improvement(SCORES, OTHER), abs=1e-12)


def test_stratified_bootstrap_iqm_ci_matches_rliable(rliable):
    library, metrics = rliable
    np.random.seed(0)
    _, cis = library.get_interval_estimates({"a": SCORES}, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=REPS)
    ours = stats.stratified_bootstrap_ci(SCORES, "iqm", reps=REPS, seed=0)
    _close(ours, cis["a"][0, 0], cis["a"][1, 0])
    # a plain (unstratified) bootstrap of the pooled runs is several times wider: the test can tell
    pooled = SCORES.ravel()[np.random.default_rng(1).integers(0, SCORES.size, size=(REPS, SCORES.size))]
    plain = np.percentile(stats.trimmed_mean(pooled, axis=1), [2.5, 97.5])
    assert plain[1] - plain[0] > 3 * (ours.high - ours.low)


def test_probability_of_improvement_ci_matches_rliable(rliable):
    library, metrics = rliable
    np.random.seed(0)
    _, cis = library.get_interval_estimates(
        {"x,y": (SCORES, OTHER)}, lambda x, y: np.array([metrics.probability_of_improvement(x, y)]), reps=4_000)
    ours = stats.probability_of_improvement_ci(SCORES, OTHER, reps=4_000, seed=0)
    _close(ours, cis["x,y"][0, 0], cis["x,y"][1, 0], width_share=0.1)


def test_performance_profile_matches_rliable(rliable):
    library, _ = rliable
    taus = np.linspace(-1.0, 5.0, 13)
    np.random.seed(0)
    profiles, cis = library.create_performance_profile({"a": SCORES}, taus, reps=4_000)
    point, low, high = stats.performance_profile_ci(SCORES, taus, reps=4_000, seed=0)
    np.testing.assert_allclose(point, profiles["a"], atol=1e-12)
    # the fractions live on a grid of 1 / 40 runs: two Monte-Carlo percentiles agree to one grid step
    step = 1.0 / SCORES.size + 1e-9
    assert np.all(np.abs(low - cis["a"][0]) <= step) and np.all(np.abs(high - cis["a"][1]) <= step)
    assert np.any(cis["a"][1] - cis["a"][0] > 2 * step)  # the bands are not trivially zero-width


def test_safe_share_and_reward_among_safe_by_hand():
    costs = [np.array([0.5, 1.0, 2.0, 3.0]), np.array([0.2, 4.0])]
    rewards = [np.array([0.1, 0.3, 0.9, 0.9]), np.array([0.5, 1.0])]
    share = stats.safe_share_ci(costs, 1.0, reps=500)
    assert share.point == pytest.approx(3 / 6)  # cost exactly 1 is safe
    assert 0.0 <= share.low <= share.point <= share.high <= 1.0
    safe_reward = stats.reward_among_safe_ci(rewards, costs, 1.0, reps=500)
    assert safe_reward.point == pytest.approx((0.1 + 0.3 + 0.5) / 3)
    # the unsafe runs' rewards (0.9, 0.9, 1.0) never enter: every replicate stays within the safe ones'
    assert 0.1 <= safe_reward.low <= safe_reward.high <= 0.5
    none_safe = stats.reward_among_safe_ci([np.array([1.0])], [np.array([5.0])], 1.0, reps=50)
    assert np.isnan(none_safe.point) and np.isnan(none_safe.low)
    with pytest.raises(ValueError):
        stats.stratified_bootstrap_multi([[np.ones(2)], [np.ones(3)]], lambda a, b: a.mean(axis=1))
