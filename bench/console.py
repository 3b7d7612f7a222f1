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


def print_table(table) -> None:  # type: ignore[no-untyped-def]
    """Print a rich table on stdout. Off a terminal (a pipe, a file) it takes $COLUMNS where that is set
    (cells wrap inside their columns, so a pager of that width shows no broken lines), else its natural
    width (one line per row, nothing cut, for files and grep)."""
    import os

    from rich.console import Console
    from rich.measure import Measurement

    out = console()
    if out.is_terminal:
        out.print(table)
        return
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        width = int(columns)
    else:
        width = max(Measurement.get(out, out.options.update_width(100_000), table).maximum, 80)
    Console(file=sys.stdout, width=width, no_color=out.no_color, force_terminal=False).print(table)
