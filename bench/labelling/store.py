"""Answers of the labelling page: an append-only journal (one fsync'd JSON line per answer or undo)
from which the labels file (docs/feedback.md schema, CSV) is rewritten atomically after every event.

Files, for ``--out labels.csv``:

- ``labels.csv``: the labels file, rewritten after each answer as temp file + fsync + rename (+ fsync
  of the folder), so it is always either the old or the new complete file. "can't tell" answers are
  not in it (the schema has no such label); they are in the journal, so they are not asked again;
- ``labels.csv.journal``: line 1 the header (task, dataset hash, threshold, seed, queries, H), then
  one event per line. The journal is the record: on start the labels file is rebuilt from it, so a
  server killed between the journal write and the rename loses nothing, and one killed inside a
  journal write loses that answer only (the torn last line is dropped). The journal is locked
  (flock) while a server has it open: a second server on the same file is refused.

Several annotators may share one file (one after the other): each row carries its ``annotator``
and each annotator is asked every question once.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BadInput
from bench.feedback import PREFERENCE, SAFETY

JOURNAL_FORMAT = 1
#: Columns of the labels file written here (docs/feedback.md): the schema plus its optional columns.
COLUMNS = ("kind", "episode_0", "start_0", "episode_1", "start_1", "length", "label", "annotator", "dataset_hash")
#: Answer -> label of the schema (None: kept in the journal only).
PAIR_ANSWERS: dict[str, float | None] = {"left": 0.0, "right": 1.0, "equal": 0.5, "cant_tell": None}
SAFETY_ANSWERS: dict[str, float | None] = {"safe": 1.0, "unsafe": 0.0, "cant_tell": None}
#: Header fields that must match when a journal is reopened (the questions depend on them).
MATCHED = ("task", "dataset_hash", "threshold", "seed", "num_queries", "segment_length", "pair_sampling")


@dataclass(frozen=True)
class Query:
    """One question: a pair (``kind`` preference: left = segment 0, right = segment 1) or a segment."""

    id: str
    kind: str
    episodes: tuple[int, ...]
    starts: tuple[int, ...]
    length: int

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "episodes": list(self.episodes), "starts": list(self.starts), "length": self.length}


def build_queries(pair_episode: np.ndarray, pair_start: np.ndarray, safety_episode: np.ndarray, safety_start: np.ndarray, length: int) -> list[Query]:
    """The questions in asking order: pair 0, segment 0, pair 1, segment 1, ... (the rest of the
    longer list at the end)."""
    pairs = [Query(f"p{i}", PREFERENCE, (int(e[0]), int(e[1])), (int(s[0]), int(s[1])), int(length)) for i, (e, s) in enumerate(zip(pair_episode, pair_start))]
    single = [Query(f"s{i}", SAFETY, (int(e),), (int(s),), int(length)) for i, (e, s) in enumerate(zip(safety_episode, safety_start))]
    out: list[Query] = []
    for i in range(max(len(pairs), len(single))):
        out += pairs[i : i + 1] + single[i : i + 1]
    return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as a complete new file: temp + fsync + rename + fsync of the folder."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class LabelStore:
    """The answers of one labels file; ``annotator`` is who answers through this store."""

    def __init__(self, out: Path | str, header: dict[str, Any], queries: list[Query], annotator: str) -> None:
        self.out = Path(out)
        self.journal_path = self.out.with_name(self.out.name + ".journal")
        self.header = {"op": "header", "format": JOURNAL_FORMAT, **header}
        self.queries = queries
        self.by_id = {q.id: q for q in queries}
        self.annotator = str(annotator)
        if not self.annotator.strip():
            raise BadInput("--annotator must not be empty: give the name of the person labelling")
        #: (annotator, query id) -> answer, in the order the answers were given (dicts keep order)
        self.answers: dict[tuple[str, str], str] = {}
        #: per annotator, the query ids answered, newest last (what undo takes back)
        self.history: dict[str, list[str]] = {}
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.journal_path.exists():
            self._open_existing()
        else:
            self._refuse_foreign_file()
            self._journal = open(self.journal_path, "a", encoding="utf-8")
            self._lock()
            self._append(self.header)
        self._rewrite()

    # ---- opening ------------------------------------------------------------------------------

    def _lock(self) -> None:
        try:
            fcntl.flock(self._journal.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._journal.close()
            raise BadInput(f"{self.out} is open in another labelling server (its journal {self.journal_path} is locked): stop that one or choose another --out") from None

    def _refuse_foreign_file(self) -> None:
        if not self.out.exists():
            return
        hashes: set[str] = set()
        try:
            with open(self.out, encoding="utf-8", newline="") as f:
                hashes = {row.get("dataset_hash") or "" for row in csv.DictReader(f)} - {""}
        except (OSError, UnicodeDecodeError, csv.Error):
            pass
        ours = self.header["dataset_hash"]
        if hashes and hashes != {ours}:
            raise BadInput(f"labels file {self.out} is from another dataset (dataset_hash {', '.join(sorted(hashes))}, this one is {ours}): choose another --out or the dataset it was made for (--dataset)")
        raise BadInput(f"{self.out} exists but was not written by the labelling page (no journal {self.journal_path}): choose another --out")

    def _open_existing(self) -> None:
        self._journal = open(self.journal_path, "r+", encoding="utf-8")
        self._lock()
        raw = self._journal.read()
        lines = raw.split("\n")
        events: list[dict[str, Any]] = []
        keep = raw  # what of the journal stays: all of it, or all but a torn last line (a prefix)
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):  # torn last line: the answer in flight when the server died
                    keep = raw[: len(raw) - len(line)]
                    break
                raise BadInput(f"journal {self.journal_path} is damaged at line {number}: fix or remove that line") from None
            events.append(event)
        if keep != raw:  # shrink in place (the journal is ASCII: json.dumps escapes the rest)
            self._journal.truncate(len(keep.encode("utf-8")))
        self._journal.seek(0, os.SEEK_END)
        if keep and not keep.endswith("\n"):
            self._journal.write("\n")  # a last line cut just before its newline: end it
        if keep != raw or (keep and not keep.endswith("\n")):
            self._journal.flush()
            os.fsync(self._journal.fileno())
        if not events and not keep.strip():  # killed while writing the header: start afresh
            self._append(self.header)
            events = [self.header]
        if events[0].get("op") != "header":
            raise BadInput(f"journal {self.journal_path} has no header line: it is not a labelling journal; choose another --out")
        theirs = events[0]
        if theirs.get("dataset_hash") != self.header["dataset_hash"]:
            raise BadInput(
                f"labels file {self.out} is from another dataset ({theirs.get('dataset_hash')}, {theirs.get('dataset_path')}), "
                f"not this one ({self.header['dataset_hash']}): use --dataset for that one or choose another --out"
            )
        for key in MATCHED:
            if theirs.get(key) != self.header.get(key):
                raise BadInput(
                    f"labels file {self.out} was started with {key} = {theirs.get(key)}, not {self.header.get(key)}: "
                    f"rerun with the same settings (--{key.replace('_', '-').replace('num-', '')}) or choose another --out"
                )
        for number, event in enumerate(events[1:], start=2):
            try:
                self._apply(event)
            except BadInput as exc:
                raise BadInput(f"journal {self.journal_path}, line {number}: {exc}") from None

    # ---- events -------------------------------------------------------------------------------

    def _append(self, event: dict[str, Any]) -> None:
        self._journal.write(json.dumps(event, sort_keys=True) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def _check_answer(self, query_id: str, answer: str) -> Query:
        query = self.by_id.get(query_id)
        if query is None:
            raise BadInput(f"unknown query '{query_id}'")
        allowed = PAIR_ANSWERS if query.kind == PREFERENCE else SAFETY_ANSWERS
        if answer not in allowed:
            raise BadInput(f"answer '{answer}' does not fit a {query.kind} question: choose {', '.join(allowed)}")
        return query

    def _apply(self, event: dict[str, Any]) -> None:
        who, query_id = str(event.get("who")), str(event.get("q"))
        if event.get("op") == "answer":
            self._check_answer(query_id, str(event.get("a")))
            self.answers.pop((who, query_id), None)  # a new answer replaces the old, moves to the end
            self.answers[(who, query_id)] = str(event["a"])
            stack = self.history.setdefault(who, [])
            if query_id in stack:
                stack.remove(query_id)
            stack.append(query_id)
        elif event.get("op") == "undo":
            self.answers.pop((who, query_id), None)
            stack = self.history.setdefault(who, [])
            if query_id in stack:
                stack.remove(query_id)
        else:
            raise BadInput(f"unknown event {event.get('op')!r}")

    def answer(self, query_id: str, answer: str) -> None:
        """Record ``answer`` to ``query_id`` by this store's annotator: journal (fsync), then the labels file."""
        self._check_answer(query_id, answer)
        event = {"op": "answer", "q": query_id, "a": answer, "who": self.annotator, "t": round(time.time(), 3)}
        self._append(event)
        self._apply(event)
        self._rewrite()

    def undo(self) -> str | None:
        """Take back this annotator's newest answer; returns its query id (None if there is none)."""
        stack = self.history.get(self.annotator) or []
        if not stack:
            return None
        event = {"op": "undo", "q": stack[-1], "who": self.annotator, "t": round(time.time(), 3)}
        self._append(event)
        self._apply(event)
        self._rewrite()
        return str(event["q"])

    # ---- views --------------------------------------------------------------------------------

    def answered(self, annotator: str | None = None) -> int:
        who = self.annotator if annotator is None else annotator
        return sum(1 for (w, _) in self.answers if w == who)

    def next_query(self) -> Query | None:
        """The first question (in asking order) this annotator has not answered."""
        for query in self.queries:
            if (self.annotator, query.id) not in self.answers:
                return query
        return None

    def upcoming(self, count: int) -> list[Query]:
        """The next ``count`` unanswered questions (what the renderer prepares)."""
        out = []
        for query in self.queries:
            if (self.annotator, query.id) not in self.answers:
                out.append(query)
                if len(out) == count:
                    break
        return out

    def rows(self) -> list[dict[str, Any]]:
        """The labels-file rows: every answer that has a label, in the order given."""
        rows = []
        for (who, query_id), answer in self.answers.items():
            query = self.by_id[query_id]
            pref = query.kind == PREFERENCE
            label = (PAIR_ANSWERS if pref else SAFETY_ANSWERS)[answer]
            if label is None:
                continue
            rows.append(
                {
                    "kind": query.kind,
                    "episode_0": query.episodes[0],
                    "start_0": query.starts[0],
                    "episode_1": query.episodes[1] if pref else "",
                    "start_1": query.starts[1] if pref else "",
                    "length": query.length,
                    "label": f"{label:g}",
                    "annotator": who,
                    "dataset_hash": self.header["dataset_hash"],
                }
            )
        return rows

    def _rewrite(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        write_atomic(self.out, buffer.getvalue())

    def close(self) -> None:
        if not self._journal.closed:
            self._journal.close()  # releases the lock
