"""The small things a new user meets: help paragraphs, tables in pipes, a --where that matches nothing."""

from __future__ import annotations

import click
import typer
from typer.testing import CliRunner

import bench  # noqa: F401
from bench.cli import app, main

runner = CliRunner()


def _commands(command: click.Command, path: str = "presa-bench"):  # type: ignore[no-untyped-def]
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, f"{path} {name}")


def test_help_paragraphs_carry_no_hard_line_breaks_of_the_source():
    for path, command in _commands(typer.main.get_command(app)):
        for paragraph in (command.help or "").split("\n\n"):
            assert "\n" not in paragraph, f"`{path} --help` keeps a line break of its docstring: {paragraph!r}"
    listing = " ".join(runner.invoke(app, ["label", "--help"]).output.split())
    assert "and single segments (is it safe?)" in " ".join(w.strip("│") for w in listing.split() if w.strip("│"))


def test_tasks_in_a_pipe_takes_columns_and_cuts_nothing(monkeypatch):
    monkeypatch.setenv("COLUMNS", "90")
    narrow = runner.invoke(app, ["tasks"])
    assert narrow.exit_code == 0, narrow.output
    table = [line for line in narrow.output.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and all(len(line) <= 90 for line in table)
    assert "…" not in narrow.output  # cells wrap inside their column, never cut
    monkeypatch.delenv("COLUMNS")
    wide = runner.invoke(app, ["tasks"])
    row = next(line for line in wide.output.splitlines() if line.startswith("│ BallCircle "))
    assert "OfflineBallCircle-v0" in row and "10/20/40" in row and "0.4..881.5" in row  # one line per task


def test_report_where_without_a_match_lists_the_values_that_exist(tmp_path, capsys):
    from test_report import hand_cells, write_store

    write_store(tmp_path, hand_cells().head(4), profile="quick")  # one task, one method, its 4 cells
    code = main(["report", "--results", str(tmp_path), "--no-plots", "--where", "profile=paper"])
    err = capsys.readouterr().err
    assert code == 2 and "no cells match --where profile=paper: profile is one of quick here" in err
    code = main(["report", "--results", str(tmp_path), "--no-plots", "--where", "threshold=30"])
    assert "threshold is one of 10, 20 here" in capsys.readouterr().err
