"""Download DSRL's own dataset files from their current home, the Hugging Face dataset of DSRL.

dsrl 0.1.0 (PyPI, 2023) downloads from DSRL's old server, which stopped answering in 2024. DSRL's
main branch moved its files to the Hugging Face dataset ``YYY-45/DSRL`` in liuzuxin/DSRL commit
71064f2 (2025-11-12, ``dsrl/infos.py``: ``https://huggingface.co/datasets/YYY-45/DSRL/resolve/main/
<file>``), with the same file names as before, so ``task.dsrl_filename`` is the file to fetch.

The hub's answer is checked before anything is written: its ETag must be a sha256 (an LFS file)
or a git hash and its commit a git hash (a hostile server's ``../../x`` never becomes a path).
huggingface_hub's lower-level ``http_get`` then streams the file into ONE file of ours, named
from the task registry, in a hidden folder under the dataset directory (``.hub-cache/``); it
resumes a dropped connection with an HTTP Range request (a few times per call) and checks the
size. This module compares the file's sha256 with the hub's, validates it with the data layer,
and only then renames it into the dataset directory under its final name. Transient failures
(connection errors, 429/5xx, a size or hash mismatch) are retried with a back-off; a partial file
left by a killed run is resumed by the next one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.errors import BadInput, BenchError, DatasetError
from bench.tasks import BULLET, SAFETY_GYMNASIUM, Task, dataset_dir, paper_tasks

#: DSRL's Hugging Face dataset (liuzuxin/DSRL@71064f2, dsrl/infos.py) and the revision read.
HF_REPO = "YYY-45/DSRL"
HF_REVISION = "main"
#: Where a file is downloaded to (hidden, inside the dataset directory: the final rename is within
#: one file system, and a rerun resumes what a killed run left).
CACHE_SUBDIR = ".hub-cache"

SUITES = {"bullet": BULLET, "safety-gymnasium": SAFETY_GYMNASIUM}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_HASH = re.compile(r"^[0-9a-f]{40}$")


class Offline(BadInput):
    """The hub cannot be reached (no network, or HF_HUB_OFFLINE set)."""


@dataclass
class Downloaded:
    task: Task
    path: Path
    sha256: str
    bytes: int
    commit: str | None
    #: False when the file was already in the dataset directory (nothing was fetched).
    fetched: bool
    #: The hub's sha256 was compared (False when the hub gave a git hash instead, non-LFS files).
    hash_checked: bool


def suite_tasks(suite: str) -> list[Task]:
    """The tasks of ``--suite``: bullet, safety-gymnasium or paper (both)."""
    name = suite.lower()
    if name == "paper":
        return paper_tasks()
    if name not in SUITES:
        raise BadInput(f"unknown suite '{suite}': choose bullet, safety-gymnasium or paper")
    return [t for t in paper_tasks() if t.suite == SUITES[name]]


def hub_url(task: Task, revision: str = HF_REVISION, endpoint: str | None = None) -> str:
    base = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    return f"{base}/datasets/{HF_REPO}/resolve/{revision}/{task.dsrl_filename}"


def offline_message(task: Task, reason: str = "") -> str:
    why = f" ({reason})" if reason else ""
    return (
        f"cannot reach the Hugging Face hub to download {task.dsrl_filename}{why}: on a machine with "
        f"internet run `presa-bench data download --task {task.name}` (or fetch {hub_url(task)}) and copy "
        f"the file into $DSRL_DATASET_DIR, or build one here with `presa-bench data collect --task {task.name}`"
    )


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_transient(exc: BaseException) -> bool:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        return status is None or status == 429 or status >= 500
    if isinstance(exc, (httpx2.TransportError, _HashMismatch)):
        return True
    return isinstance(exc, OSError) and "Consistency check failed" in str(exc)  # size mismatch


def _is_offline(exc: BaseException) -> bool:
    import httpx2
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    return isinstance(exc, (OfflineModeIsEnabled, LocalEntryNotFoundError, httpx2.ConnectError))


class _HashMismatch(Exception):
    pass


def _first_line(exc: BaseException | None) -> str:
    text = str(exc) if exc is not None else ""
    return text.splitlines()[0] if text else ""


def _check_hub_answer(task: Task, url: str, etag: str, commit: str | None) -> None:
    """DatasetError (exit 2) unless the hub's ETag is a sha256 or git hash and its commit a git
    hash: checked before anything is written, so a lying server cannot steer a write anywhere."""
    if not (_SHA256.match(etag) or _GIT_HASH.match(etag)):
        raise DatasetError(
            f"the hub at {url} gave ETag {etag[:80]!r} for {task.dsrl_filename}, which is no sha256 or git hash; "
            "refused, nothing written: check HF_ENDPOINT (is it the Hugging Face hub?)"
        )
    if commit is not None and not _GIT_HASH.match(commit):
        raise DatasetError(
            f"the hub at {url} gave commit {commit[:80]!r} for {task.dsrl_filename}, which is no git hash; "
            "refused, nothing written: check HF_ENDPOINT (is it the Hugging Face hub?)"
        )


def _fetch_once(task: Task, work_dir: Path, revision: str, endpoint: str | None) -> tuple[Path, str | None, bool]:
    """One attempt: the hub's metadata (checked), the file streamed into ``work_dir``, sha256 check."""
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    url = hub_url(task, revision, endpoint)
    meta = get_hf_file_metadata(url, endpoint=endpoint)
    commit = meta.commit_hash
    expected = (meta.etag or "").strip('"').lower()
    _check_hub_answer(task, url, expected, commit)
    part = work_dir / f"{task.dsrl_filename}.part"  # the registry's name, never the server's
    with open(part, "ab") as sink:
        fcntl.flock(sink, fcntl.LOCK_EX)  # two downloads of one file: the second waits, then resumes
        done = sink.seek(0, os.SEEK_END)
        if meta.size is not None and done > meta.size:
            sink.truncate(0)
            done = 0
        http_get(
            meta.location or hub_url(task, commit or revision, endpoint), sink, resume_size=done,
            headers=build_hf_headers(), expected_size=meta.size, displayed_filename=task.dsrl_filename,
        )
    if not _SHA256.match(expected):
        return part, commit, False
    got = sha256_of(part)
    if got != expected:
        part.unlink(missing_ok=True)  # so that the next attempt downloads it again
        raise _HashMismatch(
            f"{task.dsrl_filename} from {url} has sha256 {got} but the hub gives {expected} (deleted; "
            "rerun to download it again)"
        )
    return part, commit, True


