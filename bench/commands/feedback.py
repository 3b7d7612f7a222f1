"""`presa-bench feedback ...`: make synthetic feedback, import people's labels, inspect a feedback file.

Files written here are parquet tables in the labels schema of docs/feedback.md with the provenance
(dataset path and hash, task, threshold, teacher settings, seed, versions) in their metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(help="Preference pairs and safety labels on dataset segments: make, import, inspect.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="feedback")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_table(feedback: Any, title: str):  # type: ignore[no-untyped-def]
    """A two-column rich table of `FeedbackSet.summary()` plus where the feedback came from."""
    from rich.table import Table

    summary = feedback.summary()
    provenance = feedback.provenance
    dataset = provenance.get("dataset") or {}
    rows: list[tuple[str, Any]] = [
        ("source", summary["source"]),
        ("task", summary["task"]),
        ("threshold kappa", summary["threshold"]),
        ("safety budget kappa*H/T", provenance.get("safety_budget")),
        ("segment length H", summary["segment_length"]),
        ("dataset", f"{dataset.get('path')} ({dataset.get('hash')}, {dataset.get('episodes')} episodes)"),
        ("seed", provenance.get("seed")),
        ("preference pairs", summary["num_pairs"]),
        ("  second preferred (1)", summary["pairs_second_preferred"]),
        ("  first preferred (0)", summary["pairs_first_preferred"]),
        ("  equal (0.5)", summary["pairs_equal"]),
        ("safety labels", summary["num_safety_labels"]),
        ("  fraction safe", summary["fraction_safe"]),
        ("episodes covered", summary["episodes_covered"]),
    ]
    if "pair_agreement" in summary:
        rows += [
            ("pair agreement with ground truth", summary["pair_agreement"]),
            ("  on pairs not tied in the truth", summary["pair_agreement_strict"]),
        ]
    if "safety_agreement" in summary:
        rows += [
            ("safety agreement with ground truth", summary["safety_agreement"]),
            ("  fraction safe in the truth", summary["fraction_safe_in_truth"]),
        ]
    settings = provenance.get("settings")
    if settings:
        rows.append(("teacher settings", ", ".join(f"{k}={v}" for k, v in settings.items())))
    if provenance.get("labels_file"):
        rows.append(("labels file", f"{provenance['labels_file']} ({provenance.get('labels_hash')})"))
    for name, counts in (provenance.get("annotator_counts") or {}).items():
        rows.append((f"annotator {name}", f"{counts['preference']} pairs, {counts['safety']} safety labels"))
    for entry in provenance.get("annotator_agreement") or []:
        first, second = entry["annotators"]
        what = "pairs" if entry["kind"] == "preference" else "safety"
        rows.append((
            f"agreement {first} / {second} ({what})",
            f"{entry['shared']} shared, agree {_fmt(entry['agreement'])}, Cohen's kappa {_fmt(entry['kappa'])}",
        ))
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, _fmt(value))
    return table


def _middle_threshold(task: Any, threshold: Optional[float]) -> float:
    return float(threshold) if threshold is not None else task.middle_threshold


@app.command("make")
def make_cmd(
    task: str = typer.Option(..., "--task", help="DSRL task, e.g. BallCircle."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Cost threshold kappa (default: the task's middle one, as `run`)."),
    queries: int = typer.Option(10_000, "--queries", help="Preference pairs (PreSa: about 10,000)."),
    safety_labels: Optional[int] = typer.Option(None, "--safety-labels", help="Labelled segments (default: as many as --queries)."),
    segment_length: Optional[int] = typer.Option(None, "--segment-length", help="H in steps (default: 20% of the episode length)."),
    pair_sampling: str = typer.Option("uniform", "--pair-sampling", help="uniform or disjoint-episodes."),
    flip: float = typer.Option(0.0, "--flip", help="Noise: flip each strict preference with this probability (B-Pref mistake teacher)."),
    bt_temperature: float = typer.Option(0.0, "--bt-temperature", help="Noise: Bradley-Terry teacher temperature, in units of the average segment return (0 = rational)."),
    equal_band: float = typer.Option(0.0, "--equal-band", help="Noise: label 0.5 when |reward difference| <= this times the average segment return."),
    safety_flip: float = typer.Option(0.0, "--safety-flip", help="Noise: flip each safety label with this probability."),
    seed: int = typer.Option(0, "--seed", help="Seed of the segment draws and the noise."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Dataset file or directory (default: the standard lookup)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output parquet file (default: feedback-<task>-k<K>-q<N>-s<seed>.parquet)."),
) -> None:
    """Label dataset segments with PreSa's scripted teacher (optionally noisy) and save them."""
    import time

    from bench.console import console
    from bench.data import load_task_dataset
    from bench.feedback import FeedbackSettings, make_feedback
    from bench.tasks import get_task

    t = get_task(task)
    kappa = _middle_threshold(t, threshold)
    settings = FeedbackSettings(
        num_queries=queries, num_safety_labels=safety_labels, segment_length=segment_length, pair_sampling=pair_sampling,
        flip_prob=flip, bt_temperature=bt_temperature, equal_band=equal_band, safety_flip_prob=safety_flip,
    )
    settings.validate()  # before the (slow) dataset load
    ds = load_task_dataset(t, dataset)
    started = time.perf_counter()
    feedback = make_feedback(ds, kappa, seed, settings, t)
    seconds = time.perf_counter() - started
    path = out or Path(f"feedback-{t.name}-k{kappa:g}-q{queries}-s{seed}.parquet")
    feedback.save(path)
    console().print(summary_table(feedback, f"feedback for {t.name} (made in {seconds:.2f} s)"))
    console().print(f"wrote {path}")


@app.command("import")
def import_cmd(
    file: Path = typer.Argument(..., help="Labels file (.csv or .parquet; schema in docs/feedback.md)."),
    task: str = typer.Option(..., "--task", help="DSRL task the labels are for."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Dataset file or directory the labels refer to."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Cost threshold kappa: only to compare the safety labels with the ground truth."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output parquet file (default: <file>.feedback.parquet next to the input)."),
) -> None:
    """Validate people's labels against the dataset and save them as a feedback file."""
    from bench.console import console
    from bench.data import load_task_dataset
    from bench.feedback import import_labels
    from bench.tasks import get_task

    t = get_task(task)
    ds = load_task_dataset(t, dataset)
    feedback = import_labels(file, ds, t, threshold)
    path = out or file.with_name(f"{file.stem}.feedback.parquet")
    feedback.save(path)
    console().print(summary_table(feedback, f"labels from {file.name}: valid"))
    console().print(f"wrote {path}")


@app.command("info")
def info_cmd(
    file: Path = typer.Argument(..., help="A feedback file written by `feedback make` or `feedback import`."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary and provenance as JSON."),
) -> None:
    """Counts, fraction safe, label balance and agreement with the ground truth of a feedback file."""
    import json

    from bench.console import console
    from bench.feedback import FeedbackSet

    feedback = FeedbackSet.load(file)
    if as_json:
        typer.echo(json.dumps({"summary": feedback.summary(), "provenance": feedback.provenance}, indent=2, sort_keys=True))
        return
    console().print(summary_table(feedback, f"feedback file {file}"))
