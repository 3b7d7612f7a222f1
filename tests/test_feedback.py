"""Feedback: the scripted teacher against hand-computed labels, segment bounds, determinism, the
noise models' effect on agreement with the truth, the learner view, storage, label import and its
validation (one FeedbackError per bad-file case, naming the row), the run cache and the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import bench  # noqa: F401  (compat patches first)
from bench import feedback as fb
from bench.cli import app, main
from bench.data import Dataset, from_arrays
from bench.errors import BadInput, FeedbackError
from bench.feedback import FeedbackSet, FeedbackSettings, FeedbackView, feedback_for_run, import_labels, make_feedback
from bench.tasks import get_task

BALLRUN = get_task("BallRun")  # T = 100: kappa 20 and H 20 give the budget 4.0 of the method notes
BALLCIRCLE = get_task("BallCircle")  # T = 200


def make_dataset(lengths, rewards=None, costs=None, task=BALLRUN, seed=0) -> Dataset:
    """Episodes of the given lengths (back to back, each ending in a timeout) with given or random
    per-step rewards and costs; observations/actions are random (the teacher never reads them)."""
    rng = np.random.default_rng(seed)
    n = int(np.sum(lengths))
    ends = np.cumsum(lengths) - 1
    timeouts = np.zeros(n, bool)
    timeouts[ends] = True
    arrays = {
        "observations": rng.standard_normal((n, 3)).astype(np.float32),
        "next_observations": rng.standard_normal((n, 3)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "rewards": np.asarray(rewards if rewards is not None else rng.uniform(0, 1, n), np.float32),
        "costs": np.asarray(costs if costs is not None else (rng.random(n) < 0.1), np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": timeouts,
    }
    return from_arrays(arrays, task=task)


@pytest.fixture(scope="module")
def large() -> Dataset:
    """BallCircle-sized: 886 episodes of 200 steps (177,200 transitions), rewards uniform in [0, 1]."""
    return make_dataset([200] * 886, task=BALLCIRCLE, seed=1)


@pytest.fixture(scope="module")
def mixed() -> Dataset:
    """Episodes of uneven lengths, some shorter than H = 20, integer rewards (so ties happen)."""
    rng = np.random.default_rng(2)
    lengths = [100, 7, 45, 19, 20, 21, 100, 3, 64, 100] * 4
    n = sum(lengths)
    return make_dataset(lengths, rewards=rng.integers(0, 2, n), costs=rng.random(n) < 0.2, seed=2)


def segment_sum(dataset: Dataset, values: np.ndarray, episode: int, start: int, h: int) -> float:
    """The reference: a plain Python sum over one segment's transitions."""
    first = int(dataset.episodes.starts[episode]) + int(start)
    return float(sum(float(v) for v in values[first:first + h]))


# ---- scripted teacher: labels against hand-computed cases -------------------------------------


def test_pure_label_functions_hand_cases():
    labels = fb.preference_labels(np.array([1.0, 2.0, 3.0, -1.0]), np.array([2.0, 2.0, 1.0, -0.5]))
    assert labels.tolist() == [1.0, 0.5, 0.0, 1.0]
    assert fb.safety_budget(20.0, 20, 100) == 4.0 and fb.safety_budget(10.0, 40, 200) == 2.0
    assert fb.safety_labels(np.array([3.0, 4.0, np.nextafter(4.0, 5.0), 5.0]), 4.0).tolist() == [1.0, 1.0, 0.0, 0.0]


def test_teacher_labels_match_plain_sums_and_ties_get_half(mixed):
    settings = FeedbackSettings(num_queries=400, num_safety_labels=300, segment_length=20)
    feedback = make_feedback(mixed, threshold=20.0, seed=3, settings=settings)
    h = feedback.segment_length
    ties = 0
    for i in range(feedback.num_pairs):
        r0 = segment_sum(mixed, mixed.rewards, feedback.pair_episode[i, 0], feedback.pair_start[i, 0], h)
        r1 = segment_sum(mixed, mixed.rewards, feedback.pair_episode[i, 1], feedback.pair_start[i, 1], h)
        expected = 1.0 if r1 > r0 else 0.0 if r1 < r0 else 0.5
        ties += r0 == r1
        assert feedback.pair_label[i] == expected, (i, r0, r1)
        assert feedback.pair_truth[i].tolist() == [r0, r1]
    assert ties > 10, "integer rewards must produce ties: the 0.5 case was not exercised"
    budget = 20.0 * 20 / 100
    for j in range(feedback.num_safety_labels):
        c = segment_sum(mixed, mixed.costs, feedback.safety_episode[j], feedback.safety_start[j], h)
        assert feedback.safety_label[j] == (1.0 if c <= budget else 0.0), (j, c)
    assert {0.0, 1.0} <= set(feedback.safety_label.tolist())


