"""benchmarks/ablation_table.py: the ablation table and plot read back from real result stores."""

from __future__ import annotations

from pathlib import Path


import bench  # noqa: F401
from bench import results as store

ROOT = Path(__file__).resolve().parents[1]


def write(root: Path, ablation: str, threshold: float, seed: int, reward: float, cost: float, lam: float | None) -> None:
    key = store.CellKey("BallRun", "presa", threshold, seed, "quick", "q100")
    config = {"ablation": ablation, "seed": seed, "threshold": threshold, "algorithm_config": {"batch_size": 32}}
    episodes = [
        {"checkpoint": kind, "episode": i, "episode_seed": i, "return": 1.0, "cost": 1.0, "length": 100,
         # the final checkpoint's episodes average to (reward, cost); the best one's are far off
         "normalized_reward": reward + (0.1 if i else -0.1) if kind == "final" else 9.0,
         "normalized_cost": cost if kind == "final" else 9.0}
        for kind in ("final", "best") for i in range(2)
    ]
    curve = [{"step": 10, "source": "train", "lambda": 99.0}, {"step": 20, "source": "train", "lambda": lam}] if lam else []
    store.write_cell(root / ablation, store.CellRecord(
        key=key, suite="bullet", config=config, config_hash=store.config_hash(config), episodes=episodes, curve=curve,
        steps=2000, dataset_path="/d/SafetyBallRun-v0-80-600.hdf5", dataset_hash="b5665856aaaa",
    ))


def test_table_means_over_seeds_of_the_final_checkpoint(ablation_table, tmp_path, capsys):
    root = tmp_path / "ablations"
    write(root, "default", 10.0, 0, 0.2, 0.0, lam=0.6)
    write(root, "default", 10.0, 10, 0.4, 0.0, lam=0.8)
    write(root, "cpl-alone", 10.0, 0, 0.3, 3.0, lam=None)
    write(root, "cpl-alone", 20.0, 0, 0.3, 1.5, lam=None)
    assert ablation_table.main([str(root), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "ablations.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| ablation")}
    assert list(rows) == ["default", "cpl-alone"]  # the reference row first
    assert rows["default"] == ["0.300 / 0.00 [2]", "-", "0.70", "-"]  # mean of seeds, last lambda of each curve
    assert rows["cpl-alone"] == ["0.300 / 3.00* [1]", "0.300 / 1.50* [1]", "-", "-"]
    assert "2000 steps x 32 segments, feedback q100, dataset b5665856" in text
    assert (tmp_path / "report" / "ablations.png").stat().st_size > 0
    assert "default" in capsys.readouterr().out


def test_no_store_is_one_line_and_exit_2(ablation_table, tmp_path, capsys):
    assert ablation_table.main([str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "make ablations" in err[0]
