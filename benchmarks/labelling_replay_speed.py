"""Seconds per segment of the labelling page's simulator-replay view, on the shipped datasets.

For each task, the first ``--segments`` segments of the pair questions `label serve --seed 0`
would ask are rendered with `FrameCache.render_segment` (replay from the episode's recorded seed
up to the segment's end, the check against the stored observations, the frames, the GIF) into a
throwaway cache; prints the seconds per segment, the view each segment got (a failed check shows
as the path view) and the GIF size. Run:
``nice -n 10 .venv/bin/python benchmarks/labelling_replay_speed.py CarRun CarCircle AntRun``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import bench  # noqa: F401  (compat patches first)
from bench.data import load_task_dataset
from bench.feedback import FeedbackSettings, dataset_hash, sample_queries
from bench.labelling import render
from bench.labelling.app import FrameCache
from bench.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="+")
    parser.add_argument("--segments", type=int, default=4)
    args = parser.parse_args()
    for name in args.tasks:
        task = get_task(name)
        ds = load_task_dataset(task, None)
        length, pe, ps, _, _ = sample_queries(ds, 0, FeedbackSettings(num_queries=(args.segments + 1) // 2, num_safety_labels=0), task)
        with tempfile.TemporaryDirectory() as cache:
            frames = FrameCache(cache, ds, render.geometry_for(task), dataset_hash(ds))
            times, views, size = [], [], 0
            for e, s in list(zip(pe.ravel(), ps.ravel()))[: args.segments]:
                t0 = time.perf_counter()
                data, view = frames.render_segment(int(e), int(s), length)
                times.append(time.perf_counter() - t0)
                views.append(view)
                size = len(data)
            frames.close()
        print(f"{name}: H {length}, s/segment {[round(t, 2) for t in times]}, views {sorted(set(views))}, "
              f"mismatches {len(frames.mismatches)}, last GIF {size // 1024} KB", flush=True)


if __name__ == "__main__":
    main()