def test_safety_boundary_kappa_h_over_t_is_safe():
    # Three 20-step episodes (= one segment each at H = 20) with summed costs 4, 5 and 3;
    # BallRun T = 100, kappa = 20: budget 20 * 20 / 100 = 4.0, and "<=" makes exactly 4 safe.
    costs = np.zeros(60)
    costs[[0, 5, 9, 19]] = 1.0  # episode 0: 4
    costs[20:25] = 1.0  # episode 1: 5
    costs[[40, 50, 59]] = 1.0  # episode 2: 3
    dataset = make_dataset([20, 20, 20], costs=costs)
    settings = FeedbackSettings(num_queries=3, num_safety_labels=3, segment_length=20)
    feedback = make_feedback(dataset, threshold=20.0, seed=0, settings=settings)
    assert feedback.provenance["safety_budget"] == 4.0
    by_episode = dict(zip(feedback.safety_episode.tolist(), feedback.safety_label.tolist()))
    assert by_episode == {0: 1.0, 1: 0.0, 2: 1.0}
    # kappa 15 moves the budget to 3.0: episode 2 (cost 3) stays safe, episode 0 (cost 4) is not
    tighter = dict(zip(*(a.tolist() for a in (lambda f: (f.safety_episode, f.safety_label))(make_feedback(dataset, 15.0, 0, settings)))))
    assert tighter == {0: 0.0, 1: 0.0, 2: 1.0}


def test_no_segment_crosses_an_episode_end(mixed, sim_dataset):
    for dataset, h in ((mixed, 20), (sim_dataset, 20)):
        settings = FeedbackSettings(num_queries=500, num_safety_labels=500, segment_length=h)
        feedback = make_feedback(dataset, 20.0, seed=4, settings=settings)
        episodes = np.concatenate([feedback.pair_episode.ravel(), feedback.safety_episode])
        starts = np.concatenate([feedback.pair_start.ravel(), feedback.safety_start])
        lengths = dataset.episodes.lengths[episodes]
        assert np.all(starts >= 0) and np.all(starts + h <= lengths)
        assert np.all(lengths >= h), "an episode shorter than H was used"
        # every transition of a segment belongs to the segment's episode
        idx = dataset.segment_indices(episodes, starts, h)
        assert np.all(dataset.episodes.episode_of()[idx] == episodes[:, None])
        assert not np.isin(np.flatnonzero(dataset.episodes.lengths < h), episodes).any()
    assert np.sum(mixed.episodes.lengths < 20) == 12, "the short episodes this test relies on are gone"


def test_default_settings_follow_the_paper(large):
    feedback = make_feedback(large, threshold=20.0, seed=0)
    assert feedback.num_pairs == 10_000 and feedback.num_safety_labels == 10_000
    assert feedback.segment_length == 40  # 20% of BallCircle's T = 200
    assert feedback.provenance["safety_budget"] == 20.0 * 40 / 200


# ---- sampling ------------------------------------------------------------------------------------


def test_pairs_and_segments_are_distinct_and_disjoint_sampling_holds(mixed):
    for how in fb.PAIR_SAMPLING:
        settings = FeedbackSettings(num_queries=2000, num_safety_labels=1000, segment_length=20, pair_sampling=how)
        feedback = make_feedback(mixed, 20.0, seed=5, settings=settings)
        offsets = mixed.episodes.starts[feedback.pair_episode] + feedback.pair_start  # global segment ids
        assert np.all(offsets[:, 0] != offsets[:, 1])
        unordered = np.sort(offsets, axis=1)
        assert len(np.unique(unordered, axis=0)) == feedback.num_pairs, "a pair was asked twice"
        safety = mixed.episodes.starts[feedback.safety_episode] + feedback.safety_start
        assert len(np.unique(safety)) == feedback.num_safety_labels
        if how == "disjoint-episodes":
            assert np.all(feedback.pair_episode[:, 0] != feedback.pair_episode[:, 1])
        else:
            assert np.any(feedback.pair_episode[:, 0] == feedback.pair_episode[:, 1])


