"""Report: safe/unsafe/best marks and Average rows on a hand-made frame; statistics on hand-computable
cases; the report files and the `report` command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from typer.testing import CliRunner

import bench  # noqa: F401
from bench import report, stats
from bench import results as store
from bench.cli import app, main

runner = CliRunner()

#: (task, suite, method) -> (normalized reward, normalized cost), every cell of the task the same.
HAND = {
    ("BallRun", "bullet", "presa"): (0.60, 0.80),  # safe, best safe
    ("BallRun", "bullet", "bc-safe"): (0.50, 0.40),  # safe
    ("BallRun", "bullet", "cdt"): (0.90, 1.50),  # unsafe, highest reward: must NOT be best
    ("BallCircle", "bullet", "presa"): (0.70, 1.20),  # unsafe
    ("BallCircle", "bullet", "bc-safe"): (0.40, 0.90),  # safe, best (only safe... with cdt)
    ("BallCircle", "bullet", "cdt"): (0.30, 1.00),  # safe at exactly 1.0
    ("PointGoal1", "safety-gymnasium", "presa"): (0.20, 2.00),  # nobody safe on this task
    ("PointGoal1", "safety-gymnasium", "bc-safe"): (0.10, 3.00),
}


def hand_cells() -> pd.DataFrame:
    rows = []
    for (task, suite, method), (r, c) in HAND.items():
        for threshold in (10.0, 20.0):
            for seed in (0, 10):
                # the cell means are exact, with a spread over cells that averages out
                jitter = 0.05 * (1 if (threshold, seed) in ((10.0, 0), (20.0, 10)) else -1)
                rows.append(dict(cell_id=f"{task}-{method}-{threshold}-{seed}", task=task, suite=suite, algorithm=method,
                                 threshold=threshold, seed=seed, normalized_reward=r + jitter, normalized_cost=c - jitter,
                                 **{"return": 0.0, "cost": 0.0}))
    return pd.DataFrame(rows)


def test_table_marks_safe_unsafe_best_and_suite_averages():
    table = report.comparison_table(hand_cells())
    assert table.methods == ["presa", "bc-safe", "cdt"]  # PreSa first, then alphabetical
    assert [r.label for r in table.rows] == ["BallRun", "BallCircle", "Bullet-Safety-Gym Average", "PointGoal1", "Safety-Gymnasium Average"]
    run = table.row("BallRun").entries
    assert run["presa"].safe and run["presa"].best and run["presa"].reward == pytest.approx(0.6)
    assert run["bc-safe"].safe and not run["bc-safe"].best
    assert not run["cdt"].safe and not run["cdt"].best
    circle = table.row("BallCircle").entries
    assert not circle["presa"].safe and circle["cdt"].safe  # cost exactly 1.0 is safe
    assert circle["bc-safe"].best and not circle["cdt"].best
    avg = table.row("Bullet-Safety-Gym Average").entries
    assert avg["presa"].reward == pytest.approx(0.65) and avg["presa"].cost == pytest.approx(1.0) and avg["presa"].safe
    assert avg["cdt"].cost == pytest.approx(1.25) and not avg["cdt"].safe
    assert avg["presa"].best  # 0.65 > bc-safe 0.45, cdt unsafe
    goal = table.row("PointGoal1").entries
    assert not any(e.safe or e.best for e in goal.values()) and "cdt" not in goal


def test_markdown_latex_and_summary_carry_the_marks():
    table = report.comparison_table(hand_cells())
    md = report.markdown_table(table)
    run_line = next(line for line in md.splitlines() if line.startswith("| BallRun"))
    assert "***0.60***" in run_line and "**0.50**" in run_line and 'color:gray">0.90<' in run_line
    assert "| **Bullet-Safety-Gym Average** |" in md
    tex = report.latex_table(table)
    assert r"\textcolor{blue}{\textbf{0.60}}" in tex and r"\textbf{0.50}" in tex and r"\textcolor{gray}{0.90}" in tex
    assert tex.count(r"\begin{tabular}") == 1 and r"\bottomrule" in tex and "bc-safe" in tex
    summary = report.summary_text(table)
    assert "presa: safe on 1/3 tasks; best safe reward on 1 (BallRun)" in summary
    assert "bc-safe: safe on 2/3 tasks; best safe reward on 1 (BallCircle)" in summary
    assert "cdt: safe on 1/2 tasks; best safe reward on 0" in summary
    assert "Safety-Gymnasium Average: no method is safe on average" in summary


def test_iqm_and_trimmed_mean_hand_cases():
    assert stats.iqm(np.arange(1.0, 9.0)[:, None]) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert stats.iqm([np.array([1.0, 100.0]), np.array([2.0, 3.0])]) == pytest.approx(2.5)  # pooled: 1,2,3,100 -> 2,3
    x = np.random.default_rng(0).normal(size=(9, 7))
    assert stats.iqm(x) == pytest.approx(scipy.stats.trim_mean(x, 0.25, axis=None))


def test_probability_of_improvement_hand_cases():
    assert stats.probability_of_improvement([np.array([1.0, 2.0])], [np.array([0.0, 3.0])]) == pytest.approx(0.5)
    assert stats.probability_of_improvement([np.array([1.0])], [np.array([1.0])]) == pytest.approx(0.5)  # tie = 1/2
    # task 1: x always better (1.0); task 2: 1 of 4 pairs (0.25) -> mean 0.625
    x = [np.array([5.0, 6.0]), np.array([0.0, 2.0])]
    y = [np.array([1.0, 2.0]), np.array([1.0, 3.0])]
    assert stats.probability_of_improvement(x, y) == pytest.approx(0.625)
    a, b = np.random.default_rng(1).normal(size=(6, 4)), np.random.default_rng(2).normal(size=(5, 4))
    mwu = np.mean([scipy.stats.mannwhitneyu(a[:, t], b[:, t]).statistic / 30 for t in range(4)])
    assert stats.probability_of_improvement(a, b) == pytest.approx(mwu)


def test_bootstrap_is_stratified_seeded_and_covers_the_point():
    # constant within each task: a stratified bootstrap can only redraw the same values -> zero width
    cols = [np.zeros(5), np.full(5, 10.0)]
    ci = stats.stratified_bootstrap_ci(cols, "mean", reps=500)
    assert (ci.point, ci.low, ci.high) == (5.0, 5.0, 5.0)
    x = np.random.default_rng(3).normal(size=(10, 5))
    a = stats.stratified_bootstrap_ci(x, "iqm", reps=1000, seed=4)
    assert a == stats.stratified_bootstrap_ci(x, "iqm", reps=1000, seed=4)
    assert a.low < a.point < a.high and a.high - a.low < 1.0
    poi = stats.probability_of_improvement_ci(x + 1.0, x, reps=500)
    assert poi.point > 0.7 and poi.low <= poi.point <= poi.high <= 1.0
    with pytest.raises(ValueError):
        stats.stratified_bootstrap_ci(x, "median")


def test_aggregates_over_common_tasks():
    agg, tasks = report.aggregates(hand_cells(), reps=200)
    assert tasks == ["BallCircle", "BallRun"]  # cdt did not run PointGoal1
    presa = agg.set_index("method").loc["presa"]
    assert presa["iqm_reward"] == pytest.approx(0.65)
    cdt = agg.set_index("method").loc["cdt"]
    # PreSa's reward beats cdt on BallCircle (0.70 vs 0.30: all pairs) and loses on BallRun (0.60 vs 0.90)
    assert cdt["p_presa_better_reward"] == pytest.approx(0.5)
    assert np.isnan(presa["p_presa_better_reward"])


def write_store(tmp_path, cells: pd.DataFrame) -> None:
    for cell in cells.to_dict("records"):
        key = store.CellKey(cell["task"], cell["algorithm"], cell["threshold"], cell["seed"], "smoke")
        episodes = [dict(checkpoint="final", episode=i, episode_seed=i, length=100, normalized_reward=cell["normalized_reward"],
                         normalized_cost=cell["normalized_cost"], **{"return": 1.0, "cost": 1.0}) for i in range(2)]
        curve = [dict(step=s, normalized_reward=cell["normalized_reward"] * s / 100, normalized_cost=1.0, **{"train/lambda": s / 50})
                 for s in (50, 100)]
        store.write_cell(tmp_path, store.CellRecord(key, cell["suite"], {}, "h", episodes, curve))


def test_report_command_writes_tables_plots_and_prints(tmp_path):
    write_store(tmp_path / "res", hand_cells())
    out = tmp_path / "out"
    result = runner.invoke(app, ["report", "--results", str(tmp_path / "res"), "--out", str(out), "--reps", "200"])
    assert result.exit_code == 0, result.output
    assert "Bullet-Safety-Gym Average" in result.output and "IQM" in result.output and "safe on 1/3" in result.output
    for name in ("table.md", "table.tex", "summary.txt", "aggregates.csv", "cells.csv"):
        assert (out / name).stat().st_size > 0
    for plot in ("reward_vs_cost", "method_bars", "learning_curves", "aggregates"):
        for ext in ("png", "pdf"):
            assert (out / f"{plot}.{ext}").stat().st_size > 5000, plot
    assert "***0.60***" in (out / "table.md").read_text()


def test_learning_curve_metric_choice():
    names = ["eval/normalized_cost", "eval/normalized_reward", "loss", "train/lambda"]
    assert report._curve_metric(names, "normalized_reward") == "eval/normalized_reward"
    assert report._curve_metric(names, "lambda") == "train/lambda"
    assert report._curve_metric(["loss"], "lambda") is None


def test_report_without_results_exit_2(tmp_path, capsys):
    code = main(["report", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "no results" in err and err.strip().count("\n") == 0
    code = main(["report", "--results", str(tmp_path), "--checkpoint", "last"])
    assert code == 2
