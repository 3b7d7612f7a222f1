"""The `presa-bench` command line. Heavy libraries (torch, simulators, plotting) are imported lazily
inside commands so that `presa-bench --help` stays fast."""

from __future__ import annotations

import importlib
import inspect
import sys
import traceback

import bench  # noqa: F401  (applies bench.compat before anything else)
import typer

from bench.console import STATE
from bench.errors import BenchError

app = typer.Typer(
    name="presa-bench",
    help="Offline safe RL from heterogeneous feedback: PreSa and baselines on the DSRL tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: The command modules (bench/commands/<name>.py), in help order; each has ``register(app)``.
COMMAND_MODULES = ("tasks", "algos", "data", "feedback", "label", "run", "evaluate", "sweep", "report", "results")


@app.callback()
def _global(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    STATE["debug"] = debug


def _register(target: typer.Typer) -> None:
    """Add every command module's commands to ``target``. A module that does not import raises (the
    CLI fails loudly at start) rather than its commands vanishing from the CLI."""
    for name in COMMAND_MODULES:
        importlib.import_module(f"bench.commands.{name}").register(target)
    _reflow_help(target)


def _reflow_help(target: typer.Typer) -> None:
    """Command help from docstrings without the source's hard line breaks (Typer's command lists keep
    them): the lines of each paragraph are joined; blank lines still separate paragraphs."""
    for info in target.registered_commands:
        text = info.help or inspect.getdoc(info.callback) or ""
        info.help = "\n\n".join(" ".join(part.split()) for part in text.split("\n\n"))
    for group in target.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


_register(app)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app; BenchError -> one line on stderr and its exit code."""
    args = list(argv) if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    try:
        app(args=args, prog_name="presa-bench", standalone_mode=True)
    except SystemExit as exc:  # typer/click exit: usage errors are 2, --help is 0
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BenchError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; finished work is saved, rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - any other failure is still one line unless --debug
        if debug:
            traceback.print_exc()
        print(f"error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
