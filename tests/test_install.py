"""`make install` on a machine without python3.11: scripts/find-python.sh takes python3.11 from PATH,
else a CPython 3.11 that uv installs (here a fake `uv` that hands out this interpreter), else says in
one line how to get one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "find-python.sh"

FAKE_UV = f"""#!/bin/bash
echo "$@" >> "${{0%/*}}/uv.log"
if [ "$1 $2" = "python install" ]; then exit 0; fi
if [ "$1 $2" = "python find" ]; then echo "{sys.executable}"; exit 0; fi
exit 2
"""


def _run(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/bash", str(SCRIPT), *args], capture_output=True, text=True, env={"PATH": str(path)}, timeout=60)


def test_python311_on_path_is_used_and_uv_is_not_called(tmp_path):
    (tmp_path / "python3.11").symlink_to(sys.executable)
    (tmp_path / "uv").write_text(FAKE_UV)
    (tmp_path / "uv").chmod(0o755)
    result = _run(tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == str(tmp_path / "python3.11")
    assert not (tmp_path / "uv.log").exists()


def test_without_python311_uv_installs_one(tmp_path):
    (tmp_path / "uv").write_text(FAKE_UV)
    (tmp_path / "uv").chmod(0o755)
    result = _run(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == sys.executable
    assert (tmp_path / "uv.log").read_text().splitlines() == ["python install 3.11", "python find 3.11"]
    assert "installing a managed CPython 3.11 with uv" in result.stderr


def test_without_python311_and_uv_one_line_says_how(tmp_path):
    result = _run(tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "needs Python 3.11" in result.stderr and "uv" in result.stderr
    other = _run(tmp_path, "/bin/sh")  # make PYTHON=/bin/sh: not a Python 3.11
    assert other.returncode == 1 and "PYTHON=/bin/sh is not a Python 3.11 interpreter" in other.stderr


def test_make_install_creates_the_venv_with_the_interpreter_found(tmp_path):
    # called from `make test`, make's own variables would make this a sub-make that prints "Entering directory"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}
    dry = subprocess.run(["make", "--no-print-directory", "-n", "install", f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                         capture_output=True, text=True, env=env, timeout=60)
    assert dry.returncode == 0, dry.stderr
    first = dry.stdout.splitlines()[0]
    assert "scripts/find-python.sh" in first and '-m venv' in first and "python3.11 -m venv" not in first
