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
from bench.errors import BadInput

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


#: Per (threshold, seed): a spread over cells that averages out, the same for every method and task.
JITTER = {(10.0, 0): 0.05, (10.0, 10): -0.05, (10.0, 20): 0.0, (20.0, 0): -0.05, (20.0, 10): 0.05, (20.0, 20): 0.0}


def hand_cells(seeds: tuple[int, ...] = (0, 10, 20)) -> pd.DataFrame:
    rows = []
    for (task, suite, method), (r, c) in HAND.items():
        for threshold in (10.0, 20.0):
            for seed in seeds:
                # the cell means are exact, with a spread over cells that averages out
                jitter = JITTER[(threshold, seed)]
                rows.append(dict(cell_id=f"{task}-{method}-{threshold}-{seed}", task=task, suite=suite, algorithm=method,
                                 threshold=threshold, seed=seed, normalized_reward=r + jitter, normalized_cost=c - jitter,
                                 **{"return": 0.0, "cost": 0.0}))
    return pd.DataFrame(rows)


def test_table_marks_safe_unsafe_best_and_suite_averages():
    table = report.comparison_table(hand_cells())
    assert table.methods == ["presa", "bc-safe", "cdt"]  # the reference (presa) first, then alphabetical
    # cdt has no PointGoal1 cell: the Safety-Gymnasium average is over the tasks EVERY method has (none)
    assert [r.label for r in table.rows] == [
        "BallRun", "BallCircle", "Bullet-Safety-Gym Average", "PointGoal1", "Safety-Gymnasium Average (0 of 1 tasks)"]
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
    assert table.row("Safety-Gymnasium Average (0 of 1 tasks)").entries == {}
    assert any("left out: PointGoal1 (missing: cdt)" in note for note in table.footnotes)


def test_suite_average_is_over_the_tasks_every_method_has():
    cells = hand_cells()
    # drop bc-safe's BallRun cells: the Bullet average of EVERY method must then be BallCircle alone
    cells = cells[~((cells["task"] == "BallRun") & (cells["algorithm"] == "bc-safe"))]
    table = report.comparison_table(cells)
    avg = table.row("Bullet-Safety-Gym Average (1 of 2 tasks)").entries
    assert avg["presa"].reward == pytest.approx(0.70) and avg["presa"].cost == pytest.approx(1.20)  # not (0.6 + 0.7) / 2
    assert avg["cdt"].reward == pytest.approx(0.30)
    assert "bc-safe" not in table.row("BallRun").entries
    md = report.markdown_table(table)
    run_line = next(line for line in md.splitlines() if line.startswith("| BallRun"))
    assert run_line.count("missing") == 2  # bc-safe's reward and cost cells say so
    agg, tasks = report.aggregates(cells, reps=100)
    assert tasks == ["BallCircle"]


def test_markdown_latex_and_summary_carry_the_marks():
    table = report.comparison_table(hand_cells())
    md = report.markdown_table(table)
    run_line = next(line for line in md.splitlines() if line.startswith("| BallRun"))
    assert "***0.60***" in run_line and "**0.50**" in run_line and 'color:gray">0.90<' in run_line
    assert "| **Bullet-Safety-Gym Average** |" in md and "presa budget" in md
    tex = report.latex_table(table)
    assert r"\textcolor{blue}{\textbf{0.60}}" in tex and r"\textbf{0.50}" in tex and r"\textcolor{gray}{0.90}" in tex
    assert tex.count(r"\begin{tabular}") == 1 and r"\bottomrule" in tex and "bc-safe" in tex and "Budget" in tex
    summary = report.summary_text(table)
    assert "presa: safe on 1/3 tasks; best safe reward on 1 (BallRun)" in summary
    assert "bc-safe: safe on 2/3 tasks; best safe reward on 1 (BallCircle)" in summary
    assert "cdt: safe on 1/2 tasks; best safe reward on 0" in summary


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


