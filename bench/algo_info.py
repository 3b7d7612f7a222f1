"""What `presa-bench algos` shows of a method: what it reads and its ``--set`` keys, with the resolved
default of each and the source the config's author cited for it.

Everything is read from the method itself, so a user's algorithm is described the same way as the
shipped ones: the config dataclass that ``Algorithm.config_for`` returns for a cell, each field's
``metadata["help"]`` or its ``#:`` comment (the Sphinx convention every config of the project uses;
fields declared right under another share its comment), else the section comment above it, else the
class docstring's first sentence. That text carries the source of the default as the config's author
cited it (``[TraC/CPL: 1e-4]``, ``OSRL: batch_size 512``, ``[inferred]``).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from dataclasses import dataclass
from typing import Any

from bench.interfaces import Algorithm, TrainSpec

_FIELD = re.compile(r"^\s*([A-Za-z_]\w*)\s*:[^=]*(=.*)?$")


@dataclass(frozen=True)
class Setting:
    key: str
    default: str
    #: The field's documentation, with the source of its default.
    doc: str


@dataclass(frozen=True)
class AlgoInfo:
    name: str
    path: str
    reads: str
    summary: str
    settings: list[Setting]


def reads(cls: type[Algorithm]) -> str:
    """What a method may read of the data (bench.runner hands it exactly this)."""
    if cls.uses_ground_truth:
        return "ground-truth reward and cost"
    if cls.needs_feedback:
        return "feedback only"
    return "states and actions only"


def field_docs(config_cls: type) -> dict[str, str]:
    """Field name -> its documentation in the source of ``config_cls`` and its dataclass bases."""
    docs: dict[str, str] = {}
    for klass in reversed(config_cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):  # no source (e.g. built in a REPL): docs from metadata only
            continue
        head = (inspect.getdoc(klass) or "").split(". ")[0].strip()
        pending: list[str] = []
        section, previous = "", ""
        for line in lines[1:]:
            text = line.strip()
            if text.startswith("#:"):
                pending.append(text[2:].strip())
            elif text.startswith("#"):
                section, previous = text.strip("#- ").strip(), ""
            elif (match := _FIELD.match(line)) and not text.startswith(("def ", "@", "return")):
                doc = " ".join(pending) or previous or section or head
                docs[match.group(1)] = doc
                pending, previous = [], doc
            elif not text:
                previous = ""
    return docs


def _shown(value: Any) -> str:
    try:
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    except TypeError:
        return repr(value)


def describe(name: str, path: str, cls: type[Algorithm], spec: TrainSpec) -> AlgoInfo:
    """``cls``'s settings as `config_for(spec)` resolves them (the defaults of that task and profile)."""
    config = cls.config_for(spec)
    settings: list[Setting] = []
    if dataclasses.is_dataclass(config):
        docs = field_docs(type(config))
        for f in dataclasses.fields(config):
            doc = " ".join(str(f.metadata.get("help") or docs.get(f.name, "")).split())
            settings.append(Setting(f.name, _shown(getattr(config, f.name)), doc))
    summary = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
    return AlgoInfo(name, path, reads(cls), summary, settings)
