"""Simulator frames of a segment, replayed from the file's recorded episode seed and actions.

Files collected by `presa-bench data collect` carry an HDF5 group ``replay`` (bench/collect.py,
``REPLAY_GROUP``) with each episode's ``episode_seed`` and ``episode_start``. An episode replays
exactly in a FRESH simulator reset by ``reset_for_replay(env, seed)`` and stepped with the stored
float32 actions (tests/test_collect.py). `replay_segment` does that up to the segment's end,
grabs an offscreen rgb_array frame (PyBullet's software renderer; the camera follows the agent) at
the segment's start and after each of its steps, and CHECKS every replayed observation of the
episode so far against the stored one: a difference above ``TOLERANCE`` raises `ReplayMismatch`
and the caller shows the top-down path instead (and says so).

bullet-safety-gym seeds its start state from numpy's global RNG, so replays are serialised by a
process-wide lock (the render pool may run several threads).
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.labelling.render import counter_text

#: Largest |replayed - stored| observation difference accepted (stored as float32: ~1e-6 off).
TOLERANCE = 1e-4
#: Frame size in pixels and the camera (PyBullet yaw/pitch in degrees, distance in metres).
FRAME_WIDTH, FRAME_HEIGHT = 240, 180
CAMERA_DISTANCE, CAMERA_PITCH, CAMERA_YAW = 6.0, -60.0, 0.0
#: A white strip above the frame for the step counter.
TOP = 20

_LOCK = threading.Lock()


class ReplayMismatch(Exception):
    """The replayed episode left the stored observations (the file cannot be replayed faithfully)."""

    def __init__(self, step: int, difference: float) -> None:
        super().__init__(f"replay differs from the stored observations by {difference:.3g} at episode step {step} (tolerance {TOLERANCE:g})")
        self.step = step
        self.difference = difference


@dataclass(frozen=True)
class ReplayIndex:
    """Each episode's seed and first transition, from the file's ``replay`` group."""

    seeds: np.ndarray
    starts: np.ndarray

    @classmethod
    def read(cls, path: Path | str | None, episode_starts: np.ndarray) -> "ReplayIndex | None":
        """The file's replay group, or None when it has none (or one that does not fit its episodes)."""
        if path is None or not Path(path).is_file():
            return None
        import h5py

        from bench.collect import REPLAY_GROUP

        try:
            with h5py.File(path, "r") as f:
                if REPLAY_GROUP not in f:
                    return None
                seeds = np.asarray(f[REPLAY_GROUP]["episode_seed"][()], np.int64)
                starts = np.asarray(f[REPLAY_GROUP]["episode_start"][()], np.int64)
        except (OSError, KeyError):
            return None
        if seeds.shape != starts.shape or not np.array_equal(starts, np.asarray(episode_starts, np.int64)):
            return None
        return cls(seeds, starts)


def _frame(env: Any) -> np.ndarray:
    """One offscreen frame, the camera looking down at the agent from behind (-y side)."""
    u = env.unwrapped
    x, y = (float(v) for v in u.agent.get_position()[:2])
    cam = u.world.camera
    cam.render_width, cam.render_height = FRAME_WIDTH, FRAME_HEIGHT
    cam.cam_base_pos, cam.cam_dist, cam.cam_pitch, cam.cam_yaw = (x, y, 0.0), CAMERA_DISTANCE, CAMERA_PITCH, CAMERA_YAW
    # the agent's cost-display sphere is meant near-transparent, but the offscreen (software)
    # renderer draws it opaque red over the agent: park it below the floor for the shot (it has no
    # mass or collision shape and the agent moves it back on its next step; the check on the
    # following observations would catch any effect on the physics)
    u.bc.resetBasePositionAndOrientation(u.agent.violation_body_id, (x, y, -20.0), (0, 0, 0, 1))
    # the raw env's own rgb_array path (its render(mode=...) predates gymnasium's render_mode)
    return np.asarray(u.render(mode="rgb_array"), np.uint8)


def replay_segment(task: Any, seed: int, observations: np.ndarray, next_observations: np.ndarray, actions: np.ndarray, offset: int, length: int) -> tuple[list[np.ndarray], float]:
    """Frames (``length + 1``, each FRAME_HEIGHT x FRAME_WIDTH x 3 uint8) of the segment starting
    ``offset`` steps into an episode whose stored arrays are given from its first step on; and the
    largest observation difference seen. Raises ReplayMismatch past TOLERANCE."""
    from bench.collect import reset_for_replay
    from bench.envs import make_env

    frames: list[np.ndarray] = []
    worst = 0.0

    def check(obs: np.ndarray, stored: np.ndarray, step: int) -> None:
        nonlocal worst
        diff = float(np.max(np.abs(np.asarray(obs, np.float64) - np.asarray(stored, np.float64))))
        worst = max(worst, diff)
        if not diff <= TOLERANCE:  # NaN fails too
            raise ReplayMismatch(step, diff)

    with _LOCK:
        env = make_env(task)
        try:
            check(reset_for_replay(env, int(seed)), observations[0], 0)
            if offset == 0:
                frames.append(_frame(env))
            for t in range(offset + length):
                obs = env.step(np.asarray(actions[t], np.float32).astype(np.float64))[0]
                check(obs, next_observations[t], t + 1)
                if t + 1 < len(observations):  # the next transition's stored start state too
                    check(obs, observations[t + 1], t + 1)
                if t + 1 >= offset:
                    frames.append(_frame(env))
        finally:
            env.close()
    return frames, worst


def replay_gif(frames: list[np.ndarray], costs: np.ndarray, frame_ms: int, end_pause_ms: int) -> bytes:
    """An animated GIF of replayed frames with a step counter and the stored cost so far / the segment's total."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=12)
    steps = len(frames) - 1
    total = float(np.sum(costs[:steps]))
    images = []
    for k, array in enumerate(frames):
        image = Image.new("RGB", (array.shape[1], array.shape[0] + TOP), (255, 255, 255))
        image.paste(Image.fromarray(array), (0, TOP))
        cost = float(np.sum(costs[:k]))
        ImageDraw.Draw(image).text((4, 3), counter_text(k, steps, "cost so far", cost, total), fill=(220, 30, 30) if k and costs[k - 1] > 0 else (0, 0, 0), font=font)
        images.append(image)
    palette = images[len(images) // 2].quantize(colors=128, dither=Image.Dither.NONE)
    images = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=[frame_ms] * steps + [end_pause_ms], loop=0, optimize=False)
    return buffer.getvalue()
