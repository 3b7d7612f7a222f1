"""The labelling page: a Flask app over a `LabelStore`, with a background pool that renders the
next questions' animations before they are asked (off the request path) into a disk cache: a
simulator replay checked against the stored observations where the file records episode seeds
(bench/labelling/replay.py), else the top-down path (bench/labelling/render.py).

Routes: ``/`` the page; ``/api/state`` the current question and progress; ``/api/answer``
(POST ``{"id", "answer"}``) and ``/api/undo`` (POST) change the store and return the new state;
``/frames/<episode>/<start>.gif`` a segment's animation (from the cache, rendered on a miss).

What it protects against (docs/feedback.md): a request whose Host header is not this machine
(DNS rebinding) gets 403; a POST from another site (Origin or Sec-Fetch-Site) gets 403; every
``/api/`` call needs the page's random per-process token (header ``X-Presa-Token``), which only
a page loaded from this server holds, always, whatever ``--host``; a body over `MAX_BODY` gets 413;
a body that is not a JSON object of strings gets 400.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BadInput
from bench.labelling import render
from bench.labelling import replay as replay_mod
from bench.labelling.store import LabelStore, Query

log = logging.getLogger(__name__)

#: What the page says it shows.
VIEW_REPLAY = "simulator replay, checked against the stored observations"
VIEW_PATH = "top-down path from the observations"

#: How many questions ahead of the current one the pool renders.
LOOKAHEAD = 6
#: The largest request body accepted (an answer is under 100 bytes).
MAX_BODY = 64 * 1024
#: The header that carries the page's token on every /api/ call.
TOKEN_HEADER = "X-Presa-Token"
#: Methods that change the store: cross-site ones are refused.
_CHANGING = ("POST", "PUT", "PATCH", "DELETE")


def allowed_host(host_header: str, bound: str) -> bool:
    """Whether a request's Host header names this server: an IP address (a DNS rebinding attack
    needs a name), localhost, this machine's name, or the --host it listens on."""
    from urllib.parse import urlsplit

    try:
        name = urlsplit(f"//{host_header}").hostname
    except ValueError:
        return False
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return name in {"localhost", bound.lower(), socket.gethostname().lower(), socket.getfqdn().lower()}


@dataclass
class Context:
    """What the page shows besides the question: the task, the threshold and the safety budget."""

    task: str
    threshold: float
    segment_length: int
    episode_length: int
    budget: float
    dataset: str
    rules: dict[str, str]
    view: str = VIEW_PATH


