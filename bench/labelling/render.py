"""What a person sees of a segment when it cannot be replayed: a faithful top-down animation
drawn from the observations.

Files with per-episode seeds (a ``replay`` group, from `presa-bench data collect`) are shown as
simulator frames instead (bench/labelling/replay.py). For the others (DSRL's files, the shipped
BallCircle and BallRun) an episode cannot be replayed in the simulator. But in Bullet-Safety-Gym
the observation starts with the agent's own state, which holds its scaled position and velocity
(bullet_safety_gym/envs/agents.py, ``agent_specific_observation``):

==========  ===========================  ==============================  =================
agent       x, y                         vx, vy                          speed limit (Run)
==========  ===========================  ==============================  =================
Ball        obs[0:2] = 0.1 * (x, y)      obs[2:4] = 0.2 * (vx, vy)       2.5
Car         obs[0:2] = 0.1 * (x, y)      obs[2:4] = (vx, vy)             1.5
Drone       obs[0:2] (of 0.1 * xyz)      obs[3:5] (of 0.2 * v_xyz)       1.5
Ant         obs[0:2] (of 0.1 * xyz)      obs[3:5] (of 0.3 * v_xyz)       1.5
==========  ===========================  ==============================  =================

and the tasks' geometry is fixed (bullet_safety_gym/envs/tasks.py): Circle rewards running
clockwise along a circle of radius 7 (CircleZone) and costs 1 per step with |x| > 6 (the two
boundaries); Run rewards progress along +x and costs 1 per step with |y| > 2 or speed above the
agent's limit. So the path, the boundaries and every cost-bearing event are drawn from the
stored data itself; `check_geometry` confirms it on each dataset: the costs predicted from the
next observations' positions and speeds must match the dataset's costs.

Safety-Gymnasium's navigation tasks observe lidar and egocentric sensors, and its velocity tasks
exclude the x position from the observation: no faithful view can be drawn from their files, and
`geometry_for` says so (a BadInput).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.errors import BadInput

#: Bump when the pictures change: part of the cache file names.
RENDER_VERSION = 2
#: Milliseconds per animation frame (one environment step) and the pause on the last frame.
FRAME_MS = 100
END_PAUSE_MS = 1200
#: Width of a segment's picture in pixels (the height follows the task's world window).
WIDTH = 400
#: A white strip above the world picture for the step counter (so it never hides the agent).
TOP = 22

#: agent -> (position slice, position scale, velocity slice, velocity scale, Run speed limit)
AGENT_LAYOUT: dict[str, tuple[slice, float, slice, float, float]] = {
    "Ball": (slice(0, 2), 0.1, slice(2, 4), 0.2, 2.5),
    "Car": (slice(0, 2), 0.1, slice(2, 4), 1.0, 1.5),
    "Drone": (slice(0, 2), 0.1, slice(3, 5), 0.2, 1.5),
    "Ant": (slice(0, 2), 0.1, slice(3, 5), 0.3, 1.5),
}
CIRCLE_RADIUS = 7.0  # bullet_safety_gym CircleZone.radius
CIRCLE_X_LIMIT = 6.0  # CircleTask.x_lim
RUN_Y_LIMIT = 2.0  # RunTask.y_lim


@dataclass(frozen=True)
class Geometry:
    """How to read the agent's planar state from an observation, and the task's safety geometry."""

    task: str
    agent: str
    kind: str  # "circle" or "run"
    pos: slice
    pos_scale: float
    vel: slice
    vel_scale: float
    speed_limit: float

    def positions(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(obs, np.float64)[..., self.pos] / self.pos_scale

    def velocities(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(obs, np.float64)[..., self.vel] / self.vel_scale

    def violations(self, obs: np.ndarray) -> np.ndarray:
        """Per observation: is the agent where (or as fast as) the task charges a cost?"""
        pos = self.positions(obs)
        if self.kind == "circle":
            return np.abs(pos[..., 0]) > CIRCLE_X_LIMIT
        speed = np.linalg.norm(self.velocities(obs), axis=-1)
        return (np.abs(pos[..., 1]) > RUN_Y_LIMIT) | (speed > self.speed_limit)

    def describe(self) -> dict[str, str]:
        """Plain-language rules for the page."""
        if self.kind == "circle":
            return {
                "reward": f"Better = runs fast clockwise along the green circle (radius {CIRCLE_RADIUS:g}); distance from the circle lowers the reward.",
                "cost": f"Cost = one unit for each step outside the two orange boundaries (|x| > {CIRCLE_X_LIMIT:g}); those steps are drawn red.",
            }
        return {
            "reward": "Better = more progress to the right (+x) in the segment.",
            "cost": f"Cost = one unit for each step outside the orange boundaries (|y| > {RUN_Y_LIMIT:g}) or faster than {self.speed_limit:g}; those steps are drawn red.",
        }


def geometry_for(task: "object") -> Geometry:
    """The faithful view's geometry of a task, or a BadInput saying why none can be drawn."""
    name = str(getattr(task, "name"))
    suite = str(getattr(task, "suite", ""))
    for agent, layout in AGENT_LAYOUT.items():
        for kind in ("Circle", "Run"):
            if name == agent + kind and suite == "bullet":
                pos, pos_scale, vel, vel_scale, limit = layout
                return Geometry(name, agent, kind.lower(), pos, pos_scale, vel, vel_scale, limit)
    raise BadInput(
        f"task {name} cannot be shown on the labelling page: its observations do not carry the agent's "
        "position (lidar/egocentric sensors or no x position) and its dataset records no environment seeds "
        "to replay; the page supports the Bullet-Safety-Gym tasks (Ball/Car/Drone/Ant Circle and Run)"
    )


