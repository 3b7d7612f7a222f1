"""Helpers to drive the labelling page in Debian's headless chromium (selenium): the browser test
(tests/test_labelling_browser.py) and the latency measurement (benchmarks/labelling_latency.py)."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def start_server(out: Path, cache: Path, questions: int, *extra: str) -> tuple[subprocess.Popen, str]:
    """`presa-bench label serve` as a child process; returns it and the URL it printed."""
    command = [
        sys.executable, "-m", "bench.cli", "label", "serve", "--task", "BallCircle", "--threshold", "20",
        "--queries", str(questions), "--annotator", "tester", "--out", str(out), "--port", "0", "--cache-dir", str(cache), *extra,
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


def browser(profile: Path):  # type: ignore[no-untyped-def]
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


def page(driver) -> dict:  # type: ignore[no-untyped-def]
    return driver.execute_script(
        "return {ready: document.body.dataset.ready, query: document.body.dataset.query,"
        " progress: document.getElementById('progress-text').textContent,"
        " images: Array.from(document.querySelectorAll('section:not(.hidden) figure img')).map(i => [i.getAttribute('src'), i.naturalWidth])};"
    )


def wait_for(driver, condition, what: str, timeout: float = 60):  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.02).until(lambda d: condition(page(d)), message=what)
    return page(driver)


def press(driver, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()
