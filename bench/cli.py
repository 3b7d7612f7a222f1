"""The `presa-bench` command line. Heavy libraries (torch, simulators, plotting) are imported lazily
inside commands so that `presa-bench --help` stays fast."""

from __future__ import annotations

import sys
import traceback

import bench  # noqa: F401  (applies bench.compat before anything else)
import typer

from bench.errors import BenchError

app = typer.Typer(
    name="presa-bench",
    help="Offline safe RL from heterogeneous feedback: PreSa and baselines on the DSRL tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Set by the global --debug flag: show full tracebacks instead of one line.
STATE = {"debug": False}


@app.callback()
def _global(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    STATE["debug"] = debug


def _register() -> None:
    from bench.commands import data, tasks

    tasks.register(app)
    app.add_typer(data.app, name="data")
    for module_name in ("feedback", "label", "run", "sweep", "report", "results"):
        try:
            module = __import__(f"bench.commands.{module_name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"bench.commands.{module_name}":
                raise
            continue
        module.register(app)


_register()


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
