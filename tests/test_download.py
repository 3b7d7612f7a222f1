"""`presa-bench data download` end to end against a local server that answers like the Hugging Face hub.

The server serves /datasets/<repo>/resolve/<revision>/<file> to HEAD and GET with the headers
huggingface_hub reads (X-Repo-Commit, ETag / X-Linked-Etag = the sha256 of an LFS file,
X-Linked-Size, Content-Length) and honours Range requests, so hf_hub_download runs unmodified.
Faults: the connection dropped mid-file, a wrong sha256, a 503, no server at all.
"""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import bench  # noqa: F401
from bench.cli import main
from bench.data import load_dataset
from bench.download import CACHE_SUBDIR, HF_REPO, download
from bench.errors import BenchError, DatasetError
from bench.tasks import get_task

TASK = get_task("BallRun")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Hub:
    """What the server serves and which faults it injects; records every request."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.drop_after: int | None = None  # first GET sends this many bytes, then closes the socket
        self.fail_503 = 0  # answer this many requests with 503 first
        self.wrong_hash = False
        self.etag: str | None = None  # a lying server: this ETag instead of the file's sha256
        self.commit = COMMIT
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.lock = threading.Lock()


def _handler(hub: Hub):
    pattern = re.compile(rf"^/datasets/{re.escape(HF_REPO)}/resolve/([^/]+)/(.+)$")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _answer(self, body: bool) -> None:
            with hub.lock:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                fail = hub.fail_503 > 0
                if fail:
                    hub.fail_503 -= 1
            m = pattern.match(self.path.split("?")[0])
            if fail:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if m is None or m.group(2) not in hub.files:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = hub.files[m.group(2)]
            sha = hashlib.sha256(data).hexdigest()
            if hub.wrong_hash:
                sha = hashlib.sha256(data + b"x").hexdigest()
            if hub.etag is not None:
                sha = hub.etag
            start = 0
            rng = self.headers.get("Range")
            if rng:
                start = int(re.match(r"bytes=(\d+)-", rng).group(1))
            part = data[start:]
            self.send_response(206 if rng else 200)
            self.send_header("X-Repo-Commit", hub.commit)
            self.send_header("ETag", f'"{sha}"')
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(part)))
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            with hub.lock:
                drop, hub.drop_after = hub.drop_after, None
            if drop is not None and drop < len(part):
                self.wfile.write(part[:drop])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # mid-file: the client sees a short body
                return
            self.wfile.write(part)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

    return Handler


@pytest.fixture
def hub(sim_dataset_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The hub, serving a small real DSRL-format file under DSRL's name for BallRun."""
    state = Hub({TASK.dsrl_filename: sim_dataset_path.read_bytes()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    yield state
    server.shutdown()
    server.server_close()


def _gets(hub: Hub) -> list[tuple[str, str, str | None]]:
    return [r for r in hub.requests if r[0] == "GET"]


def _no_partial_files(directory: Path) -> list[Path]:
    """Files under the dataset directory other than the hub's cache: what a user's lookup would see."""
    return [p for p in directory.rglob("*") if p.is_file() and CACHE_SUBDIR not in p.parts]


def test_cli_download_lands_a_verified_file(hub: Hub, sim_dataset_path: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "datasets"
    monkeypatch.setenv("DSRL_DATASET_DIR", str(out))
    assert main(["data", "download", "--task", "BallRun"]) == 0
    final = out / TASK.dsrl_filename
    assert final.read_bytes() == sim_dataset_path.read_bytes()
    ds = load_dataset(final, TASK)
    np.testing.assert_array_equal(ds.rewards, load_dataset(sim_dataset_path, TASK).rewards)
    assert _no_partial_files(out) == [final]
    # a second call finds the file and fetches nothing
    before = len(hub.requests)
    assert main(["data", "download", "--task", "BallRun"]) == 0
    assert len(hub.requests) == before


def test_dropped_connection_is_resumed_and_ends_correct(hub: Hub, sim_dataset_path: Path, tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    # the hub client writes 10 MB chunks (DSRL's files are 10-900 MB); 16 kB ones for this small file
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
    data = sim_dataset_path.read_bytes()
    hub.drop_after = len(data) // 3
    got = download(TASK, tmp_path, backoff_s=0.01)
    assert got.fetched and got.hash_checked and got.commit == COMMIT
    assert got.path.read_bytes() == data
    gets = _gets(hub)
    assert len(gets) == 2 and gets[0][2] is None
    # resumed from the last whole chunk written before the drop, not restarted from 0
    resumed_at = int(re.match(r"bytes=(\d+)-$", gets[1][2]).group(1))
    assert len(data) // 3 - 16 * 1024 < resumed_at <= len(data) // 3


def test_wrong_hash_fails_clearly_and_leaves_no_file(hub: Hub, tmp_path: Path, capsys) -> None:
    hub.wrong_hash = True
    with pytest.raises(DatasetError, match="has sha256 .* but the hub gives"):
        download(TASK, tmp_path, attempts=2, backoff_s=0.01)
    assert len(_gets(hub)) == 2  # retried once (the bytes may have been corrupted in transit)
    assert not (tmp_path / TASK.dsrl_filename).exists() and _no_partial_files(tmp_path) == []
    # nor in the hub's cache (no blob, no snapshot link): the next try downloads again
    assert not [p for p in (tmp_path / CACHE_SUBDIR).rglob("*") if ("blobs" in p.parts or "snapshots" in p.parts)
                and not p.is_dir() and p.suffix != ".lock"]
    # through the CLI: one line, exit code 2
    assert main(["data", "download", "--task", "BallRun", "--dataset-dir", str(tmp_path), "--attempts", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sha256" in err[0]
    assert not (tmp_path / TASK.dsrl_filename).exists()


def test_transient_server_errors_are_retried(hub: Hub, sim_dataset_path: Path, tmp_path: Path) -> None:
    hub.fail_503 = 2
    got = download(TASK, tmp_path, attempts=3, backoff_s=0.01)
    assert got.path.read_bytes() == sim_dataset_path.read_bytes()
    hub.fail_503 = 5
    with pytest.raises(BenchError, match="failed after 2 attempt"):
        download(get_task("BallRun"), tmp_path / "other", attempts=2, backoff_s=0.01)
    assert not (tmp_path / "other" / TASK.dsrl_filename).exists()


def test_a_file_the_hub_lacks_is_one_clear_line(hub: Hub, tmp_path: Path, capsys) -> None:
    assert main(["data", "download", "--task", "CarRun", "--dataset-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not on the hub" in err[0] and "data collect --task CarRun" in err[0]


def test_invalid_content_is_refused(hub: Hub, tmp_path: Path) -> None:
    """A file whose hash matches but is no DSRL file fails the data layer's check; no final file."""
    hub.files[TASK.dsrl_filename] = b"not an hdf5 file" * 100
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        download(TASK, tmp_path, backoff_s=0.01)
    assert not (tmp_path / TASK.dsrl_filename).exists()


def test_offline_is_one_line_and_exit_2(tmp_path: Path, monkeypatch, capsys) -> None:
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert main(["data", "download", "--task", "BallRun", "--dataset-dir", str(tmp_path), "--attempts", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach the Hugging Face hub" in err[0] and "data collect --task BallRun" in err[0]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["data", "download", "--suite", "bullet", "--dataset-dir", str(tmp_path)]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
    assert _no_partial_files(tmp_path) == []


def test_sweep_fetch_missing_downloads_else_collects_as_resumable_units(hub: Hub, tmp_path: Path, capsys) -> None:
    """`sweep --fetch-missing --fetch-only` on submitit's local executor (the Slurm code path):
    BallRun is on the hub -> downloaded; CarRun is not -> collected (smoke budget); a rerun finds
    both and does nothing."""
    data = tmp_path / "data"
    args = ["sweep", "--tasks", "BallRun,CarRun", "--algos", "bc-all", "--seeds", "0", "--profile", "smoke",
            "--dataset", str(data), "--results", str(tmp_path / "results"), "--executor", "submitit-local",
            "--slurm-timeout-min", "30", "--fetch-missing", "--fetch-only", "--collect-profile", "smoke"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "dataset BallRun: downloaded" in out and "dataset CarRun: collected" in out
    assert (data / TASK.dsrl_filename).read_bytes() == hub.files[TASK.dsrl_filename]
    car = get_task("CarRun")
    (collected,) = sorted(data.glob(f"{car.simulator_id}-*.hdf5"))
    assert load_dataset(collected, car).num_episodes == 8
    before = len(hub.requests)
    assert main(args) == 0
    assert "all 2 task(s) have one" in capsys.readouterr().out and len(hub.requests) == before


@pytest.mark.parametrize("lie", ["etag", "commit"])
def test_a_lying_server_writes_nothing_outside_the_dataset_directory(hub: Hub, tmp_path: Path, capsys, lie) -> None:
    directory = tmp_path / "a" / "b" / "c" / "d" / "datasets"
    if lie == "etag":
        hub.etag = "../../../../../../OUTSIDE/evil_etag"
    else:
        hub.commit = "../../../../../../OUTSIDE/evil_commit"
    assert main(["data", "download", "--task", "BallRun", "--dataset-dir", str(directory), "--attempts", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"gave {lie}" in err[0].lower() and "refused, nothing written" in err[0]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(directory in p.parents for p in written), written
    assert not (directory / TASK.dsrl_filename).exists()
    assert not _gets(hub)  # refused before any download