def download(
    task: Task,
    directory: Path | str | None = None,
    revision: str = HF_REVISION,
    attempts: int = 4,
    backoff_s: float = 1.0,
    endpoint: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Downloaded:
    """Fetch DSRL's file of ``task`` into ``directory`` (default $DSRL_DATASET_DIR), verified.

    A file already there under DSRL's name is validated and kept. ``endpoint`` defaults to
    $HF_ENDPOINT (read at call time), else huggingface.co.
    """
    from bench.data import load_dataset

    task.require_supported()
    directory = Path(directory) if directory is not None else dataset_dir()
    final = directory / task.dsrl_filename
    if final.is_file():
        load_dataset(final, task)
        return Downloaded(task, final, sha256_of(final), final.stat().st_size, None, False, False)
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise Offline(offline_message(task, "HF_HUB_OFFLINE is set"))
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None

    cache_dir = directory / CACHE_SUBDIR
    cache_dir.mkdir(parents=True, exist_ok=True)
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    fetched: tuple[Path, str | None, bool] | None = None
    last: BaseException | None = None
    for attempt in range(1, attempts + 1):
        try:
            fetched = _fetch_once(task, cache_dir, revision, endpoint)
            break
        except DatasetError:
            raise  # the hub's answer was refused: retrying would get the same
        except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
            if _is_offline(exc):  # LocalEntryNotFoundError is an EntryNotFoundError too
                last = exc
                break
            raise DatasetError(
                f"{task.dsrl_filename} is not on the hub at {hub_url(task, revision, endpoint)} "
                f"({type(exc).__name__}); build it with `presa-bench data collect --task {task.name}`"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - transient ones are retried, the rest reported below
            last = exc
            if not (_is_transient(exc) or _is_offline(exc)) or attempt == attempts:
                break
            if log is not None and not _is_offline(exc):  # offline ends in one line, not one per try
                log(f"{task.name}: attempt {attempt} failed ({type(exc).__name__}: {_first_line(exc)}); retrying")
            time.sleep(backoff_s * 2 ** (attempt - 1))
    if fetched is None:
        if isinstance(last, _HashMismatch):
            raise DatasetError(f"{last} ({attempts} attempt(s))") from last
        if last is not None and _is_offline(last):
            raise Offline(offline_message(task, type(last).__name__)) from last
        raise BenchError(
            f"downloading {task.dsrl_filename} failed after {attempts} attempt(s): {type(last).__name__}: {_first_line(last)}"
        ) from last
    local, commit, checked = fetched

    load_dataset(local, task)  # the data layer's validation (keys, shapes against the env, finite)
    local.replace(final)
    return Downloaded(task, final, sha256_of(final), final.stat().st_size, commit, True, checked)