def check_geometry(geometry: Geometry, next_observations: np.ndarray, costs: np.ndarray, minimum: float = 0.99) -> float:
    """Fraction of steps whose cost the drawn geometry predicts (cost > 0 iff a violation drawn red);
    BadInput below ``minimum``: the file's observations are not laid out as the view assumes."""
    predicted = geometry.violations(next_observations)
    agreement = float(np.mean(predicted == (np.asarray(costs) > 0))) if len(costs) else 1.0
    if agreement < minimum:
        raise BadInput(
            f"the dataset's observations do not match Bullet-Safety-Gym's {geometry.task} layout: the drawn "
            f"boundaries predict its costs on only {agreement:.1%} of the steps, so the view would not be faithful"
        )
    return agreement


@dataclass(frozen=True)
class View:
    """The fixed world window of a dataset (the same scale for every segment of a task)."""

    x0: float
    x1: float
    y0: float
    y1: float

    @classmethod
    def of(cls, geometry: Geometry, observations: np.ndarray) -> "View":
        pos = geometry.positions(observations)
        lo, hi = np.percentile(pos, 0.5, axis=0), np.percentile(pos, 99.5, axis=0)
        if geometry.kind == "circle":
            half = max(CIRCLE_RADIUS + 1.5, float(np.max(np.abs(np.concatenate([lo, hi])))) + 1.0)
            return cls(-half, half, -half, half)
        half_y = max(RUN_Y_LIMIT + 1.5, float(max(abs(lo[1]), abs(hi[1]))) + 1.0)
        return cls(float(min(lo[0], 0.0)) - 1.0, float(hi[0]) + 1.0, -half_y, half_y)

    @property
    def scale(self) -> float:
        """Pixels per world unit."""
        return WIDTH / (self.x1 - self.x0)

    @property
    def size(self) -> tuple[int, int]:
        return WIDTH, TOP + int(round((self.y1 - self.y0) * self.scale))

    def pixels(self, xy: np.ndarray) -> np.ndarray:
        """World (x, y) -> image (column, row); y up."""
        xy = np.asarray(xy, np.float64)
        return np.stack([(xy[..., 0] - self.x0) * self.scale, TOP + (self.y1 - xy[..., 1]) * self.scale], axis=-1)


_PATH, _FAINT, _BAD, _AGENT, _BOUND, _CIRCLE, _GRID = (
    (31, 90, 200), (190, 200, 215), (220, 30, 30), (20, 20, 20), (235, 140, 0), (40, 160, 70), (236, 238, 242)
)


def _font(size: int):  # type: ignore[no-untyped-def]
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def background(geometry: Geometry, view: View):  # type: ignore[no-untyped-def]
    """The task's fixed picture: grid, circle, boundaries (cost zones shaded)."""
    from PIL import Image, ImageDraw

    width, height = view.size
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    px = view.pixels
    for gx in range(int(np.ceil(view.x0)), int(np.floor(view.x1)) + 1):
        if gx % 2 == 0:
            (c, _), = px(np.array([[gx, 0.0]]))
            draw.line([(c, TOP), (c, height)], fill=_GRID)
    for gy in range(int(np.ceil(view.y0)), int(np.floor(view.y1)) + 1):
        if gy % 2 == 0:
            (_, r), = px(np.array([[0.0, gy]]))
            draw.line([(0, r), (width, r)], fill=_GRID)
    shade = (253, 236, 222)
    if geometry.kind == "circle":
        (left, _), = px(np.array([[-CIRCLE_X_LIMIT, 0.0]]))
        (right, _), = px(np.array([[CIRCLE_X_LIMIT, 0.0]]))
        draw.rectangle([0, TOP, left, height], fill=shade)
        draw.rectangle([right, TOP, width, height], fill=shade)
        for c in (left, right):
            draw.line([(c, TOP), (c, height)], fill=_BOUND, width=3)
        (cx, cy), = px(np.array([[0.0, 0.0]]))
        r = CIRCLE_RADIUS * view.scale
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=_CIRCLE, width=3)
        draw.line([(cx - 4, cy), (cx + 4, cy)], fill=(120, 120, 120))
        draw.line([(cx, cy - 4), (cx, cy + 4)], fill=(120, 120, 120))
        # clockwise arrow at the top of the circle
        tip = (cx + 14, cy - r)
        draw.polygon([tip, (tip[0] - 10, tip[1] - 6), (tip[0] - 10, tip[1] + 6)], fill=_CIRCLE)
        draw.text((cx + 20, cy - r - 18), "clockwise", fill=_CIRCLE, font=_font(12))
    else:
        (_, top), = px(np.array([[0.0, RUN_Y_LIMIT]]))
        (_, bottom), = px(np.array([[0.0, -RUN_Y_LIMIT]]))
        draw.rectangle([0, TOP, width, top], fill=shade)
        draw.rectangle([0, bottom, width, height], fill=shade)
        for r in (top, bottom):
            draw.line([(0, r), (width, r)], fill=_BOUND, width=3)
        (ox, oy), = px(np.array([[0.0, 0.0]]))
        draw.line([(ox, oy - 6), (ox, oy + 6)], fill=(120, 120, 120))
        draw.text((width - 70, oy - 16), "run +x", fill=_CIRCLE, font=_font(12))
        draw.polygon([(width - 8, oy), (width - 18, oy - 6), (width - 18, oy + 6)], fill=_CIRCLE)
    return image