def test_too_many_queries_for_the_dataset_is_a_clear_error():
    tiny = make_dataset([22, 22])  # 3 segments of 20 steps per episode: 6 segments, 15 pairs
    with pytest.raises(FeedbackError, match="only 15"):
        make_feedback(tiny, 20.0, 0, FeedbackSettings(num_queries=16, num_safety_labels=1, segment_length=20))
    with pytest.raises(FeedbackError, match="only 6 distinct segments"):
        make_feedback(tiny, 20.0, 0, FeedbackSettings(num_queries=1, num_safety_labels=7, segment_length=20))
    with pytest.raises(FeedbackError, match="no segment of 30 steps"):
        make_feedback(tiny, 20.0, 0, FeedbackSettings(num_queries=1, segment_length=30))


@pytest.mark.parametrize(
    "changes, message",
    [({"flip_prob": 1.5}, "flip_prob"), ({"pair_sampling": "random"}, "pair_sampling"), ({"segment_length": 0}, "segment_length"),
     ({"bt_temperature": -1.0}, "bt_temperature"), ({"num_queries": -2}, "num_queries")],
)
def test_bad_settings_raise_feedback_error(changes, message):
    with pytest.raises(FeedbackError, match=message):
        dataclasses.replace(FeedbackSettings(), **changes).validate()


# ---- determinism ---------------------------------------------------------------------------------


