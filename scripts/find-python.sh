#!/bin/bash
# Print the path of a Python 3.11 interpreter for `make install` (the pins hold the project on 3.11:
# docs/install.md). In order: $1 (make PYTHON=...), python3.11 on PATH, a CPython 3.11 that uv
# installs and manages (`uv python install 3.11`: fetched where a network allows), else one line on
# stderr saying how to get one, and exit 1.
set -u
is_311() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; }

if [ -n "${1:-}" ]; then
  if is_311 "$1"; then echo "$1"; exit 0; fi
  echo "error: PYTHON=$1 is not a Python 3.11 interpreter; presa-bench's pins need 3.11 (docs/install.md): leave PYTHON unset or point it at python3.11" >&2
  exit 1
fi
found=$(command -v python3.11 || true)
if [ -n "$found" ] && is_311 "$found"; then echo "$found"; exit 0; fi
if command -v uv >/dev/null 2>&1; then
  echo "python3.11 not found: installing a managed CPython 3.11 with uv (uv python install 3.11)" >&2
  if uv python install 3.11 >&2; then
    found=$(uv python find 3.11 2>/dev/null || true)
    if [ -n "$found" ] && is_311 "$found"; then echo "$found"; exit 0; fi
  fi
  echo "error: uv could not provide Python 3.11 (offline?); install python3.11 (e.g. apt-get install python3.11 or pyenv install 3.11) and rerun make install, or pass PYTHON=/path/to/python3.11" >&2
  exit 1
fi
echo "error: presa-bench needs Python 3.11 and found neither python3.11 nor uv: install one (apt-get install python3.11, pyenv install 3.11, or pip install uv: make install then fetches 3.11 with it), or pass PYTHON=/path/to/python3.11" >&2
exit 1
