"""The discrimination probe (bench/probe.py) on two small REAL BallRun datasets built from scripted
controllers: one where the costly episodes come from driving fast (cloning everything is unsafe,
cloning the safe episodes is safe: it separates) and one where the cost comes only from action noise
around standing still (cloning everything is as safe as cloning the safe part: flagged). BC-All and
BC-Safe are osrl's, trained for a few hundred steps; evaluation is in the simulator."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import bench  # noqa: F401
from bench.cli import app, main
from bench.data import write_dsrl_hdf5
from bench.envs import make_env
from bench.errors import BadInput
from bench.probe import DEFAULT_CONFIG, load_settings, read_card, run_probe, stored_probe, write_probe
from bench.tasks import get_task

TASK = get_task("BallRun")
ASSET_DIR = Path(bench.__file__).parent / "assets" / "datasets"
KEYS = ("observations", "next_observations", "actions", "rewards", "costs", "terminals", "timeouts")


def _episodes(controllers: list[tuple[float, float]], seed: int) -> dict[str, np.ndarray]:
    """One episode per (forward push, noise std): action = clip([push, 0] + noise)."""
    env = make_env(TASK)
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {k: [] for k in KEYS}
    for ep, (push, std) in enumerate(controllers):
        np.random.seed(seed * 1000 + ep)
        obs, _ = env.reset(seed=seed * 1000 + ep)
        done = False
        while not done:
            action = np.clip(np.array([push, 0.0]) + std * rng.standard_normal(2), -1, 1).astype(np.float32)
            nxt, r, terminated, truncated, info = env.step(action)
            for k, v in zip(KEYS, (obs, nxt, action, r, info.get("cost", 0.0), terminated, truncated and not terminated)):
                out[k].append(v)
            obs, done = nxt, terminated or truncated
    env.close()
    return {k: np.asarray(v) for k, v in out.items()}


def _write(directory: Path, controllers: list[tuple[float, float]], seed: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return write_dsrl_hdf5(directory / TASK.dataset_filename(len(controllers)), _episodes(controllers, seed))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("probe")
    # separates: 10 fast episodes (full push: cost ~90) and 2 slow ones (push 0.1: cost 0). The slow
    # ones must move: a clone of episodes that stand still stands still too, as the rest state is
    # where they spend all their steps while the fast ones leave it at once
    fast = _write(root / "fast", [(1.0, 0.05)] * 10 + [(0.1, 0.02)] * 2, seed=1)
    # flagged: standing still, half of it with strong noise (random walks, some out of bounds: costly)
    jitter = _write(root / "jitter", [(0.0, 0.02)] * 4 + [(0.0, 0.8)] * 8, seed=2)
    return {"fast": fast, "jitter": jitter}


def _settings(**kw):  # the shipped config's algorithms, a test-sized budget, two thresholds
    return replace(load_settings(None, train_steps=300, eval_episodes=4), thresholds=(10.0, 20.0), **kw)


def test_datasets_are_what_the_cases_need(datasets: dict[str, Path]) -> None:
    from bench.data import load_dataset

    fast = load_dataset(datasets["fast"], TASK)
    assert (fast.episode_costs[:10] > 40).all() and (fast.episode_costs[10:] <= 10).all()
    jitter = load_dataset(datasets["jitter"], TASK)
    assert (jitter.episode_costs[:4] <= 10).all() and jitter.episode_costs[4:].max() > 10  # costly, not fast
    assert jitter.episode_returns.max() < fast.episode_returns[:10].min()


def test_probe_separates_a_dataset_whose_cost_comes_from_speed(datasets: dict[str, Path], tmp_path: Path) -> None:
    settings = _settings()
    result = run_probe(datasets["fast"], TASK, settings)
    assert [row["threshold"] for row in result.rows] == [10.0, 20.0]
    for row in result.rows:
        assert row["unsafe"]["algorithm"] == settings.unsafe_algorithm and row["safe"]["algorithm"] == settings.safe_algorithm
        assert row["unsafe"]["normalized_cost"] > 1 and row["unsafe_is_unsafe"]
        assert row["safe"]["normalized_cost"] <= 1 and row["safe_is_safe"]
        assert row["separates"] and row["reward_gap"] > 0.3
        # normalized cost is the raw cost over the threshold (DSRL's definition)
        assert row["unsafe"]["normalized_cost"] == pytest.approx(row["unsafe"]["cost"] / row["threshold"], abs=1e-3)
    assert result.separates_at == [10.0, 20.0] and not result.flagged and result.warning is None
    # a role whose training ignores the threshold, trained once and scored per threshold, gives the
    # numbers of training it at every threshold
    assert "unsafe" in settings.threshold_free
    apart = run_probe(datasets["fast"], TASK, replace(settings, threshold_free=()))
    assert [r["unsafe"] for r in apart.rows] == [r["unsafe"] for r in result.rows]
    assert [r["safe"] for r in apart.rows] == [r["safe"] for r in result.rows]

    card = write_probe(datasets["fast"], result, "test")
    stored = json.loads(card.read_text())["probe"]
    assert stored["separates_at"] == [10.0, 20.0] and stored["flagged"] is False and stored["command"] == "test"
    assert len(stored["per_seed"]) == 2 * 2 * len(settings.seeds)
    probe, fresh = stored_probe(datasets["fast"])
    assert probe == stored and fresh

    # the same card beside another file is recognised as stale, and `data info` says so
    other = tmp_path / "other" / datasets["jitter"].name
    other.parent.mkdir()
    other.write_bytes(datasets["jitter"].read_bytes())
    other.with_suffix(".json").write_text(card.read_text())
    assert stored_probe(other)[1] is False
    info = CliRunner().invoke(app, ["data", "info", "--task", "BallRun", "--dataset", str(other)])
    assert info.exit_code == 0 and "different file" in info.output


def test_probe_flags_a_dataset_whose_cost_comes_from_noise(datasets: dict[str, Path]) -> None:
    result = run_probe(datasets["jitter"], TASK, _settings(threshold_free=()))  # every model trained per threshold
    assert all(not row["unsafe_is_unsafe"] for row in result.rows)  # cloning the noise away is safe
    assert result.flagged and result.separates_at == []
    assert "no separation" in result.warning and "already safe at threshold(s) 10, 20" in result.warning


def test_cli_probe_writes_the_card_and_info_shows_it(datasets: dict[str, Path], tmp_path: Path) -> None:
    path = datasets["jitter"]
    before = read_card(path)
    config = tmp_path / "probe.yaml"
    config.write_text(DEFAULT_CONFIG.read_text() + "thresholds: [10]\n")
    runner = CliRunner()
    result = runner.invoke(app, ["data", "probe", "--task", "BallRun", "--dataset", str(path), "--probe-config", str(config),
                                 "--steps", "300", "--episodes", "4", "--seeds", "3"])
    assert result.exit_code == 0, result.output
    assert "no separation" in result.output
    card = read_card(path)
    assert card["probe"]["settings"]["seeds"] == [3] and card["probe"]["settings"]["train_steps"] == 300
    assert card["probe"]["flagged"] is True and card["probe"]["command"].startswith("presa-bench")
    if before is not None:  # keys other than the probe survive
        assert {k: v for k, v in card.items() if k != "probe"} == {k: v for k, v in before.items() if k != "probe"}
    info = runner.invoke(app, ["data", "info", "--task", "BallRun", "--dataset", str(path)])
    assert info.exit_code == 0, info.output
    assert "discrimination probe" in info.output and "no separation" in info.output


def test_bad_probe_input_is_one_line_exit_2(datasets: dict[str, Path], tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("unsafe_algorithm: bc-all\nsafe_algorithm: bc-safe\ntrain_steps: 10\neval_episodes: 2\nsped: 3\n")
    with pytest.raises(BadInput, match="unknown key"):
        load_settings(bad)
    with pytest.raises(BadInput, match="train_steps"):
        load_settings(None, train_steps=0)
    for argv in (
        ["data", "probe", "--task", "BallRun", "--dataset", str(datasets["fast"]), "--seeds", "a,b"],
        ["data", "probe", "--task", "BallRun", "--dataset", str(datasets["fast"]), "--probe-config", str(bad)],
        ["data", "probe", "--task", "BallRun", "--dataset", str(tmp_path / "missing.hdf5")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err
    feedback_learner = tmp_path / "fb.yaml"
    feedback_learner.write_text(DEFAULT_CONFIG.read_text().replace("safe_algorithm: bc-safe", "safe_algorithm: presa"))
    with pytest.raises(BadInput, match="learns from feedback"):
        run_probe(datasets["fast"], TASK, load_settings(feedback_learner, train_steps=1, eval_episodes=1))


@pytest.mark.parametrize("path", sorted(ASSET_DIR.glob("*.hdf5")), ids=lambda p: p.stem)
def test_every_shipped_dataset_carries_a_probe_of_itself(path: Path) -> None:
    probe, fresh = stored_probe(path)
    assert probe is not None, f"{path.name}: no probe in its card; run presa-bench data probe --dataset {path}"
    assert fresh, f"{path.name}: its card's probe was made on another file; rerun presa-bench data probe"
    assert [row["threshold"] for row in probe["thresholds"]] == list(get_task(json.loads(path.with_suffix('.json').read_text())["task"]).thresholds)
