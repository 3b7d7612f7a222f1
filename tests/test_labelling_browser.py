"""The labelling page in a real headless browser (Debian's chromium + chromedriver, via selenium):
answer 5 pairs and 5 safety questions with the keyboard (one of them undone and answered again),
kill the server (SIGKILL), restart it, find the 10 answers kept and the next question shown, then
train a short PreSa run on the file through `presa-bench run --labels`.

Needs ``apt-get install chromium chromium-driver`` (.ci/run does it). With
``PRESA_LABEL_SCREENSHOTS=DIR`` the test also saves screenshots of both question types and the
browser-measured times from an answer to the next question shown (docs/feedback.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from _browser import browser, page, press, start_server, wait_for
QUESTIONS = 20  # pairs (and as many safety questions): the scripted teacher's draws for --queries 20

pytestmark = pytest.mark.slow


def test_label_in_the_browser_kill_restart_resume_and_train(tmp_path):
    from selenium.webdriver.common.keys import Keys

    out, cache = tmp_path / "labels.csv", tmp_path / "frames"
    shots = Path(os.environ["PRESA_LABEL_SCREENSHOTS"]) if os.environ.get("PRESA_LABEL_SCREENSHOTS") else None
    driver = browser(tmp_path / "profile")  # first: a missing browser must not leave a server behind
    try:
        server, url = start_server(out, cache, QUESTIONS)
    except BaseException:
        driver.quit()
        raise
    try:
        driver.get(url)
        state = wait_for(driver, lambda p: p["ready"] == "1" and p["query"] == "p0", "the first question (p0) is shown")
        assert state["progress"].startswith(f"0 of {2 * QUESTIONS}") and len(state["images"]) == 2
        assert all(width > 0 for _, width in state["images"])  # both animations loaded
        if shots:
            shots.mkdir(parents=True, exist_ok=True)
            time.sleep(2.5)
            driver.save_screenshot(str(shots / "labelling-pair.png"))
        # pairs p0..p4 and safety s0..s4 alternate; keys: arrows / E for pairs, S / U for safety
        keys = [Keys.ARROW_LEFT, "s", Keys.ARROW_RIGHT, "u", "e", "s", Keys.ARROW_RIGHT, "u", Keys.ARROW_LEFT, "u"]
        expected = [0.0, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 0.0, 1.0]  # the last safety answer is undone and changed below
        for i, key in enumerate(keys):
            before = page(driver)["query"]
            assert before == ("p" if i % 2 == 0 else "s") + str(i // 2)
            if shots and before == "s0":
                time.sleep(2.5)  # a frame in the middle of the animation
                driver.save_screenshot(str(shots / "labelling-safety.png"))
            press(driver, key)
            wait_for(driver, lambda p, b=before: p["ready"] == "1" and p["query"] != b, f"the question after {before}")
        press(driver, "z")  # undo: s4 is asked again
        assert wait_for(driver, lambda p: p["ready"] == "1" and p["query"] == "s4", "undo brings s4 back")["progress"].startswith("9 of")
        press(driver, "s")
        state = wait_for(driver, lambda p: p["ready"] == "1" and p["query"] == "p5", "the question after s4")
        assert state["progress"].startswith("10 of")
        timings = driver.execute_script("return window.presaTimings")
        frame = pd.read_csv(out)
        assert len(frame) == 10 and frame["label"].tolist() == expected and set(frame["annotator"]) == {"tester"}

        server.send_signal(signal.SIGKILL)  # no shutdown, no flush: what a crash or a kill -9 does
        server.wait(timeout=30)
        server, url = start_server(out, cache, QUESTIONS)
        driver.get(url)
        state = wait_for(driver, lambda p: p["ready"] == "1" and p["query"] not in ("", None), "the page after the restart")
        assert state["query"] == "p5" and state["progress"].startswith(f"10 of {2 * QUESTIONS}")
        assert len(state["images"]) == 2 and all(width > 0 for _, width in state["images"])
        assert pd.read_csv(out)["label"].tolist() == expected
        if shots:
            (shots / "labelling-timings.json").write_text(json.dumps({"answer_to_next_question_ms": timings}, indent=1))
    finally:
        driver.quit()
        server.kill()
        server.wait(timeout=30)

    # the file trains unchanged: a (very short) PreSa run on it
    results = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", "--task", "BallCircle", "--algo", "presa", "--threshold", "20", "--labels", str(out),
         "--profile", "smoke", "--set", "train_steps=20", "--set", "warmup_steps=5", "--results", str(results)],
        capture_output=True, text=True, timeout=540,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    cells = pd.read_parquet(results / "meta")
    assert len(cells) == 1  # one cell (one meta row per cell)
    provenance = json.loads(cells["feedback_provenance_json"].iloc[0])
    assert provenance["source"] == "file" and provenance["num_pairs"] == 5 and provenance["num_safety_labels"] == 5
    assert provenance["annotators"] == ["tester"]