def test_aggregates_over_common_tasks_with_safety_and_reference():
    agg, tasks = report.aggregates(hand_cells(), reps=200)
    assert tasks == ["BallCircle", "BallRun"]  # cdt did not run PointGoal1
    by = agg.set_index("method")
    assert by.loc["presa", "iqm_reward"] == pytest.approx(0.65)
    # PreSa's reward beats cdt on BallCircle (0.70 vs 0.30: all pairs) and loses on BallRun (0.60 vs 0.90)
    assert by.loc["cdt", "p_ref_higher_reward"] == pytest.approx(0.5) and by.loc["cdt", "reference"] == "presa"
    assert np.isnan(by.loc["presa", "p_ref_higher_reward"])
    # safe runs (normalized cost <= 1): presa BallRun 0.75/0.85 (4 of 4), BallCircle 1.15/1.25 (0 of 4)
    assert by.loc["presa", "safe_share"] == pytest.approx(0.5)
    assert by.loc["presa", "reward_if_safe"] == pytest.approx(0.60)  # the BallRun runs only
    # cdt: BallCircle 0.95 / 1.00 / 1.05 -> 4 of 6 safe; BallRun 1.45 / 1.50 / 1.55 -> none
    assert by.loc["cdt", "safe_share"] == pytest.approx(4 / 12)
    assert by.loc["cdt", "iqm_cost_low"] <= by.loc["cdt", "iqm_cost"] <= by.loc["cdt", "iqm_cost_high"]
    # any method can be the reference
    agg_b, _ = report.aggregates(hand_cells(), reference="bc-safe", reps=100)
    by_b = agg_b.set_index("method")
    assert agg_b["method"].iloc[0] == "bc-safe" and set(by_b["reference"]) == {"bc-safe"}
    # matched by (task, threshold, seed), the shared jitter cancels: bc-safe's cost is lower in every pair
    # (BallCircle 0.90 vs 1.00, BallRun 0.40 vs 1.50)
    assert by_b.loc["cdt", "p_ref_lower_cost"] == pytest.approx(1.0)
    assert by_b.loc["presa", "p_ref_lower_cost"] == pytest.approx(1.0)
    assert np.isnan(by_b.loc["bc-safe", "p_ref_lower_cost"])
    assert not any(c.startswith("p_presa") for c in agg_b.columns)


def test_probability_of_improvement_pairs_runs_by_task_threshold_and_seed():
    """PreSa beats bc-safe in every matched (task, threshold, seed) pair by 0.01, while thresholds and
    seeds move both by far more: pooling a task's cells would compare PreSa at k=10 with bc-safe at
    k=20 and seed 0 with seed 2 and report about 0.5."""
    rows = []
    for threshold, level in ((10.0, 0.2), (20.0, 0.8)):
        for seed in (0, 1, 2):
            base = level + 0.05 * seed
            for method, reward in (("presa", base + 0.01), ("bc-safe", base)):
                rows.append(dict(cell_id=f"{method}-{threshold}-{seed}", task="BallRun", suite="bullet", algorithm=method,
                                 threshold=threshold, seed=seed, normalized_reward=reward, normalized_cost=0.5,
                                 **{"return": 0.0, "cost": 0.0}))
    cells = pd.DataFrame(rows)
    agg, _ = report.aggregates(cells, reps=200)
    row = agg.set_index("method").loc["bc-safe"]
    assert row["p_ref_higher_reward"] == pytest.approx(1.0) and row["p_ref_higher_reward_low"] == pytest.approx(1.0)
    assert row["strata"] == 2 and row["seeds"] == 3
    xs, ys = report.matched_columns(cells, "presa", "bc-safe", "normalized_reward", [("BallRun", 10.0), ("BallRun", 20.0)])
    assert stats.paired_probability_of_improvement(xs, ys) == pytest.approx(1.0)
    assert stats.probability_of_improvement([np.concatenate(xs)], [np.concatenate(ys)]) < 0.6  # what pooling said
    # a run without a partner (seed 3 of presa only) is not compared
    extra = pd.DataFrame([dict(rows[0], cell_id="presa-extra", seed=3, normalized_reward=-5.0)])
    agg_extra, _ = report.aggregates(pd.concat([cells, extra], ignore_index=True), reps=50)
    assert agg_extra.set_index("method").loc["bc-safe", "p_ref_higher_reward"] == pytest.approx(1.0)