class FrameCache:
    """Segment animations as GIF files under ``directory`` (per dataset hash), rendered by a pool.

    Where the file has a ``replay`` group (``replay=True``, the default, and the group present), a
    segment is real simulator frames of its episode replayed from the recorded seed and actions,
    checked against the stored observations; a segment whose replay does not match falls back to
    the top-down path (its picture and the log say so). Otherwise every segment is the path view.
    """

    def __init__(self, directory: Path, dataset: Any, geometry: render.Geometry, dataset_hash: str, workers: int = 1, replay: bool = True) -> None:
        self.directory = Path(directory) / dataset_hash
        self.dataset = dataset
        self.geometry = geometry
        self.replay_index = replay_mod.ReplayIndex.read(getattr(dataset, "path", None), dataset.episodes.starts) if replay else None
        self.view_name = VIEW_REPLAY if self.replay_index is not None else VIEW_PATH
        #: (episode, start) -> why its replay fell back to the path view (this process's renders)
        self.mismatches: dict[tuple[int, int], str] = {}
        self.view = render.View.of(geometry, dataset.observations)
        self.base = render.background(geometry, self.view)
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="presa-render")
        self.pending: dict[Path, Future] = {}
        self.lock = threading.Lock()

    def path(self, episode: int, start: int, length: int) -> Path:
        kind = "replay" if self.replay_index is not None else "path"
        return self.directory / f"{self.geometry.task}-e{episode}-s{start}-h{length}-{kind}-v{render.RENDER_VERSION}.gif"

    def render_segment(self, episode: int, start: int, length: int) -> tuple[bytes, str]:
        """A segment's GIF and the view it shows: VIEW_REPLAY, or VIEW_PATH (also on a mismatch)."""
        ds = self.dataset
        idx = ds.segment_indices(np.array([episode]), np.array([start]), length)[0]
        note = None
        if self.replay_index is not None:
            from bench.tasks import get_task

            first = int(ds.episodes.starts[episode])
            end = first + start + length
            try:
                frames, _ = replay_mod.replay_segment(
                    get_task(self.geometry.task), int(self.replay_index.seeds[episode]), ds.observations[first:end],
                    ds.next_observations[first:end], ds.actions[first:end], start, length)
                return replay_mod.replay_gif(frames, ds.costs[idx], render.FRAME_MS, render.END_PAUSE_MS), VIEW_REPLAY
            except replay_mod.ReplayMismatch as exc:
                note = f"episode {episode}: {exc}"
                log.warning("segment (episode %d, start %d): %s; showing the top-down path instead", episode, start, exc)
                with self.lock:
                    self.mismatches[(episode, start)] = str(exc)
        data = render.render_gif(self.geometry, self.view, self.base, ds.observations[idx], ds.next_observations[idx], note=note)
        return data, VIEW_PATH

    def _render(self, episode: int, start: int, length: int, path: Path) -> Path:
        try:
            if not path.is_file():
                data, _ = self.render_segment(episode, start, length)
                render.write_atomic_bytes(path, data)
            return path
        finally:
            with self.lock:
                self.pending.pop(path, None)

    def submit(self, episode: int, start: int, length: int) -> Future | None:
        path = self.path(episode, start, length)
        if path.is_file():
            return None
        with self.lock:
            future = self.pending.get(path)
            if future is None:
                future = self.pool.submit(self._render, episode, start, length, path)
                self.pending[path] = future
            return future

    def prepare(self, queries: list[Query]) -> None:
        """Queue the animations of ``queries`` (in order) that are not cached yet."""
        for query in queries:
            for episode, start in zip(query.episodes, query.starts):
                self.submit(episode, start, query.length)

    def get(self, episode: int, start: int, length: int) -> Path:
        """The GIF of a segment: cached, or rendered now (waiting for the pool if it is queued there)."""
        future = self.submit(episode, start, length)
        if future is not None:
            future.result()
        return self.path(episode, start, length)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def create_app(store: LabelStore, frames: FrameCache, context: Context, host: str = "127.0.0.1", token: str | None = None):  # type: ignore[no-untyped-def]
    """The Flask app. One lock serialises the store's changes (the server is threaded). ``host`` is
    the address it listens on; ``token`` the page's token (default: a new random one)."""
    from flask import Flask, abort, jsonify, render_template, request, send_file

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    token = token or secrets.token_urlsafe(32)
    lock = threading.Lock()

    @app.before_request
    def guard():  # type: ignore[no-untyped-def]
        if not allowed_host(request.host, host):
            return jsonify({"error": f"Host {request.host!r} is not this labelling server"}), 403
        if request.method in _CHANGING:
            origin = request.headers.get("Origin")
            if origin is not None and origin != request.host_url.rstrip("/"):
                return jsonify({"error": f"cross-site request from {origin!r} refused"}), 403
            if request.headers.get("Sec-Fetch-Site") == "cross-site":
                return jsonify({"error": "cross-site request refused"}), 403
        if request.path.startswith("/api/") and not secrets.compare_digest(request.headers.get(TOKEN_HEADER, ""), token):
            return jsonify({"error": f"missing or wrong {TOKEN_HEADER}: reload the labelling page"}), 403
        if (request.content_length or 0) > MAX_BODY:
            return jsonify({"error": f"request body over {MAX_BODY} bytes"}), 413
        return None

    @app.errorhandler(413)
    def too_large(_):  # type: ignore[no-untyped-def]
        return jsonify({"error": f"request body over {MAX_BODY} bytes"}), 413
    valid_segments = {(e, s) for q in store.queries for e, s in zip(q.episodes, q.starts)}

    def state() -> dict[str, Any]:
        query = store.next_query()
        upcoming = store.upcoming(LOOKAHEAD + 1)
        frames.prepare(upcoming)
        done = store.answered()
        payload: dict[str, Any] = {
            "annotator": store.annotator,
            "done": done,
            "total": len(store.queries),
            "can_undo": bool(store.history.get(store.annotator)),
            "query": None,
            "prefetch": [f"/frames/{e}/{s}.gif" for q in upcoming[1:3] for e, s in zip(q.episodes, q.starts)],
        }
        if query is not None:
            payload["query"] = {
                **query.as_json(),
                "number": store.queries.index(query) + 1,
                "images": [f"/frames/{e}/{s}.gif" for e, s in zip(query.episodes, query.starts)],
            }
        return payload

    @app.get("/")
    def page():  # type: ignore[no-untyped-def]
        return render_template("page.html", context=context, store=store, token=token, token_header=TOKEN_HEADER)

    @app.get("/api/state")
    def get_state():  # type: ignore[no-untyped-def]
        with lock:
            return jsonify(state())

    @app.post("/api/answer")
    def post_answer():  # type: ignore[no-untyped-def]
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("id", "answer")):
            return jsonify({"error": 'the body must be a JSON object {"id": "...", "answer": "..."} of strings'}), 400
        with lock:
            try:
                store.answer(body["id"], body["answer"])
            except BadInput as exc:
                return jsonify({"error": str(exc)}), 400
            return jsonify(state())

    @app.post("/api/undo")
    def post_undo():  # type: ignore[no-untyped-def]
        with lock:
            store.undo()
            return jsonify(state())

    @app.get("/frames/<int:episode>/<int:start>.gif")
    def frame(episode: int, start: int):  # type: ignore[no-untyped-def]
        if (episode, start) not in valid_segments:
            abort(404)
        path = frames.get(episode, start, context.segment_length)
        response = send_file(path, mimetype="image/gif", max_age=365 * 24 * 3600)
        return response

    return app
