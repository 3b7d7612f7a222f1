"""Time from an answer to the next question on the labelling page, measured in the browser.

Renders every question's animation into a fresh cache first ("once rendered"), starts
`presa-bench label serve --task BallCircle`, answers ``--answers`` questions with the keyboard in
headless chromium and prints the page's own timings (window.presaTimings: from the key press to the
next question's images decoded and shown; the POST, the journal fsync, the labels-file rewrite and
the image swap included). Run: ``.venv/bin/python benchmarks/labelling_latency.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import bench  # noqa: E402,F401
from _browser import browser, page, press, start_server, wait_for  # noqa: E402


def prerender(cache: Path, questions: int) -> float:
    from bench.data import load_task_dataset
    from bench.feedback import FeedbackSettings, dataset_hash, sample_queries
    from bench.labelling import render
    from bench.labelling.app import FrameCache
    from bench.tasks import get_task

    task = get_task("BallCircle")
    dataset = load_task_dataset(task)
    length, pe, ps, se, ss = sample_queries(dataset, 0, FeedbackSettings(num_queries=questions), task)
    frames = FrameCache(cache, dataset, render.geometry_for(task), dataset_hash(dataset))
    started = time.perf_counter()
    segments = list(zip(pe.ravel(), ps.ravel())) + list(zip(se, ss))
    for episode, start in segments:
        frames.get(int(episode), int(start), length)
    frames.close()
    return (time.perf_counter() - started) / len(segments)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=30, help="--queries of the page (as many safety questions)")
    parser.add_argument("--answers", type=int, default=40)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="presa-label-latency-"))
    per_segment = prerender(work / "frames", args.questions)
    server, url = start_server(work / "labels.csv", work / "frames", args.questions)
    driver = browser(work / "profile")
    try:
        driver.get(url)
        wait_for(driver, lambda p: p["ready"] == "1" and p["query"] == "p0", "the first question")
        for i in range(args.answers):
            before = page(driver)["query"]
            press(driver, "\ue012" if before.startswith("p") else "s")  # arrow left / S
            wait_for(driver, lambda p, b=before: p["ready"] == "1" and p["query"] != b, f"the question after {before}")
        timings = np.array(driver.execute_script("return window.presaTimings"), float)
    finally:
        driver.quit()
        server.kill()
        server.wait()
    result = {
        "answers": int(len(timings)), "median_ms": float(np.median(timings)), "p90_ms": float(np.percentile(timings, 90)),
        "max_ms": float(timings.max()), "render_s_per_segment": per_segment,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps({**result, "timings_ms": timings.tolist()}, indent=1))


if __name__ == "__main__":
    main()