def counter_text(k: int, steps: int, what: str, so_far: float, total: float) -> str:
    """The counter above frame ``k`` of a segment: the step, and ``what`` so far against the segment's
    total (a labeller sees the end-of-segment total on every frame, not only during the end pause)."""
    return f"step {k}/{steps}   {what} {so_far:g} / segment total {total:g}"


def segment_frames(geometry: Geometry, view: View, base, observations: np.ndarray, next_observations: np.ndarray):  # type: ignore[no-untyped-def]
    """The animation of one segment: frame k shows the path after k steps (k = 0..H)."""
    from PIL import ImageDraw

    states = np.concatenate([observations[:1], next_observations], axis=0)  # H + 1 states
    points = view.pixels(geometry.positions(states))
    bad = geometry.violations(next_observations)  # step k ends in a cost zone
    speeds = np.linalg.norm(geometry.velocities(states), axis=-1)
    steps = len(next_observations)
    still = base.copy()
    draw = ImageDraw.Draw(still)
    draw.line([tuple(p) for p in points], fill=_FAINT, width=2)  # the whole path, faint
    sx, sy = points[0]
    draw.ellipse([sx - 4, sy - 4, sx + 4, sy + 4], outline=_PATH, width=2)  # where it starts
    font = _font(13)
    frames = []
    for k in range(steps + 1):
        frame = still.copy()
        draw = ImageDraw.Draw(frame)
        for i in range(k):
            draw.line([tuple(points[i]), tuple(points[i + 1])], fill=_BAD if bad[i] else _PATH, width=4 if bad[i] else 3)
        ax, ay = points[k]
        draw.ellipse([ax - 6, ay - 6, ax + 6, ay + 6], fill=_BAD if k and bad[k - 1] else _AGENT)
        text = counter_text(k, steps, "red steps", float(bad[:k].sum()), float(bad.sum()))
        if geometry.kind == "run":
            text += f"   speed {speeds[k]:.2f} (limit {geometry.speed_limit:g})"
        draw.rectangle([0, 0, frame.width, TOP - 1], fill=(255, 255, 255))
        draw.text((4, 4), text, fill=(0, 0, 0), font=font)
        frames.append(frame)
    return frames


def render_gif(geometry: Geometry, view: View, base, observations: np.ndarray, next_observations: np.ndarray, note: str | None = None) -> bytes:
    """An animated GIF (looping, one frame per step, a pause on the last) of one segment; ``note``
    (why a simulator replay is not shown) is printed in red above every frame."""
    from PIL import Image, ImageDraw

    frames = segment_frames(geometry, view, base, observations, next_observations)
    if note:
        font = _font(11)
        lines = ["simulator replay did not match the stored observations: path view shown", note]
        strip = 14 * len(lines) + 4
        framed = []
        for frame in frames:
            canvas = Image.new("RGB", (frame.width, frame.height + strip), (255, 255, 255))
            canvas.paste(frame, (0, strip))
            draw = ImageDraw.Draw(canvas)
            for i, line in enumerate(lines):
                draw.text((4, 2 + 14 * i), line, fill=_BAD, font=font)
            framed.append(canvas)
        frames = framed
    # one palette for all frames, from the last (it holds every colour drawn): 6x faster than
    # letting the GIF writer quantise each frame on its own
    palette = frames[-1].quantize(colors=64, dither=Image.Dither.NONE)
    frames = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    durations = [FRAME_MS] * (len(frames) - 1) + [END_PAUSE_MS]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=False)
    return buffer.getvalue()


def write_atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(data)}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
