"""One rich Console for the CLI: wide enough for tables when output is not a terminal."""

from __future__ import annotations

import sys
from functools import lru_cache


@lru_cache(maxsize=None)
def console(stderr: bool = False):  # type: ignore[no-untyped-def]
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)
