"""benchmarks/lodo.py: the leave-one-dataset-out rule, on synthetic per-cell means."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def frame(rows: list[tuple[str, str, float, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["dataset", "candidate", "threshold", "normalized_reward", "normalized_cost",
                                       "heldout_safety_accuracy"]).assign(n=3)


def test_rule_prefers_safe_then_reward_then_separation(lodo) -> None:
    rows = []
    for d in ("a", "b"):
        rows += [(d, "bold", 20.0, 0.9, 1.5, 0.5),  # highest reward, unsafe: not admissible
                 (d, "safe-low", 20.0, 0.40, 0.2, 0.9),
                 (d, "safe-high", 20.0, 0.60, 0.8, 0.55),
                 (d, "safe-tied", 20.0, 0.59, 0.9, 0.75)]  # within the tie of safe-high, better separated
    order = ["bold", "safe-low", "safe-high", "safe-tied"]
    assert lodo.choose(frame(rows), order) == "safe-tied"
    # one unsafe development cell is enough to lose admissibility
    rows.append(("c", "safe-tied", 40.0, 0.6, 1.01, 0.75))
    assert lodo.choose(frame(rows), order) == "safe-high"


def test_rule_without_an_admissible_candidate_takes_the_smallest_worst_cost(lodo) -> None:
    rows = [("a", "x", 20.0, 0.9, 3.0, 0.5), ("b", "x", 20.0, 0.9, 1.1, 0.5),
            ("a", "y", 20.0, 0.1, 1.4, 0.5), ("b", "y", 20.0, 0.1, 1.3, 0.5)]
    assert lodo.choose(frame(rows), ["x", "y"]) == "y"


def test_each_dataset_is_scored_by_a_choice_made_without_it(lodo) -> None:
    """The left-out dataset's own numbers never decide its choice: 'local' is best on a only, so the
    choice for a is made on b (where 'global' wins) and scored on a."""
    rows = [("a", "local", 20.0, 0.9, 0.1, 0.9), ("a", "global", 20.0, 0.5, 0.5, 0.6), ("a", "bc-safe", 20.0, 0.3, 0.2, float("nan")),
            ("b", "local", 20.0, 0.2, 2.0, 0.6), ("b", "global", 20.0, 0.5, 0.5, 0.6), ("b", "bc-safe", 20.0, 0.3, 0.2, float("nan"))]
    table = lodo.lodo(frame(rows), ["local", "global"]).set_index("left_out")
    assert table.loc["a", "chosen"] == "global" and table.loc["a", "reward"] == 0.5 and table.loc["a", "bc_safe_reward"] == 0.3
    assert table.loc["b", "chosen"] == "local" and table.loc["b", "cost"] == 2.0
    assert "bc-safe" not in set(table["chosen"])


def test_plan_prints_a_collect_command_per_dataset(lodo, tmp_path: Path, capsys) -> None:
    (tmp_path / "BallCircle-quick-s11").mkdir()
    assert lodo.main(["plan", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 10 and out[0].startswith("BallCircle-quick-s11 (present): presa-bench data collect --task BallCircle --profile quick")
    assert all("(missing)" in line for line in out[1:])
    assert lodo.main(["run", "--data-dir", str(tmp_path)]) == 2  # refuses before training anything


def test_every_candidate_and_the_baseline_make_a_valid_sweep(lodo, tmp_path: Path) -> None:
    """The sweep YAMLs `run` writes load and expand to presa (with the candidate's settings on the
    common budget) or BC-Safe cells: a typo in candidates.yaml fails here, not hours into a run."""
    import yaml

    from bench.algorithms import get_algorithm
    from bench.interfaces import TrainSpec
    from bench.profiles import get_profile
    from bench.tasks import get_task
    from bench.sweep import expand, load_sweep_config

    candidates = yaml.safe_load((ROOT / "configs" / "lodo" / "candidates.yaml").read_text())
    for name in [*candidates["candidates"], lodo.BASELINE]:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(lodo.sweep_config(candidates, name)))
        config = load_sweep_config(path)
        config.tasks = ["BallCircle"]
        cells = expand(config)
        assert len(cells) == 9 and {c.algorithm for c in cells} == {"presa" if name != lodo.BASELINE else "bc-safe"}
        for cell in cells:  # every --set key exists and validates
            spec = TrainSpec(get_task(cell.task), cell.threshold or 20.0, cell.seed, get_profile(cell.profile), overrides=dict(cell.overrides))
            get_algorithm(cell.algorithm).config_for(spec)


def test_family_table_reads_each_card_and_its_probe(lodo, tmp_path: Path) -> None:
    import json

    directory = tmp_path / "BallRun-quick-s21"
    directory.mkdir()
    band = {"[0,10]": 1, "(10,20]": 2, "(20,40]": 3, "(40,80]": 4}
    probe = {"settings": {"seeds": [0, 10, 20]}, "thresholds": [
        {"threshold": k, "separates": k > 10, "unsafe": {"normalized_reward": 0.5, "normalized_cost": c},
         "safe": {"normalized_reward": 0.4, "normalized_cost": 0.2}} for k, c in ((10.0, 0.9), (20.0, 1.5), (40.0, 1.2))]}
    card = {"profile": "quick", "budget": {}, "timing_seconds": {"total_wall_this_call": 300.0}, "probe": probe,
            "dataset": {"episodes": 10, "episodes_per_cost_band": band, "episodes_at_or_below_threshold": {"20": 3},
                        "reward_quantiles": {"q10": 1.0, "q50": 2.0, "q90": 3.0}}}
    (directory / "SafetyBallRun-v0-80-10.json").write_text(json.dumps(card))
    _, datasets = lodo.load_family(ROOT / "configs" / "dev-family.yaml", tmp_path)
    rows = lodo.family_table(tmp_path, datasets).splitlines()
    mine = next(r for r in rows if r.startswith("| BallRun-quick-s21 "))
    assert "| quick (ppo-lag) | 10 | 30% | 1 / 2 / 3 | 5.0 min |" in mine and mine.endswith("| 20, 40 |")
    assert "0.50/1.50 0.40/0.20" in mine and "(3)" in mine
    assert sum("not collected" in r for r in rows) == 9
