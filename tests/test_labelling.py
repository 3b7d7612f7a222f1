"""The labelling page's parts without a browser: the questions are the scripted teacher's draws;
the store journals every answer, rewrites the labels file atomically, resumes, undoes, survives a
torn journal line and a crash before the rename, refuses a second server and foreign files; the
file imports and trains unchanged; the faithful view's geometry predicts the dataset's costs; the
annotator agreement (fraction and Cohen's kappa); `label serve`'s bad input is one line, exit 2."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import bench  # noqa: F401  (compat patches first)
from bench.cli import main
from bench.errors import BadInput
from bench.feedback import FeedbackSettings, annotator_agreement, cohen_kappa, dataset_hash, import_labels, make_feedback, sample_queries, validate_labels
from bench.labelling import render, store as store_mod
from bench.labelling.store import LabelStore, build_queries
from bench.tasks import get_task

BALLRUN = get_task("BallRun")
SETTINGS = FeedbackSettings(num_queries=12, segment_length=20)


def _questions(dataset, seed=0, settings=SETTINGS):
    length, pe, ps, se, ss = sample_queries(dataset, seed, settings, BALLRUN)
    return length, build_queries(pe, ps, se, ss, length)


def _header(dataset, **changes):
    header = {
        "task": "BallRun", "dataset_hash": dataset_hash(dataset), "dataset_path": str(dataset.path), "threshold": 20.0,
        "seed": 0, "num_queries": 12, "num_safety_labels": 12, "segment_length": 20, "pair_sampling": "uniform",
    }
    return {**header, **changes}


def _open(dataset, out, annotator="alice", **changes):
    _, queries = _questions(dataset)
    return LabelStore(out, _header(dataset, **changes), queries, annotator)


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


# ---- the questions ---------------------------------------------------------------------------------


def test_questions_are_the_scripted_teachers_draws(sim_dataset):
    for seed, settings in ((0, SETTINGS), (5, FeedbackSettings(num_queries=7, num_safety_labels=3, segment_length=10, pair_sampling="disjoint-episodes"))):
        made = make_feedback(sim_dataset, 20.0, seed, settings, BALLRUN)
        length, pe, ps, se, ss = sample_queries(sim_dataset, seed, settings, BALLRUN)
        assert length == made.segment_length
        np.testing.assert_array_equal(pe, made.pair_episode)
        np.testing.assert_array_equal(ps, made.pair_start)
        np.testing.assert_array_equal(se, made.safety_episode)
        np.testing.assert_array_equal(ss, made.safety_start)
        queries = build_queries(pe, ps, se, ss, length)
        assert [q.id for q in queries[:4]] == ["p0", "s0", "p1", "s1"]  # pairs and safety questions alternate
        assert len(queries) == len(pe) + len(se)
        assert {q.id for q in queries} == {f"p{i}" for i in range(len(pe))} | {f"s{i}" for i in range(len(se))}


# ---- the store -------------------------------------------------------------------------------------


def test_answers_are_saved_at_once_in_the_schema_and_import_unchanged(sim_dataset, tmp_path):
    out = tmp_path / "labels.csv"
    s = _open(sim_dataset, out)
    answers = {"p0": "left", "s0": "unsafe", "p1": "right", "s1": "safe", "p2": "equal", "s2": "cant_tell", "p3": "cant_tell"}
    for i, (qid, answer) in enumerate(answers.items()):
        assert s.next_query().id == qid
        s.answer(qid, answer)
        # the file on disk holds every answer so far, right after each one (no close needed)
        assert len(_csv(out)) == sum(a != "cant_tell" for a in list(answers.values())[: i + 1])
    assert s.next_query().id == "s3" and s.answered() == 7
    frame = _csv(out)
    by_kind = frame.set_index("kind")
    assert list(frame.columns) == list(store_mod.COLUMNS)
    assert frame["label"].tolist() == [0.0, 0.0, 1.0, 1.0, 0.5]  # left=0 (first preferred), unsafe=0, right=1, safe=1, equal=0.5
    assert set(frame["annotator"]) == {"alice"} and set(frame["dataset_hash"]) == {dataset_hash(sim_dataset)}
    p0 = s.by_id["p0"]
    first = frame.iloc[0]
    assert (first["episode_0"], first["start_0"], first["episode_1"], first["start_1"]) == (p0.episodes[0], p0.starts[0], p0.episodes[1], p0.starts[1])
    assert by_kind.loc["safety", "episode_1"].isna().all()
    imported = import_labels(out, sim_dataset, BALLRUN, 20.0)
    assert imported.num_pairs == 3 and imported.num_safety_labels == 2
    np.testing.assert_array_equal(imported.pair_label, [0.0, 1.0, 0.5])
    s.close()


def test_reopening_resumes_and_undo_takes_answers_back(sim_dataset, tmp_path):
    out = tmp_path / "labels.csv"
    s = _open(sim_dataset, out)
    for qid, answer in (("p0", "left"), ("s0", "safe"), ("p1", "right"), ("s1", "unsafe")):
        s.answer(qid, answer)
    assert s.undo() == "s1" and s.undo() == "p1"
    assert s.next_query().id == "p1" and len(_csv(out)) == 2
    s.answer("p1", "equal")
    s.close()

    again = _open(sim_dataset, out)
    assert again.answered() == 3 and again.next_query().id == "s1"
    assert again.answers[("alice", "p1")] == "equal"
    assert again.undo() == "p1" and again.undo() == "s0" and again.undo() == "p0" and again.undo() is None
    assert len(_csv(out)) == 0 and again.next_query().id == "p0"
    again.close()
    assert _open(sim_dataset, out).answered() == 0  # the undos were journalled too


def test_torn_last_journal_line_loses_only_the_answer_in_flight(sim_dataset, tmp_path):
    out = tmp_path / "labels.csv"
    s = _open(sim_dataset, out)
    s.answer("p0", "left")
    s.answer("s0", "safe")
    s.close()
    with open(out.with_name("labels.csv.journal"), "a") as f:
        f.write('{"a": "right", "op": "answ')  # the server died inside this write
    again = _open(sim_dataset, out)
    assert again.answered() == 2 and again.next_query().id == "p1"
    again.answer("p1", "right")
    again.close()
    lines = out.with_name("labels.csv.journal").read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # the torn line is gone, the journal parses
    last = _open(sim_dataset, out)
    assert last.answered() == 3
    last.close()
    journal = out.with_name("labels.csv.journal")
    journal.write_text(journal.read_text().rstrip("\n"))  # cut just before the last newline
    again = _open(sim_dataset, out)
    again.answer("s1", "safe")
    again.close()
    assert _open(sim_dataset, out).answered() == 4  # the next event started its own line

    fresh = tmp_path / "fresh.csv"
    fresh.with_name("fresh.csv.journal").write_text('{"dataset_hash": "d0')  # died writing the header
    assert _open(sim_dataset, fresh).next_query().id == "p0"


def test_crash_before_the_rename_keeps_the_old_file_and_loses_nothing(sim_dataset, tmp_path, monkeypatch):
    out = tmp_path / "labels.csv"
    s = _open(sim_dataset, out)
    s.answer("p0", "left")
    before = out.read_bytes()

    def die(*args, **kwargs):
        raise KeyboardInterrupt("killed between the journal write and the rename")

    monkeypatch.setattr(store_mod.os, "replace", die)
    with pytest.raises(KeyboardInterrupt):
        s.answer("s0", "unsafe")
    monkeypatch.undo()
    assert out.read_bytes() == before  # the labels file is the old complete file, never half written
    s.close()
    again = _open(sim_dataset, out)  # the journal had the answer: the file is rebuilt with it
    assert again.answered() == 2 and len(_csv(out)) == 2


def test_second_server_foreign_files_and_other_settings_are_refused(sim_dataset, tmp_path):
    out = tmp_path / "labels.csv"
    s = _open(sim_dataset, out)
    s.answer("p0", "left")
    with pytest.raises(BadInput, match="open in another labelling server"):
        _open(sim_dataset, out)
    s.close()
    with pytest.raises(BadInput, match="from another dataset"):
        _open(sim_dataset, out, dataset_hash="0123456789abcdef")
    with pytest.raises(BadInput, match="seed = 0, not 3"):
        _open(sim_dataset, out, seed=3)
    with pytest.raises(BadInput, match="threshold"):
        _open(sim_dataset, out, threshold=40.0)
    assert _open(sim_dataset, out).answered() == 1  # refusals changed nothing

    foreign = tmp_path / "theirs.csv"
    foreign.write_text("kind,episode_0,start_0,episode_1,start_1,length,label,dataset_hash\nsafety,0,0,,,20,1,ffffffffffffffff\n")
    with pytest.raises(BadInput, match="from another dataset"):
        _open(sim_dataset, foreign)
    plain = tmp_path / "plain.csv"
    plain.write_text("kind,episode_0,start_0,episode_1,start_1,length,label\nsafety,0,0,,,20,1\n")
    with pytest.raises(BadInput, match="not written by the labelling page"):
        _open(sim_dataset, plain)
    assert plain.read_text().count("\n") == 2 and foreign.read_text().count("\n") == 2  # untouched


def test_bad_answers_are_refused_and_change_nothing(sim_dataset, tmp_path):
    out = tmp_path / "labels.csv"
    s = _open(sim_dataset, out)
    with pytest.raises(BadInput, match="does not fit a safety question"):
        s.answer("s0", "left")
    with pytest.raises(BadInput, match="does not fit a preference question"):
        s.answer("p0", "safe")
    with pytest.raises(BadInput, match="unknown query"):
        s.answer("p999", "left")
    assert s.answered() == 0 and len(out.with_name("labels.csv.journal").read_text().splitlines()) == 1
    with pytest.raises(BadInput, match="annotator"):
        _open(sim_dataset, tmp_path / "x.csv", annotator=" ")


def test_two_annotators_share_a_file_and_their_agreement_is_reported(sim_dataset, tmp_path):
    out = tmp_path / "labels.csv"
    alice = _open(sim_dataset, out, "alice")
    for qid, answer in (("p0", "left"), ("s0", "safe"), ("p1", "right"), ("s1", "unsafe"), ("p2", "equal"), ("s2", "safe")):
        alice.answer(qid, answer)
    alice.close()
    bob = _open(sim_dataset, out, "bob")
    assert bob.next_query().id == "p0"  # each annotator is asked every question
    for qid, answer in (("p0", "left"), ("s0", "unsafe"), ("p1", "right"), ("s1", "unsafe"), ("p2", "left"), ("s2", "safe")):
        bob.answer(qid, answer)
    bob.close()
    frame = _csv(out)
    assert sorted(frame["annotator"].value_counts().items()) == [("alice", 6), ("bob", 6)]
    imported = import_labels(out, sim_dataset, BALLRUN, 20.0)
    assert imported.num_pairs == 6
    agreement = {a["kind"]: a for a in imported.provenance["annotator_agreement"]}
    assert agreement["preference"]["shared"] == 3 and agreement["preference"]["agreement"] == pytest.approx(2 / 3)
    assert agreement["safety"]["agreement"] == pytest.approx(2 / 3)
    # kappa by hand: alice safe,unsafe,safe; bob unsafe,unsafe,safe -> p_o 2/3, p_e 2/3*1/3 + 1/3*2/3 = 4/9
    assert agreement["safety"]["kappa"] == pytest.approx((2 / 3 - 4 / 9) / (1 - 4 / 9))
    assert imported.provenance["annotator_counts"]["bob"] == {"preference": 3, "safety": 3}


def test_agreement_mirrors_reversed_pairs_and_kappa_edge_cases(sim_dataset, tmp_path):
    rows = pd.DataFrame([
        dict(kind="preference", episode_0=0, start_0=0, episode_1=1, start_1=0, length=20, label=1, annotator="a"),
        dict(kind="preference", episode_0=1, start_0=0, episode_1=0, start_1=0, length=20, label=0, annotator="b"),  # same answer, reversed
        dict(kind="preference", episode_0=2, start_0=0, episode_1=3, start_1=0, length=20, label=0.5, annotator="a"),
        dict(kind="preference", episode_0=2, start_0=0, episode_1=3, start_1=0, length=20, label=1, annotator="b"),
    ])
    columns = validate_labels(rows, sim_dataset, tmp_path / "x.csv")
    (pairs,) = [a for a in annotator_agreement(columns) if a["kind"] == "preference"]
    assert pairs["shared"] == 2 and pairs["agreement"] == 0.5
    assert cohen_kappa(np.array([1.0, 0.0, 1.0]), np.array([1.0, 0.0, 1.0])) == pytest.approx(1.0)
    assert cohen_kappa(np.array([1.0, 1.0]), np.array([1.0, 1.0])) is None  # one label only: undefined
    assert cohen_kappa(np.array([]), np.array([])) is None
    assert cohen_kappa(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(-1.0)


# ---- the faithful view -----------------------------------------------------------------------------


def test_view_geometry_predicts_the_datasets_costs_and_foreign_layouts_are_refused(sim_dataset):
    geometry = render.geometry_for(BALLRUN)
    assert render.check_geometry(geometry, sim_dataset.next_observations, sim_dataset.costs) > 0.99
    assert sim_dataset.costs.sum() > 0  # the check is not vacuous: the rollouts do leave the lane
    shuffled = sim_dataset.next_observations[:, ::-1].copy()
    with pytest.raises(BadInput, match="not be faithful"):
        render.check_geometry(geometry, shuffled, sim_dataset.costs)
    with pytest.raises(BadInput, match="cannot be shown on the labelling page"):
        render.geometry_for(get_task("PointGoal1"))
    circle = render.geometry_for(get_task("CarCircle"))
    assert circle.kind == "circle" and circle.vel_scale == 1.0


def test_animation_has_one_frame_per_step_and_draws_the_agent_where_it_is(sim_dataset):
    geometry = render.geometry_for(BALLRUN)
    view = render.View.of(geometry, sim_dataset.observations)
    idx = sim_dataset.segment_indices(np.array([3]), np.array([10]), 20)[0]
    obs, nxt = sim_dataset.observations[idx], sim_dataset.next_observations[idx]
    gif = render.render_gif(geometry, view, render.background(geometry, view), obs, nxt)
    import io

    image = Image.open(io.BytesIO(gif))
    assert image.format == "GIF" and image.n_frames == 21 and image.size == view.size
    image.seek(20)
    last = image.convert("RGB")
    col, row = np.round(view.pixels(geometry.positions(nxt[-1]))).astype(int)
    assert last.getpixel((int(col), int(row))) in ((20, 20, 20), (220, 30, 30))  # the agent's dot, at its position


# ---- the command's bad input -----------------------------------------------------------------------


def _serve(*args: str) -> list[str]:
    return ["label", "serve", *args]


def test_label_serve_bad_input_is_one_line_exit_2(sim_dataset_path, sim_dataset, tmp_path, capsys):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main(_serve("--task", "BallCirkle", "--port", "0", *cache)) == 2
    assert "BallCirkle" in capsys.readouterr().err
    assert main(_serve("--task", "PointGoal1", "--port", "0", *cache)) == 2
    err = capsys.readouterr().err
    assert "cannot be shown" in err and err.strip().count("\n") == 0

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(_serve("--task", "BallRun", "--dataset", str(sim_dataset_path), "--port", str(port), *cache)) == 2
        err = capsys.readouterr().err
        assert f"port {port}" in err and "in use" in err and err.strip().count("\n") == 0

    # a labels file started on another dataset: refused, and nothing in it changes
    out = tmp_path / "labels.csv"
    s = _open(sim_dataset, out, dataset_hash="0123456789abcdef")
    s.answer("p0", "left")
    s.close()
    before = (out.read_bytes(), out.with_name("labels.csv.journal").read_bytes())
    code = main(_serve("--task", "BallRun", "--dataset", str(sim_dataset_path), "--segment-length", "20", "--queries", "12",
                       "--port", "0", "--out", str(out), *cache))
    err = capsys.readouterr().err
    assert code == 2 and "from another dataset" in err and err.strip().count("\n") == 0
    assert (out.read_bytes(), out.with_name("labels.csv.journal").read_bytes()) == before
    assert main(_serve("--task", "BallRun", "--dataset", str(sim_dataset_path), "--queries", "-1", "--port", "0", *cache)) == 2
    assert "num_queries" in capsys.readouterr().err


def test_feedback_info_shows_the_agreement_of_an_imported_two_annotator_file(sim_dataset_path, sim_dataset, tmp_path, capsys):
    out = tmp_path / "labels.csv"
    for who, answers in (("alice", ("left", "safe", "right", "unsafe")), ("bob", ("left", "unsafe", "left", "unsafe"))):
        s = _open(sim_dataset, out, who)
        for qid, answer in zip(("p0", "s0", "p1", "s1"), answers):
            s.answer(qid, answer)
        s.close()
    feedback = tmp_path / "labels.feedback.parquet"
    assert main(["feedback", "import", str(out), "--task", "BallRun", "--dataset", str(sim_dataset_path), "--threshold", "20", "--out", str(feedback)]) == 0
    capsys.readouterr()
    assert main(["feedback", "info", str(feedback)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "agreement alice / bob (pairs)" in text and "2 shared, agree 0.5" in text
    assert "agreement alice / bob (safety)" in text and "Cohen's kappa" in text
    assert "annotator bob" in text and "2 pairs, 2 safety labels" in text


# ---- simulator replay where the file records seeds -------------------------------------------------


def _replayable_file(path: Path, episodes: int = 2, tamper: bool = False) -> Path:
    """A tiny collected-style BallRun file with a ``replay`` group: each episode rolled out in a
    fresh simulator from `reset_for_replay` (as bench.collect does); ``tamper`` changes one stored
    observation inside the segment the test renders."""
    from bench.collect import REPLAY_GROUP, STEP_KEYS, reset_for_replay
    from bench.data import write_dsrl_hdf5
    from bench.envs import make_env

    rng = np.random.default_rng(1)
    out: dict[str, list] = {k: [] for k in STEP_KEYS}
    seeds, starts = [], []
    for ep in range(episodes):
        env = make_env(BALLRUN)
        seed = 777 + ep
        seeds.append(seed)
        starts.append(len(out["rewards"]))
        obs, done = reset_for_replay(env, seed), False
        while not done:
            action = np.clip(0.4 + 0.5 * rng.standard_normal(2), -1, 1).astype(np.float32)
            nxt, r, terminated, truncated, info = env.step(action.astype(np.float64))
            for key, value in zip(STEP_KEYS, (obs, nxt, action, r, info.get("cost", 0.0), terminated, truncated and not terminated)):
                out[key].append(value)
            obs, done = nxt, terminated or truncated
        env.close()
    arrays = {k: np.asarray(v) for k, v in out.items()}
    if tamper:
        arrays["observations"][starts[1] + 12, 0] += 0.01  # episode 1, step 12 (inside the segment at 10..30)
    groups = {REPLAY_GROUP: {"episode_seed": np.array(seeds, np.int64), "episode_start": np.array(starts, np.int64)}}
    return write_dsrl_hdf5(path, arrays, groups=groups)


def test_segments_of_a_file_with_seeds_are_replayed_in_the_simulator_and_checked(tmp_path):
    import io

    from bench.data import load_dataset
    from bench.labelling import replay
    from bench.labelling.app import VIEW_REPLAY, FrameCache

    geometry = render.geometry_for(BALLRUN)
    ds = load_dataset(_replayable_file(tmp_path / "good.hdf5"), BALLRUN)
    frames = FrameCache(tmp_path / "cache", ds, geometry, dataset_hash(ds))
    assert frames.view_name == VIEW_REPLAY
    data, view = frames.render_segment(1, 10, 20)
    assert view == VIEW_REPLAY and not frames.mismatches
    image = Image.open(io.BytesIO(data))
    assert image.format == "GIF" and image.n_frames == 21
    assert image.size == (replay.FRAME_WIDTH, replay.FRAME_HEIGHT + replay.TOP)
    # the frames are the simulator's: the (black and white) ball at the centre, where the camera
    # follows it (the blue/white floor and brown walls have no near-black pixels), and the view moves
    shots = []
    for k in (0, 20):
        image.seek(k)
        shots.append(np.asarray(image.convert("RGB"))[replay.TOP:].astype(int))
    h, w = replay.FRAME_HEIGHT, replay.FRAME_WIDTH
    for shot in shots:
        assert shot.shape == (h, w, 3)
        centre, border = shot[h // 2 - 25:h // 2 + 25, w // 2 - 25:w // 2 + 25], shot[:30]
        assert (centre.max(axis=-1) < 40).sum() > 20 and (border.max(axis=-1) < 40).sum() == 0
    assert np.abs(shots[0] - shots[1]).mean() > 1.0
    # through the pool and the disk cache
    path = frames.get(1, 10, 20)
    assert path.is_file() and "-replay-" in path.name and Image.open(path).n_frames == 21
    frames.close()
    # the raw replay: 21 frames, and the stored observations reproduced well within the tolerance
    first_step = int(ds.episodes.starts[1])
    sl = slice(first_step, first_step + 30)
    shots, worst = replay.replay_segment(BALLRUN, 778, ds.observations[sl], ds.next_observations[sl], ds.actions[sl], 10, 20)
    assert len(shots) == 21 and worst < replay.TOLERANCE
    with pytest.raises(replay.ReplayMismatch):  # a wrong seed does not reproduce the episode
        replay.replay_segment(BALLRUN, 779, ds.observations[sl], ds.next_observations[sl], ds.actions[sl], 10, 20)


def test_a_tampered_observation_falls_back_to_the_path_view_and_says_so(tmp_path):
    import io

    from bench.data import load_dataset
    from bench.labelling.app import VIEW_PATH, VIEW_REPLAY, FrameCache

    geometry = render.geometry_for(BALLRUN)
    ds = load_dataset(_replayable_file(tmp_path / "tampered.hdf5", tamper=True), BALLRUN)
    frames = FrameCache(tmp_path / "cache", ds, geometry, dataset_hash(ds))
    assert frames.view_name == VIEW_REPLAY  # the file has seeds ...
    data, view = frames.render_segment(0, 10, 20)
    assert view == VIEW_REPLAY  # ... episode 0 is untouched
    data, view = frames.render_segment(1, 10, 20)
    assert view == VIEW_PATH and "episode step 12" in frames.mismatches[(1, 10)]
    image = Image.open(io.BytesIO(data))
    view_size = render.View.of(geometry, ds.observations).size
    assert image.n_frames == 21 and image.size[0] == view_size[0] and image.size[1] > view_size[1]  # the note strip on top
    frames.close()


def test_a_file_without_seeds_keeps_the_path_view(sim_dataset, tmp_path):
    from bench.labelling.app import VIEW_PATH, FrameCache

    frames = FrameCache(tmp_path / "cache", sim_dataset, render.geometry_for(BALLRUN), dataset_hash(sim_dataset))
    assert frames.replay_index is None and frames.view_name == VIEW_PATH
    data, view = frames.render_segment(3, 10, 20)
    assert view == VIEW_PATH
    frames.close()


def test_the_page_says_which_view_it_shows(sim_dataset, tmp_path):
    from bench.data import load_dataset
    from bench.labelling.app import VIEW_PATH, VIEW_REPLAY, Context, FrameCache, create_app

    geometry = render.geometry_for(BALLRUN)
    for ds, expected, other in ((load_dataset(_replayable_file(tmp_path / "seeded.hdf5", episodes=1), BALLRUN), VIEW_REPLAY, VIEW_PATH),
                                (sim_dataset, VIEW_PATH, VIEW_REPLAY)):
        frames = FrameCache(tmp_path / "cache", ds, geometry, dataset_hash(ds))
        length, pe, ps, se, ss = sample_queries(ds, 0, FeedbackSettings(num_queries=2, num_safety_labels=1, segment_length=20), BALLRUN)
        store = LabelStore(tmp_path / f"{expected[:3]}.csv", _header(ds, num_queries=2, num_safety_labels=1), build_queries(pe, ps, se, ss, length), "alice")
        context = Context(task="BallRun", threshold=20.0, segment_length=length, episode_length=BALLRUN.episode_length,
                          budget=1.0, dataset=str(ds.path), rules=geometry.describe(), view=frames.view_name)
        page = create_app(store, frames, context).test_client().get("/").get_data(as_text=True)
        assert f"View: {expected}." in page and other not in page
        store.close()
        frames.close()
