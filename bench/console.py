"""One rich Console for the CLI (wide enough for tables when output is not a terminal) and the CLI's
global state. A low module: bench.cli and the command modules import it, it imports neither."""

from __future__ import annotations

import sys
from functools import lru_cache

#: Set by the global --debug flag (and `run --debug`): show full tracebacks instead of one line.
STATE = {"debug": False}


@lru_cache(maxsize=None)
def console(stderr: bool = False):  # type: ignore[no-untyped-def]
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)