def test_below_three_seeds_no_interval_probability_or_best_and_the_table_says_why(tmp_path):
    one = hand_cells(seeds=(0,))
    agg, _ = report.aggregates(one, reps=100)
    assert (agg["seeds"] == 1).all()
    for name in ("iqm_reward", "iqm_cost", "safe_share", "reward_if_safe"):
        assert agg[f"{name}_low"].isna().all() and agg[f"{name}_high"].isna().all() and agg[name].notna().any()
    assert agg["p_ref_higher_reward"].isna().all() and agg["p_ref_lower_cost"].isna().all()
    table = report.comparison_table(one)
    assert not any(e.best for r in table.rows for e in r.entries.values())
    assert table.row("BallRun").entries["presa"].seeds == 1
    md = report.markdown_table(table)
    assert "presa n |" in md and "n < 3 seeds: no intervals" in md and "***0." not in md
    summary = report.summary_text(table)
    assert "best safe method" not in summary and "no best method named: n < 3 seeds" in summary
    write_store(tmp_path / "res", one)
    result = runner.invoke(app, ["report", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "out"), "--reps", "50",
                                 "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "[" not in "".join(line for line in result.output.splitlines() if line.startswith("│ presa"))
    # three seeds: intervals and the best method are back
    table3 = report.comparison_table(hand_cells())
    assert table3.row("BallRun").entries["presa"].best and table3.row("BallRun").entries["presa"].seeds == 3


def test_not_converged_rule_on_the_stored_curve():
    """Below the published budget a cell is converged only when its evaluation curve is flat over the
    last 20% of its steps; at the published budget it is converged whatever its curve."""
    def curve(cell_id: str, rewards: list[float]) -> pd.DataFrame:
        steps = np.arange(1, len(rewards) + 1) * 100
        rows = [dict(cell_id=cell_id, step=s, source="eval", metric=m, value=v)
                for s, r in zip(steps, rewards) for m, v in (("normalized_reward", r), ("normalized_cost", 0.5))]
        return pd.DataFrame(rows)

    curves = pd.concat([curve("flat", [0.1, 0.5, 0.6, 0.62, 0.63]), curve("rising", [0.1, 0.2, 0.3, 0.4, 0.5]),
                        curve("one", [0.5]), curve("paper", [0.1, 0.2, 0.3, 0.4, 0.5])])
    assert report.curve_flat(curves[curves["cell_id"] == "flat"])
    assert not report.curve_flat(curves[curves["cell_id"] == "rising"])  # +0.1 over the last 20%
    assert not report.curve_flat(curves[curves["cell_id"] == "one"])  # one evaluation cannot show it
    cells = pd.DataFrame(dict(cell_id=["flat", "rising", "one", "paper", "none"], paper_share=[0.02, 0.02, 0.02, 1.0, 0.5]))
    assert report.with_convergence(cells, curves)["converged"].tolist() == [True, False, False, True, False]


#: A budget record as a sweep stores it (bench.sweep.budget_for), per method.
BUDGETS = {
    "presa": dict(steps_key="train_steps", batch_key="batch_size", unit="pairs", paper_steps=100_000, paper_batch=96,
                  paper_source="TraC"),
    "bc-safe": dict(steps_key="update_steps", batch_key="batch_size", unit="transitions", paper_steps=100_000,
                    paper_batch=512, paper_source="OSRL"),
    "cdt": dict(steps_key="update_steps", batch_key="batch_size", unit="sequences", paper_steps=100_000,
                paper_batch=2048, paper_source="OSRL"),
}
PLANNED = {"presa": 2000, "bc-safe": 3000, "cdt": 2000}


def write_store(results, cells: pd.DataFrame, profile: str = "smoke", protocol: str = "bullet", shift: float = 0.0,
                feedback: str | None = None) -> None:
    """Store hand-made cells through the real writer, with budgets as a sweep records them: cdt is
    capped on CPU (1,000 of 2,000 steps, batch 64 of 2,048, with the trainer's note)."""
    for cell in cells.to_dict("records"):
        method = cell["algorithm"]
        tag = feedback or ("q10000" if method == "presa" else "none")
        key = store.CellKey(cell["task"], method, cell["threshold"], cell["seed"], profile, tag, protocol)
        capped = method == "cdt"
        steps = 1000 if capped else PLANNED[method]
        info = {"planned_steps": PLANNED[method], "budget_reduced_for_cpu": capped}
        if capped:
            info.update(batch_size=64, budget_note="cdt: 2000 steps need a GPU; running 1000 steps on CPU")
        config = {"algorithm_config": {"batch_size": 32 if method == "presa" else (2048 if capped else 512)},
                  "budget": {"protocol": protocol, "planned_steps": PLANNED[method], **BUDGETS[method]}}
        r, c = cell["normalized_reward"] + shift, cell["normalized_cost"]
        episodes = [dict(checkpoint=kind, episode=i, episode_seed=i, length=100, normalized_reward=r - (0.1 if kind == "best" else 0),
                         normalized_cost=c, **{"return": 1.0, "cost": 1.0}) for kind in ("final", "best") for i in range(2)]
        # cdt's curve still climbs at its end (not converged), the others' are flat over their last 20%
        curve = [dict(step=s, normalized_reward=r * s / steps if capped else r, normalized_cost=c, **{"train/lambda": s / 50})
                 for s in range(steps // 5, steps + 1, steps // 5)]
        store.write_cell(results, store.CellRecord(key, cell["suite"], config, "h", episodes, curve, steps=steps,
                                                   info=info, dataset_path="/data/dsrl/x.hdf5", dataset_hash="d1"))


def test_report_command_writes_tables_plots_and_budgets(tmp_path):
    write_store(tmp_path / "res", hand_cells())
    out = tmp_path / "out"
    result = runner.invoke(app, ["report", "--results", str(tmp_path / "res"), "--out", str(out), "--reps", "200"])
    assert result.exit_code == 0, result.output
    assert "Bullet-Safety-Gym Average" in result.output and "IQM" in result.output and "safe on 1/3" in result.output
    assert "Budget protocol bullet" in result.output and "safe runs" in result.output
    for name in ("table.md", "table.tex", "summary.txt", "aggregates.csv", "cells.csv"):
        assert (out / name).stat().st_size > 0
    for plot in ("reward_vs_cost", "threshold_bars", "learning_curves", "performance_profiles", "aggregates"):
        for ext in ("png", "pdf"):
            assert (out / f"{plot}.{ext}").stat().st_size > 5000, plot
    md = (out / "table.md").read_text()
    assert "Budget protocol bullet" in md
    assert "PLUMBING CHECK ONLY: profile smoke" in md and "| presa n |" in md
    run_line = next(line for line in md.splitlines() if line.startswith("| BallRun"))
    # steps x batch (share of the published steps x batch), dagger = capped
    assert "2,000×32 (0.67%) |" in run_line and "3,000×512 (3%) |" in run_line and "1,000×64 (0.031%)†, not converged" in run_line
    # cdt has not converged: no best method in its rows, a footnote gives the rule, the summary no verdict on it
    assert "***" not in run_line and "not converged: below the published budget" in md
    summary = (out / "summary.txt").read_text()
    assert "cdt: safe on 0/0 converged tasks; best safe reward on 0; not converged on BallRun, BallCircle" in summary
    assert "† cdt (12 cells): cdt: 2000 steps need a GPU; running 1000 steps on CPU" in md
    assert "Published budgets: presa 100,000×96 pairs [TraC]" in md
    cells = pd.read_csv(out / "cells.csv")
    assert set(cells["checkpoint"]) == {"final", "best"} and {"batch", "paper_share", "capped", "budget"} <= set(cells.columns)


def test_two_profiles_in_one_store_give_two_tables_never_one_average(tmp_path):
    res = tmp_path / "res"
    write_store(res, hand_cells(), profile="smoke")
    write_store(res, hand_cells(), profile="quick", shift=0.2)
    out = tmp_path / "out"
    result = runner.invoke(app, ["report", "--results", str(res), "--out", str(out), "--reps", "100", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "2 tables" in result.output and "--where profile=quick" in result.output and "--where profile=smoke" in result.output
    built = report.build_report(res, out, reps=100, plots=False)
    by_profile = {g.group.profile: g.table for g in built.groups}
    assert sorted(by_profile) == ["quick", "smoke"]
    assert by_profile["smoke"].row("BallRun").entries["presa"].reward == pytest.approx(0.60)
    assert by_profile["quick"].row("BallRun").entries["presa"].reward == pytest.approx(0.80)  # never (0.6 + 0.8) / 2
    index = (out / "index.md").read_text()
    assert index.count("--where profile=") == 2
    assert all((g.out_dir / "table.md").is_file() for g in built.groups)
    # --where selects one: one table, that profile's numbers
    one = report.build_report(res, tmp_path / "one", reps=100, plots=False, where=["profile=quick"])
    assert len(one.groups) == 1 and one.table.row("BallRun").entries["presa"].reward == pytest.approx(0.80)
    with pytest.raises(BadInput, match="mix profiles"):
        report.comparison_table(report.cell_scores(store.load_results(res)))


def test_protocols_and_feedback_settings_split_tables_and_no_feedback_methods_join_each(tmp_path):
    res = tmp_path / "res"
    cells = hand_cells()
    write_store(res, cells, protocol="bullet")
    write_store(res, cells, protocol="equal-steps=2000")
    # a second feedback setting of presa under the bullet protocol
    write_store(res, cells[cells["algorithm"] == "presa"], protocol="bullet", feedback="q2000", shift=0.1)
    built = report.build_report(res, tmp_path / "out", reps=100, plots=False)
    keys = sorted((g.group.budget, g.group.feedback) for g in built.groups)
    assert keys == [("bullet", "q10000"), ("bullet", "q2000"), ("equal-steps=2000", "q10000")]
    for g in built.groups:  # the methods without feedback (bc-safe, cdt) are in every table
        assert g.table.methods == ["presa", "bc-safe", "cdt"]
        assert "feedback " + g.group.feedback in g.table.header()
    q2000 = next(g for g in built.groups if g.group.feedback == "q2000")
    assert q2000.table.row("BallRun").entries["presa"].reward == pytest.approx(0.70)
    equal = next(g for g in built.groups if g.group.budget.startswith("equal"))
    assert "2,000 gradient steps for every method" in equal.table.header()


def test_reference_option_and_checkpoint_labels(tmp_path):
    res = tmp_path / "res"
    write_store(res, hand_cells())
    out = tmp_path / "out"
    result = runner.invoke(app, ["report", "--results", str(res), "--out", str(out), "--reps", "100", "--no-plots",
                                 "--reference", "bc-safe"])
    assert result.exit_code == 0, result.output
    assert "P(bc-safe reward higher)" in result.output and "P(presa" not in result.output
    agg = pd.read_csv(out / "aggregates.csv")
    assert agg["method"].iloc[0] == "bc-safe" and "p_ref_lower_cost" in agg
    best = report.build_report(res, tmp_path / "best", checkpoint="best", reps=100, plots=False)
    assert "online-selected best checkpoint" in best.table.header()
    assert best.table.row("BallRun").entries["presa"].reward == pytest.approx(0.50)  # the best episodes: 0.1 lower
    assert "final checkpoint" in report.build_report(res, tmp_path / "final", reps=100, plots=False).table.header()


def test_report_bad_where_and_reference_exit_2(tmp_path, capsys):
    write_store(tmp_path, hand_cells())
    for argv, message in (
        (["--where", "colour=red"], "unknown --where key 'colour'"),
        (["--where", "profile"], "bad --where 'profile'"),
        (["--where", "profile=paper"], "no cells match --where profile=paper"),
        (["--reference", "nope"], "--reference nope has no cells here"),
    ):
        code = main(["report", "--results", str(tmp_path), "--no-plots", "--reps", "10", *argv])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.strip().count("\n") == 0, err


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


def test_bc_runs_its_published_budget_under_the_bullet_protocol():
    """BC costs minutes at OSRL's 100,000 x 512: the bullet protocol (and paper) run it in full."""
    from bench.sweep import load_budgets

    table = load_budgets()
    for method in ("bc-all", "bc-safe"):
        paper = table["algorithms"][method]["paper"]
        assert table["protocols"]["bullet"][method] == paper["steps"] == 100_000 and paper["batch"] == 512


def test_cell_budget_of_a_record_without_a_protocol_reads_the_shipped_table():
    from bench.sweep import load_budgets

    table = load_budgets()
    b = report.cell_budget("bc-safe", 500, {"algorithm_config": {"batch_size": 512}}, {}, table)
    assert b["budget"] == "unstated" and (b["paper_steps"], b["paper_batch"]) == (100_000, 512)
    assert b["paper_share"] == pytest.approx(500 / 100_000) and not b["capped"]
    # a cap recorded by the trainer: fewer steps than planned, its own note
    capped = report.cell_budget("bcq-lag", 1000, {"algorithm_config": {"batch_size": 512}},
                                {"planned_steps": 4000, "budget_note": "needs a GPU"}, table)
    assert capped["capped"] and capped["cap_note"] == "needs a GPU" and capped["planned_steps"] == 4000
    # a smaller batch than configured (CDT on CPU) is a cap too, with a note made from the record
    cdt = report.cell_budget("cdt", 10, {"algorithm_config": {"batch_size": 2048}}, {"batch_size": 64}, table)
    assert cdt["capped"] and cdt["batch"] == 64 and "batch 64 instead of 2048" in cdt["cap_note"]


def _drawn(monkeypatch) -> list[dict]:
    """Record what each plot function draws instead of saving it: its texts, size and axis limits."""
    import matplotlib

    matplotlib.use("Agg")
    seen: list[dict] = []

    def record(fig, out_dir, name):
        texts = [t.get_text() for t in fig.texts] + [t.get_text() for ax in fig.axes for t in ax.texts]
        texts += [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        seen.append(dict(name=name, texts=" ".join(" | ".join(texts).split()), width=fig.get_size_inches()[0],
                         limits=[(ax.get_xlim(), ax.get_ylim()) for ax in fig.axes if ax.axison],
                         fonts=[t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]))
        return []

    monkeypatch.setattr(report, "_save", record)
    return seen


def test_figures_state_profile_budget_n_and_fit_a_paper_column(tmp_path, monkeypatch):
    """Every figure's caption gives the profile, the budget and n; at n = 1 it draws no error bar and
    says so; widths fit a page (<= 7 in), fonts are >= 8 pt, the reward axis spans at least [0, 1]
    and the cost axis the threshold; methods without a safe run keep their row, marked."""
    import matplotlib.pyplot as plt

    seen = _drawn(monkeypatch)
    one = report.with_group_columns(hand_cells(seeds=(0,)))
    one.loc[one["algorithm"] == "cdt", "normalized_cost"] += 1.0  # cdt: no safe run anywhere
    close = one[one["task"] == "BallRun"].assign(normalized_reward=lambda f: 0.40 + 0.01 * f["seed"])
    with plt.rc_context(report.PAPER_RC):
        report.plot_reward_cost(close, tmp_path)
        report.plot_threshold_bars(close, tmp_path)
        agg, tasks = report.aggregates(one, reps=50)
        report.plot_aggregates(agg, tmp_path, context=report.FigureContext.of(one))
        report.plot_performance_profiles(one, tmp_path, tasks, reps=50)
    assert [s["name"] for s in seen] == ["reward_vs_cost", "threshold_bars", "aggregates", "performance_profiles"]
    for figure in seen:
        assert "Profile unknown" in figure["texts"] and "Budget protocol unstated" in figure["texts"], figure["name"]
        assert "n = 1 seed per (task, threshold); no error bars: n < 3 seeds" in figure["texts"], figure["name"]
        assert figure["width"] <= report.PAPER_WIDTH and min(figure["fonts"]) >= 8, figure["name"]
    (x_limits, y_limits), = seen[0]["limits"]
    assert y_limits[0] <= 0.0 and y_limits[1] >= 1.0 and x_limits[0] <= 0.0 and x_limits[1] >= 1.0
    assert "threshold" in seen[0]["texts"] and "one run, κ=10" in seen[0]["texts"] and "mean over runs" in seen[0]["texts"]
    # cdt has no safe run: its row is still drawn, marked
    by = agg.set_index("method")
    assert np.isnan(by.loc["cdt", "reward_if_safe"]) and "no safe run" in seen[2]["texts"]


def test_learning_curves_warn_when_methods_trained_for_different_steps(tmp_path, monkeypatch):
    seen = _drawn(monkeypatch)

    def curve(method: str, steps: int) -> list[dict]:
        return [dict(cell_id=f"{method}-{seed}", task="BallRun", algorithm=method, source="eval", metric=metric,
                     step=s, value=0.5, seed=seed, threshold=20.0)
                for seed in (0, 1, 2) for s in range(steps // 4, steps + 1, steps // 4)
                for metric in ("eval/normalized_reward", "eval/normalized_cost")]

    report.plot_learning_curves(pd.DataFrame(curve("presa", 1000) + curve("bc-safe", 1000)), tmp_path)
    report.plot_learning_curves(pd.DataFrame(curve("presa", 1000) + curve("bc-safe", 2000)), tmp_path)
    assert "different numbers of steps" not in seen[0]["texts"]
    assert "Warning: methods trained for different numbers of steps share an axis (BallRun: bc-safe 2,000, presa 1,000)" in seen[1]["texts"]