def test_same_seed_same_feedback_other_seed_other_feedback(large, tmp_path):
    settings = FeedbackSettings(num_queries=3000, flip_prob=0.1, bt_temperature=0.2, safety_flip_prob=0.1)
    a, b = (make_feedback(large, 20.0, seed=7, settings=settings) for _ in range(2))
    for name in ("pair_episode", "pair_start", "pair_label", "safety_episode", "safety_start", "safety_label", "pair_truth", "safety_truth"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.provenance == b.provenance
    a.save(tmp_path / "a.parquet")
    b.save(tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    c = make_feedback(large, 20.0, seed=8, settings=settings)
    assert not np.array_equal(a.pair_episode, c.pair_episode)


# ---- noise models: agreement with the truth moves by the expected amount -------------------------

TOL = 0.015  # > 3 standard errors of a rate near 0.8 on 10,000 draws (0.004 each)


def test_noise_free_teacher_agrees_with_truth(large):
    summary = make_feedback(large, 20.0, seed=0).summary()
    assert summary["pair_agreement"] == 1.0 and summary["safety_agreement"] == 1.0


def test_flipped_preferences_lower_agreement_to_one_minus_p(large):
    clean = make_feedback(large, 20.0, seed=0)
    noisy = make_feedback(large, 20.0, seed=0, settings=FeedbackSettings(flip_prob=0.2))
    np.testing.assert_array_equal(clean.pair_episode, noisy.pair_episode)  # same pairs, only labels change
    assert abs(noisy.summary()["pair_agreement"] - 0.8) < TOL


def test_bradley_terry_agreement_matches_its_expected_rate(large):
    temperature = 0.1
    noisy = make_feedback(large, 20.0, seed=0, settings=FeedbackSettings(bt_temperature=temperature))
    margin = noisy.diagnostics["reward_margin"]
    assert margin == pytest.approx(np.mean(large.episode_returns) * 40 / 200)
    diff = np.abs(noisy.pair_truth[:, 1] - noisy.pair_truth[:, 0])
    expected = float(np.mean(1.0 / (1.0 + np.exp(-diff / (temperature * margin)))))
    assert expected < 0.9, "the temperature must make the teacher noticeably noisy for this test to mean anything"
    assert abs(noisy.summary()["pair_agreement"] - expected) < TOL
    sharper = make_feedback(large, 20.0, seed=0, settings=FeedbackSettings(bt_temperature=temperature / 10))
    assert sharper.summary()["pair_agreement"] > noisy.summary()["pair_agreement"] + 0.1


def test_equal_band_labels_exactly_the_close_pairs_half(large):
    band = 0.05
    noisy = make_feedback(large, 20.0, seed=0, settings=FeedbackSettings(equal_band=band))
    diff = np.abs(noisy.pair_truth[:, 1] - noisy.pair_truth[:, 0])
    close = diff <= band * noisy.diagnostics["reward_margin"]
    assert 0.1 < close.mean() < 0.6
    np.testing.assert_array_equal(noisy.pair_label == 0.5, close)
    assert noisy.summary()["pair_agreement"] == pytest.approx(1.0 - close.mean())


def test_flipped_safety_labels_lower_agreement_to_one_minus_q(large):
    noisy = make_feedback(large, 20.0, seed=0, settings=FeedbackSettings(safety_flip_prob=0.3))
    summary = noisy.summary()
    assert abs(summary["safety_agreement"] - 0.7) < TOL and summary["pair_agreement"] == 1.0


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_safe_share_sets_the_share_of_safe_labels_and_nothing_else(large, share):
    natural = make_feedback(large, 20.0, seed=0, settings=FeedbackSettings(num_queries=2000))
    skewed = make_feedback(large, 20.0, seed=0, settings=FeedbackSettings(num_queries=2000, safe_share=share))
    assert abs(natural.safety_label.mean() - share) > 0.05  # the dataset alone gives another share
    assert skewed.safety_label.mean() == pytest.approx(share)
    # labels still the teacher's rule on the segments drawn, and no segment labelled twice
    np.testing.assert_array_equal(skewed.safety_label, (skewed.safety_truth <= skewed.provenance["safety_budget"]).astype(np.float32))
    assert len(np.unique(skewed.safety_episode * 1000 + skewed.safety_start)) == len(skewed.safety_label)
    assert not np.array_equal(skewed.safety_start, natural.safety_start)
    # the preference pairs keep their draws: the safe-share stream is a separate one
    np.testing.assert_array_equal(skewed.pair_start, natural.pair_start)
    np.testing.assert_array_equal(skewed.pair_label, natural.pair_label)


def test_safe_share_beyond_the_dataset_and_on_the_labelling_page_are_refused(large):
    all_unsafe = make_dataset([100] * 30, costs=np.ones(3000), seed=3)
    with pytest.raises(FeedbackError, match="safe_share 0.5 asks for 50 safe segments but the dataset has only 0"):
        make_feedback(all_unsafe, 20.0, seed=0, settings=FeedbackSettings(num_queries=100, safe_share=0.5))
    with pytest.raises(FeedbackError, match="scripted teacher only"):
        fb.sample_queries(large, 0, FeedbackSettings(num_queries=10, safe_share=0.5))
    with pytest.raises(FeedbackError, match="safe_share must be a share"):
        FeedbackSettings(safe_share=1.5).validate()


def test_safe_share_enters_config_identity_only_when_set():
    """Stored cells and cached feedback made before safe_share existed keep their hashes."""
    before = {f.name for f in dataclasses.fields(FeedbackSettings)} - {"safe_share"}
    assert set(FeedbackSettings().identity()) == before
    assert FeedbackSettings(safe_share=0.2).identity()["safe_share"] == 0.2


# ---- learner view, storage, provenance -----------------------------------------------------------


def test_view_carries_labels_and_indices_but_no_ground_truth(mixed):
    feedback = make_feedback(mixed, 20.0, 0, FeedbackSettings(num_queries=50, segment_length=20))
    view = feedback.view()
    assert isinstance(view, FeedbackView)
    assert {f.name for f in dataclasses.fields(view)} == {
        "segment_length", "pair_episode", "pair_start", "pair_label", "safety_episode", "safety_start", "safety_label", "provenance"
    }
    np.testing.assert_array_equal(view.pair_label, feedback.pair_label)
    np.testing.assert_array_equal(view.safety_start, feedback.safety_start)
    assert view.pair_episode.dtype == np.int64 and view.pair_label.dtype == np.float32 and view.num_pairs == 50
    view.pair_label[:] = -1  # a learner cannot change the stored labels through its view
    assert feedback.pair_label.min() >= 0
    text = json.dumps(view.provenance)
    assert "reward_margin" not in text and "gt_" not in text and "agreement" not in text


def test_save_load_roundtrip_and_provenance_in_parquet_metadata(mixed, tmp_path):
    settings = FeedbackSettings(num_queries=60, num_safety_labels=40, segment_length=20, flip_prob=0.1)
    feedback = make_feedback(mixed, 20.0, seed=9, settings=settings)
    path = feedback.save(tmp_path / "fb.parquet")
    meta = json.loads(pq.read_schema(path).metadata[fb.PROVENANCE_KEY])
    assert meta["dataset"]["hash"] == fb.dataset_hash(mixed) and meta["seed"] == 9 and meta["task"] == "BallRun"
    assert meta["settings"]["flip_prob"] == 0.1 and meta["versions"]["presa_bench"] == bench.__version__
    loaded = FeedbackSet.load(path)
    for name in ("pair_episode", "pair_start", "pair_label", "safety_episode", "safety_start", "safety_label", "pair_truth", "safety_truth"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(feedback, name))
    assert loaded.summary() == feedback.summary() and loaded.diagnostics == feedback.diagnostics


def test_dataset_hash_is_the_file_sha256_prefix(sim_dataset, sim_dataset_path):
    import hashlib

    assert fb.dataset_hash(sim_dataset) == hashlib.sha256(Path(sim_dataset_path).read_bytes()).hexdigest()[:16]


# ---- importing people's labels -------------------------------------------------------------------


def write_labels(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows, columns=["kind", "episode_0", "start_0", "episode_1", "start_1", "length", "label"]).to_csv(path, index=False)
    return path


def good_rows() -> list[dict]:
    return [
        dict(kind="preference", episode_0=0, start_0=0, episode_1=2, start_1=5, length=20, label=1),
        dict(kind="preference", episode_0=6, start_0=80, episode_1=0, start_1=10, length=20, label=0.5),
        dict(kind="preference", episode_0=2, start_0=25, episode_1=8, start_1=44, length=20, label=0),
        dict(kind="safety", episode_0=0, start_0=40, episode_1=None, start_1=None, length=20, label=1),
        dict(kind="safety", episode_0=9, start_0=0, episode_1=None, start_1=None, length=20, label=0),
    ]


def test_import_valid_csv(mixed, tmp_path):
    path = write_labels(tmp_path / "labels.csv", good_rows())
    feedback = import_labels(path, mixed, threshold=20.0)
    assert feedback.segment_length == 20 and feedback.num_pairs == 3 and feedback.num_safety_labels == 2
    assert feedback.pair_episode.tolist() == [[0, 2], [6, 0], [2, 8]] and feedback.pair_start.tolist() == [[0, 5], [80, 10], [25, 44]]
    assert feedback.pair_label.tolist() == [1.0, 0.5, 0.0] and feedback.safety_label.tolist() == [1.0, 0.0]
    assert feedback.pair_truth[0, 1] == segment_sum(mixed, mixed.rewards, 2, 5, 20)
    assert feedback.provenance["source"] == "file" and feedback.provenance["labels_file"] == str(path.resolve())
    assert "pair_agreement" in feedback.summary() and "safety_agreement" in feedback.summary()


def test_import_of_a_made_file_gives_the_same_labels(mixed, tmp_path):
    made = make_feedback(mixed, 20.0, 1, FeedbackSettings(num_queries=80, num_safety_labels=30, segment_length=20, flip_prob=0.3))
    back = import_labels(made.save(tmp_path / "made.parquet"), mixed, threshold=20.0)
    np.testing.assert_array_equal(back.pair_label, made.pair_label)
    np.testing.assert_array_equal(back.pair_episode, made.pair_episode)
    np.testing.assert_array_equal(back.safety_start, made.safety_start)
    assert back.summary()["pair_agreement"] == made.summary()["pair_agreement"] < 1.0


def _edit(rows, index, **changes):
    rows = [dict(r) for r in rows]
    rows[index].update(changes)
    return rows


BAD_FILES = {
    # case: (rows, expected row number in the message, words the message must contain)
    "episode out of range": (_edit(good_rows(), 1, episode_1=40), 2, "episode_1 = 40 is out of range"),
    "negative start": (_edit(good_rows(), 0, start_0=-1), 1, "start_0 = -1 is negative"),
    "inconsistent length": (_edit(good_rows(), 2, length=25), 3, "share one length"),
    "label 0.7": (_edit(good_rows(), 2, label=0.7), 3, "preference label 0.7"),
    "safety label 0.5": (_edit(good_rows(), 4, label=0.5), 5, "safety label 0.5"),
    "duplicate row": (good_rows() + [good_rows()[3]], 6, "repeats the question of row 4"),
    "reversed pair": (good_rows() + [dict(good_rows()[0], episode_0=2, start_0=5, episode_1=0, start_1=0, label=0)], 6, "repeats the question of row 1"),
    "NaN label": (_edit(good_rows(), 1, label=float("nan")), 2, "'label' is empty"),
    "NaN episode": (_edit(good_rows(), 2, episode_1=None), 3, "'episode_1' is empty"),
    "past the episode end": (_edit(good_rows(), 3, episode_0=2, start_0=26), 4, "runs past the end of episode 2 (45 steps)"),
    "not a whole number": (_edit(good_rows(), 0, start_0=2.5), 1, "not a whole number"),
    "unknown kind": (_edit(good_rows(), 3, kind="safe"), 4, "kind 'safe'"),
    "self comparison": (_edit(good_rows(), 0, episode_1=0, start_1=0), 1, "compares a segment with itself"),
    "second segment on a safety row": (_edit(good_rows(), 4, episode_1=3, start_1=0), 5, "set on a safety row"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_label_file_names_the_row(mixed, tmp_path, case):
    rows, row, words = BAD_FILES[case]
    path = write_labels(tmp_path / "bad.csv", rows)
    with pytest.raises(FeedbackError) as info:
        import_labels(path, mixed, threshold=20.0)
    message = str(info.value)
    assert f"row {row} (line {row + 1})" in message and words in message, message
    assert "\n" not in message and isinstance(info.value, BadInput)


def test_label_file_for_another_dataset(mixed, large, tmp_path):
    # a CSV that says which dataset it was made for
    rows = [dict(r, dataset_hash=fb.dataset_hash(mixed)) for r in good_rows()]
    path = tmp_path / "hashed.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    assert import_labels(path, mixed).num_pairs == 3
    other = make_dataset([100] * 40, seed=11)
    with pytest.raises(FeedbackError, match=r"row 1 \(line 2\): dataset_hash .* another dataset"):
        import_labels(path, other)
    # a feedback file made on one dataset, imported against another
    made = make_feedback(mixed, 20.0, 0, FeedbackSettings(num_queries=10, segment_length=20)).save(tmp_path / "m.parquet")
    with pytest.raises(FeedbackError, match="was made for dataset"):
        import_labels(made, other)
    with pytest.raises(FeedbackError, match="made for task BallRun, not BallCircle"):
        import_labels(made, large)
    with pytest.raises(FeedbackError, match="safety labels for threshold 20, not 10"):
        import_labels(made, mixed, threshold=10.0)


def test_unreadable_or_schema_less_files(mixed, tmp_path):
    with pytest.raises(FeedbackError, match="does not exist"):
        import_labels(tmp_path / "missing.csv", mixed)
    (tmp_path / "labels.json").write_text("{}")
    with pytest.raises(FeedbackError, match="unknown type"):
        import_labels(tmp_path / "labels.json", mixed)
    pd.DataFrame({"kind": ["safety"], "episode": [0], "label": [1]}).to_csv(tmp_path / "cols.csv", index=False)
    with pytest.raises(FeedbackError, match="lacks column"):
        import_labels(tmp_path / "cols.csv", mixed)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(FeedbackError, match="not a readable parquet"):
        import_labels(tmp_path / "broken.parquet", mixed)


# ---- feedback_for_run: cache keyed by dataset, settings, threshold and seed ---------------------


def test_feedback_for_run_makes_caches_and_reuses(mixed, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = feedback_for_run(BALLRUN, mixed, 20.0, 0, num_queries=100, cache_dir=cache, segment_length="20", flip_prob="0.25")
    files = sorted(cache.glob("*.parquet"))
    assert len(files) == 1 and first.num_pairs == 100 and first.num_safety_labels == 100
    assert first.provenance["settings"]["flip_prob"] == 0.25 and first.provenance["cache_key"] in files[0].name

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached feedback should have been loaded")

    monkeypatch.setattr(fb.runs, "make_feedback", no_rebuild)  # the name feedback_for_run calls
    again = feedback_for_run(BALLRUN, mixed, 20.0, 0, num_queries=100, cache_dir=cache, segment_length=20, flip_prob=0.25)
    np.testing.assert_array_equal(again.pair_label, first.pair_label)
    monkeypatch.undo()
    for other in (dict(threshold=10.0, seed=0), dict(threshold=20.0, seed=1)):
        feedback_for_run(BALLRUN, mixed, other["threshold"], other["seed"], num_queries=100, cache_dir=cache, segment_length=20, flip_prob=0.25)
    assert len(list(cache.glob("*.parquet"))) == 3
    with pytest.raises(FeedbackError, match=r"bad --set feedback.noise=0.1 for the feedback teacher: unknown setting; known settings: bt_temperature, "):
        feedback_for_run(BALLRUN, mixed, 20.0, 0, num_queries=10, cache_dir=cache, noise=0.1)
    with pytest.raises(FeedbackError, match=r"bad --set feedback.flip_prob=lots for the feedback teacher: expected a number"):
        feedback_for_run(BALLRUN, mixed, 20.0, 0, num_queries=10, cache_dir=cache, flip_prob="lots")


def test_feedback_for_run_imports_a_labels_file(mixed, tmp_path):
    path = write_labels(tmp_path / "labels.csv", good_rows())
    feedback = feedback_for_run(BALLRUN, mixed, 20.0, 0, num_queries=10_000, cache_dir=tmp_path / "c", labels_file=path)
    assert feedback.provenance["source"] == "file" and feedback.num_pairs == 3
    assert feedback.provenance["safety_budget"] == 4.0
    with pytest.raises(FeedbackError, match="synthetic labels only"):
        feedback_for_run(BALLRUN, mixed, 20.0, 0, num_queries=10, cache_dir=tmp_path / "c", labels_file=path, flip_prob=0.1)


def test_default_feedback_on_a_ballcircle_sized_dataset(large):
    """The default 10,000 distinct pairs and labels fit a BallCircle-sized dataset (speed: benchmarks/)."""
    feedback = make_feedback(large, 20.0, seed=0)
    assert feedback.num_pairs == 10_000 and feedback.num_safety_labels == 10_000 and large.num_transitions == 177_200
    keys = np.sort(feedback.pair_episode * 1000 + feedback.pair_start, axis=1)
    assert len(np.unique(keys, axis=0)) == 10_000  # no question asked twice


# ---- CLI -----------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_make_info_import(sim_dataset_path, tmp_path):
    out = tmp_path / "fb.parquet"
    result = runner.invoke(app, [
        "feedback", "make", "--task", "BallRun", "--threshold", "20", "--queries", "300", "--segment-length", "20",
        "--flip", "0.1", "--seed", "3", "--dataset", str(sim_dataset_path), "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "pair agreement with ground truth" in result.output and out.is_file()
    made = FeedbackSet.load(out)
    assert made.num_pairs == 300 and made.provenance["seed"] == 3 and made.provenance["settings"]["flip_prob"] == 0.1

    info = runner.invoke(app, ["feedback", "info", str(out), "--json"])
    assert info.exit_code == 0, info.output
    summary = json.loads(info.output)["summary"]
    assert summary["num_pairs"] == 300 and summary["pair_agreement"] == made.summary()["pair_agreement"]
    table = runner.invoke(app, ["feedback", "info", str(out)])
    assert table.exit_code == 0 and "fraction safe" in table.output

    labels = write_labels(tmp_path / "people.csv", [
        dict(kind="preference", episode_0=0, start_0=0, episode_1=1, start_1=3, length=20, label=1),
        dict(kind="safety", episode_0=2, start_0=1, episode_1=None, start_1=None, length=20, label=0),
    ])
    imported = runner.invoke(app, ["feedback", "import", str(labels), "--task", "BallRun", "--dataset", str(sim_dataset_path), "--threshold", "20"])
    assert imported.exit_code == 0, imported.output
    written = tmp_path / "people.feedback.parquet"
    assert written.is_file() and FeedbackSet.load(written).provenance["source"] == "file"


def test_cli_bad_label_file_exits_2_with_one_line(sim_dataset_path, tmp_path, capsys):
    labels = write_labels(tmp_path / "bad.csv", [dict(kind="preference", episode_0=0, start_0=0, episode_1=1, start_1=3, length=20, label=0.7)])
    result = runner.invoke(app, ["feedback", "import", str(labels), "--task", "BallRun", "--dataset", str(sim_dataset_path)])
    assert isinstance(result.exception, FeedbackError) and result.exception.exit_code == 2
    code = main(["feedback", "import", str(labels), "--task", "BallRun", "--dataset", str(sim_dataset_path)])
    err = capsys.readouterr().err
    assert code == 2 and "row 1 (line 2): preference label 0.7" in err and err.strip().count("\n") == 0
    assert main(["feedback", "info", str(labels)]) == 2  # a raw CSV is not a feedback file: import it first
    assert "feedback import" in capsys.readouterr().err


def test_feedback_split_is_a_seeded_partition_of_episodes():
    from bench.feedback import FeedbackView

    rng = np.random.default_rng(3)
    view = FeedbackView(
        segment_length=5,
        pair_episode=rng.integers(0, 40, (50, 2)), pair_start=rng.integers(0, 9, (50, 2)),
        pair_label=rng.integers(0, 2, 50).astype(np.float32),
        safety_episode=np.arange(40), safety_start=np.zeros(40, np.int64),
        safety_label=rng.integers(0, 2, 40).astype(np.float32),
    )
    train, held = view.split(0.1, seed=7)
    held_episodes = set(held.safety_episode.tolist()) | set(held.pair_episode.ravel().tolist())
    train_episodes = set(train.safety_episode.tolist()) | set(train.pair_episode.ravel().tolist())
    assert held_episodes and not held_episodes & train_episodes
    # every safety label lands in exactly one part; a pair is dropped only when it straddles the parts
    assert sorted(np.concatenate([train.safety_episode, held.safety_episode]).tolist()) == list(range(40))
    dropped = train.provenance["split"]["dropped_pairs"]
    straddling = np.isin(view.pair_episode, held.safety_episode).sum(axis=1) == 1
    assert dropped == int(straddling.sum()) == view.num_pairs - train.num_pairs - held.num_pairs
    again_train, again_held = view.split(0.1, seed=7)
    assert np.array_equal(held.safety_episode, again_held.safety_episode)
    other_train, other_held = view.split(0.1, seed=8)
    assert not np.array_equal(held.safety_episode, other_held.safety_episode)
    nothing_train, nothing_held = view.split(0.0, seed=7)
    assert nothing_held.num_pairs == 0 and nothing_train.num_safety_labels == 40 and nothing_train.num_pairs == 50


def test_held_out_feedback_shares_no_step_with_training_feedback(sim_dataset):
    """On a real dataset and the teacher's feedback, the steps of held-out segments (both segments of a
    held-out pair; held-out safety labels) and of training segments are disjoint, and about the
    configured share of the safety labels is held out."""
    view = make_feedback(sim_dataset, 20.0, seed=0, settings=FeedbackSettings(num_queries=2000)).view()
    h = view.segment_length

    def steps(part: FeedbackView) -> set[int]:
        pairs = sim_dataset.segment_indices(part.pair_episode.ravel(), part.pair_start.ravel(), h)
        labels = sim_dataset.segment_indices(part.safety_episode, part.safety_start, h)
        return set(np.concatenate([pairs.ravel(), labels.ravel()]).tolist())

    for seed in (0, 1, 2):
        train, held = view.split(0.1, seed)
        assert held.num_safety_labels and held.num_pairs and train.num_pairs
        assert not steps(held) & steps(train)
        assert 0.05 <= held.num_safety_labels / view.num_safety_labels <= 0.15


def test_the_feedback_package_imports_one_way():
    """Each module of bench/feedback/ imports only package modules that do not import it back (no cycle)."""
    import ast
    from pathlib import Path

    package = Path(fb.__file__).parent
    deps = {}
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        deps[path.stem] = {n.module.rsplit(".", 1)[-1] for n in ast.walk(tree)
                           if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("bench.feedback.")}
    assert deps.pop("__init__") == set(deps)  # the package re-exports every module
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join(path + (name,))}"
        if name not in done:
            for dep in deps[name]:
                visit(dep, path + (name,))
            done.add(name)

    for name in deps:
        visit(name, ())
