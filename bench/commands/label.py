"""`presa-bench label serve`: the labelling web page for people (bench/labelling, docs/feedback.md)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Label dataset segments by hand in a browser: preference pairs and safety questions.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="label")


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "presa-bench" / "frames"


def _bind(host: str, port: int):  # type: ignore[no-untyped-def]
    """Bind the port first (before the slow dataset load), with an app filled in later. The socket
    is ours (werkzeug's own bind prints and exits on a port in use), handed to werkzeug as an fd."""
    import errno
    import socket

    from werkzeug.serving import get_sockaddr, make_server, select_address_family

    from bench.errors import BadInput

    holder: dict[str, object] = {}

    def dispatch(environ, start_response):  # type: ignore[no-untyped-def]
        return holder["app"](environ, start_response)  # type: ignore[operator]

    if not 0 <= port <= 65535:
        raise BadInput(f"--port {port} is not a port number (0..65535; 0 = any free port)")
    try:
        family = select_address_family(host, port)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart right after a kill
            sock.bind(get_sockaddr(host, port, family))
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise BadInput(f"port {port} on {host} is in use (another server, or a labelling page still running): choose another --port") from None
        raise BadInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host and --port") from None
    server = make_server(host, port, dispatch, threaded=True, fd=sock.fileno())
    sock.close()  # werkzeug holds its own duplicate of the socket
    return server, holder


@app.command("serve")
def serve_cmd(
    task: str = typer.Option(..., "--task", help="DSRL task, e.g. BallCircle (the Bullet-Safety-Gym tasks can be shown)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Cost threshold kappa the safety questions are about (default: the task's middle one, as `run`)."),
    queries: int = typer.Option(100, "--queries", help="Preference pairs to ask (the scripted teacher's --queries: the same draws)."),
    safety_labels: Optional[int] = typer.Option(None, "--safety-labels", help="Safety questions (default: as many as --queries)."),
    segment_length: Optional[int] = typer.Option(None, "--segment-length", help="H in steps (default: 20% of the episode length)."),
    pair_sampling: str = typer.Option("uniform", "--pair-sampling", help="uniform or disjoint-episodes (as `feedback make`)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the segment draws (as `feedback make --seed`)."),
    annotator: Optional[str] = typer.Option(None, "--annotator", help="Who is labelling (the annotator column; default: $USER)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Labels file (CSV; default labels-<task>-k<K>-q<N>-s<seed>.csv). Reopening it resumes."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Dataset file or directory (default: the standard lookup)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: this machine only; the page has no login)."),
    port: int = typer.Option(8765, "--port", help="Port (0 = any free one)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where rendered animations are cached (default: ~/.cache/presa-bench/frames)."),
    workers: int = typer.Option(1, "--workers", help="Background threads rendering the next questions."),
) -> None:
    """Serve the labelling page: two segments side by side (which is better for reward?) and single
    segments (is it safe?), the scripted teacher's questions; each answer is saved at once."""
    import logging

    from bench.console import console
    from bench.data import load_task_dataset
    from bench.errors import BadInput
    from bench.feedback import FeedbackSettings, dataset_hash, sample_queries
    from bench.labelling import render
    from bench.labelling.app import LOOKAHEAD, Context, FrameCache, create_app
    from bench.labelling.store import LabelStore, build_queries
    from bench.tasks import get_task

    t = get_task(task)
    geometry = render.geometry_for(t)  # before anything slow: can this task be shown at all?
    kappa = float(threshold) if threshold is not None else t.middle_threshold
    if not math.isfinite(kappa) or kappa < 0:
        why = "negative" if kappa < 0 else "not finite"
        raise BadInput(f"--threshold {kappa:g} is {why}: a cost threshold must be a finite number >= 0")
    who = annotator if annotator is not None else (os.environ.get("USER") or "annotator")
    if not who.strip() or "," in who or "\n" in who:
        raise BadInput(f"--annotator {who!r} is not a usable name: give a non-empty name without commas")
    settings = FeedbackSettings(num_queries=queries, num_safety_labels=safety_labels, segment_length=segment_length, pair_sampling=pair_sampling)
    settings.validate()
    server, holder = _bind(host, port)
    store = None
    try:
        ds = load_task_dataset(t, dataset)
        render.check_geometry(geometry, ds.next_observations, ds.costs)
        length, pair_episode, pair_start, safety_episode, safety_start = sample_queries(ds, seed, settings, t)
        resolved = settings.resolve(t)
        the_hash = dataset_hash(ds)
        header = {
            "task": t.name,
            "dataset_hash": the_hash,
            "dataset_path": str(Path(ds.path).resolve()) if ds.path is not None else None,
            "threshold": kappa,
            "seed": int(seed),
            "num_queries": int(resolved.num_queries),
            "num_safety_labels": int(resolved.num_safety_labels),  # type: ignore[arg-type]
            "segment_length": int(length),
            "pair_sampling": resolved.pair_sampling,
        }
        path = out or Path(f"labels-{t.name}-k{kappa:g}-q{queries}-s{seed}.csv")
        store = LabelStore(path, header, build_queries(pair_episode, pair_start, safety_episode, safety_start, length), who)
        frames = FrameCache(cache_dir or _default_cache(), ds, geometry, the_hash, workers)
        frames.prepare(store.upcoming(LOOKAHEAD))
        context = Context(
            task=t.name, threshold=kappa, segment_length=int(length), episode_length=int(t.episode_length),
            budget=float(kappa) * length / t.episode_length, dataset=str(ds.path), rules=geometry.describe(), view=frames.view_name,
        )
        holder["app"] = create_app(store, frames, context, host=host)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        url_host = f"[{host}]" if ":" in host else host
        console().print(
            f"{t.name}, threshold {kappa:g}: {len(store.queries)} questions, {store.answered()} answered by {who}; "
            f"saving to {path}"
        )
        console().print(f"pictures: {frames.view_name}")
        if host not in ("127.0.0.1", "localhost", "::1"):
            console().print(f"[yellow]listening on {host}: anyone who can reach it can answer (the page has no login)[/yellow]")
        typer.echo(f"labelling page: http://{url_host}:{server.port}/  (Ctrl-C stops; every answer is already saved)", nl=True)
        import sys

        sys.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        frames.close()
        console().print(f"stopped; {store.answered()} answers by {who} in {path}")
    finally:
        server.server_close()
        if store is not None:
            store.close()
