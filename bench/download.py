"""Download DSRL's own dataset files from their current home, the Hugging Face dataset of DSRL.

dsrl 0.1.0 (PyPI, 2023) downloads from DSRL's old server, which stopped answering in 2024. DSRL's
main branch moved its files to the Hugging Face dataset ``YYY-45/DSRL`` in liuzuxin/DSRL commit
71064f2 (2025-11-12, ``dsrl/infos.py``: ``https://huggingface.co/datasets/YYY-45/DSRL/resolve/main/
<file>``), with the same file names as before, so ``task.dsrl_filename`` is the file to fetch.

huggingface_hub's ``hf_hub_download`` does the transfer: it resumes a dropped connection with an
HTTP Range request (a few times per call), checks the size, writes into its cache under a
temporary name and only renames a complete file. It does not check the content hash, so this
module compares the file's sha256 with the hub's (the ETag of an LFS file is its sha256), then
validates it with the data layer, and only then links it into the dataset directory under its
final name (temporary name + rename). Transient failures (connection errors, 429/5xx, a size or
hash mismatch) are retried with a back-off.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.errors import BadInput, BenchError, DatasetError
from bench.tasks import BULLET, SAFETY_GYMNASIUM, Task, dataset_dir, paper_tasks

#: DSRL's Hugging Face dataset (liuzuxin/DSRL@71064f2, dsrl/infos.py) and the revision read.
HF_REPO = "YYY-45/DSRL"
HF_REVISION = "main"
#: The hub's cache, kept inside the dataset directory so that the final file is a hard link of
#: the cached blob (no second copy on disk) and a rerun finds what was downloaded.
CACHE_SUBDIR = ".hub-cache"

SUITES = {"bullet": BULLET, "safety-gymnasium": SAFETY_GYMNASIUM}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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


def _fetch_once(task: Task, cache_dir: Path, revision: str, endpoint: str | None) -> tuple[Path, str | None, bool]:
    """One attempt: the hub's metadata, hf_hub_download into the cache, sha256 check."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download

    url = hub_url(task, revision, endpoint)
    meta = get_hf_file_metadata(url, endpoint=endpoint)
    commit = meta.commit_hash
    local = Path(
        hf_hub_download(
            HF_REPO, task.dsrl_filename, repo_type="dataset", revision=commit or revision,
            cache_dir=cache_dir, endpoint=endpoint,
        )
    )
    expected = (meta.etag or "").strip('"').lower()
    if not _SHA256.match(expected):
        return local, commit, False
    got = sha256_of(local)
    if got != expected:
        blob = local.resolve()
        local.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)  # so that the next attempt downloads it again
        raise _HashMismatch(
            f"{task.dsrl_filename} from {url} has sha256 {got} but the hub gives {expected} (deleted; "
            "rerun to download it again)"
        )
    return local, commit, True


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
    tmp = final.with_name(f".{final.name}.{os.getpid()}.part")
    blob = local.resolve()
    try:
        os.link(blob, tmp)
    except OSError:
        shutil.copyfile(blob, tmp)
    tmp.replace(final)
    return Downloaded(task, final, sha256_of(final), final.stat().st_size, commit, True, checked)
