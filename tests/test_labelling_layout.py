"""The labelling page at 1280 x 720 (headless Chromium): every answer button of both question types is
above the fold with the largest picture the renderer draws; the counter gives the segment's total."""

from __future__ import annotations

import base64
import io

from PIL import Image

import bench  # noqa: F401
from _browser import browser
from bench.feedback import FeedbackSettings, dataset_hash, sample_queries
from bench.labelling import render
from bench.labelling.store import LabelStore, build_queries
from bench.tasks import get_task


def _page_html(sim_dataset, tmp_path) -> str:
    from bench.labelling.app import Context, FrameCache, create_app

    task = get_task("BallCircle")  # the circle view: the tallest picture (400 x 422)
    geometry = render.geometry_for(get_task("BallRun"))
    frames = FrameCache(tmp_path / "cache", sim_dataset, geometry, dataset_hash(sim_dataset))
    length, pe, ps, se, ss = sample_queries(sim_dataset, 0, FeedbackSettings(num_queries=2, num_safety_labels=1, segment_length=20),
                                            get_task("BallRun"))
    header = {"task": "BallRun", "dataset_hash": dataset_hash(sim_dataset), "dataset_path": str(sim_dataset.path), "threshold": 20.0,
              "seed": 0, "num_queries": 2, "num_safety_labels": 1, "segment_length": 20, "pair_sampling": "uniform"}
    store = LabelStore(tmp_path / "labels.csv", header, build_queries(pe, ps, se, ss, length), "alice")
    context = Context(task=task.name, threshold=20.0, segment_length=40, episode_length=task.episode_length, budget=4.0,
                      dataset=str(sim_dataset.path), rules=render.geometry_for(task).describe(), view="simulator replay, checked")
    try:
        return create_app(store, frames, context).test_client().get("/").get_data(as_text=True)
    finally:
        store.close()
        frames.close()


def test_answer_buttons_are_above_the_fold_at_1280x720(sim_dataset, tmp_path):
    page = tmp_path / "page.html"
    page.write_text(_page_html(sim_dataset, tmp_path))
    buffer = io.BytesIO()
    Image.new("RGB", (render.WIDTH, render.WIDTH + render.TOP), (120, 160, 200)).save(buffer, format="PNG")
    picture = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    driver = browser(tmp_path / "chromium")
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 720, "deviceScaleFactor": 1, "mobile": False})
        driver.get(page.as_uri())
        for section, slots in (("pair", ("left", "right")), ("safety", ("single",))):
            bottoms = driver.execute_script(
                """const [section, slots, src] = arguments;
                ["pair", "safety"].forEach((id) => document.getElementById(id).classList.toggle("hidden", id !== section));
                for (const slot of slots) { const img = new Image(); img.src = src; document.getElementById(slot).replaceChildren(img); }
                return Array.from(document.querySelectorAll(`#${section} button`)).map((b) => b.getBoundingClientRect().bottom);""",
                section, list(slots), picture)
            assert bottoms and max(bottoms) <= 720, (section, bottoms)
    finally:
        driver.quit()


def test_the_counter_gives_the_segments_total_on_every_frame():
    assert render.counter_text(3, 20, "cost so far", 1.0, 4.0) == "step 3/20   cost so far 1 / segment total 4"
