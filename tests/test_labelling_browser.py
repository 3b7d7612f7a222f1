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
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
QUESTIONS = 20  # pairs (and as many safety questions): the scripted teacher's draws for --queries 20

pytestmark = pytest.mark.slow


def _start_server(out: Path, cache: Path) -> tuple[subprocess.Popen, str]:
    """`presa-bench label serve` as a child process; returns it and the URL it printed."""
    command = [
        sys.executable, "-m", "bench.cli", "label", "serve", "--task", "BallCircle", "--threshold", "20",
        "--queries", str(QUESTIONS), "--annotator", "tester", "--out", str(out), "--port", "0", "--cache-dir", str(cache),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    seen = []
    while True:
        try:
            line = lines.get(timeout=120)
        except queue.Empty:
            proc.kill()
            raise AssertionError(f"the server printed no URL within 120 s: {''.join(seen)}") from None
        seen.append(line)
        match = re.search(r"labelling page: (http://127\.0\.0\.1:\d+/)", line)
        if match:
            return proc, match.group(1)
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}: {''.join(seen)}")


def _browser(profile: Path):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.fail("the browser test needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1100,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def _page(driver) -> dict:  # type: ignore[no-untyped-def]
    return driver.execute_script(
        "return {ready: document.body.dataset.ready, query: document.body.dataset.query,"
        " progress: document.getElementById('progress-text').textContent,"
        " images: Array.from(document.querySelectorAll('section:not(.hidden) figure img')).map(i => [i.getAttribute('src'), i.naturalWidth])};"
    )


def _wait_for(driver, condition, what: str, timeout: float = 60):  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.02).until(lambda d: condition(_page(d)), message=what)
    return _page(driver)


def _press(driver, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()


def test_label_in_the_browser_kill_restart_resume_and_train(tmp_path):
    from selenium.webdriver.common.keys import Keys

    out, cache = tmp_path / "labels.csv", tmp_path / "frames"
    shots = Path(os.environ["PRESA_LABEL_SCREENSHOTS"]) if os.environ.get("PRESA_LABEL_SCREENSHOTS") else None
    server, url = _start_server(out, cache)
    driver = _browser(tmp_path / "profile")
    try:
        driver.get(url)
        state = _wait_for(driver, lambda p: p["ready"] == "1" and p["query"] == "p0", "the first question (p0) is shown")
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
            before = _page(driver)["query"]
            assert before == ("p" if i % 2 == 0 else "s") + str(i // 2)
            if shots and before == "s0":
                time.sleep(2.5)  # a frame in the middle of the animation
                driver.save_screenshot(str(shots / "labelling-safety.png"))
            _press(driver, key)
            _wait_for(driver, lambda p, b=before: p["ready"] == "1" and p["query"] != b, f"the question after {before}")
        _press(driver, "z")  # undo: s4 is asked again
        assert _wait_for(driver, lambda p: p["ready"] == "1" and p["query"] == "s4", "undo brings s4 back")["progress"].startswith("9 of")
        _press(driver, "s")
        state = _wait_for(driver, lambda p: p["ready"] == "1" and p["query"] == "p5", "the question after s4")
        assert state["progress"].startswith("10 of")
        timings = driver.execute_script("return window.presaTimings")
        frame = pd.read_csv(out)
        assert len(frame) == 10 and frame["label"].tolist() == expected and set(frame["annotator"]) == {"tester"}

        server.send_signal(signal.SIGKILL)  # no shutdown, no flush: what a crash or a kill -9 does
        server.wait(timeout=30)
        server, url = _start_server(out, cache)
        driver.get(url)
        state = _wait_for(driver, lambda p: p["ready"] == "1" and p["query"] not in ("", None), "the page after the restart")
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
    cells = pd.read_parquet(results / "cells")
    assert cells["cell_id"].nunique() == 1  # one cell (a row per evaluation episode and checkpoint)
    provenance = json.loads(cells["feedback_provenance_json"].iloc[0])
    assert provenance["source"] == "file" and provenance["num_pairs"] == 5 and provenance["num_safety_labels"] == 5
    assert provenance["annotators"] == ["tester"]
