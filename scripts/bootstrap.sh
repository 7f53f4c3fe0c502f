#!/usr/bin/env bash
# Make sure uv is available and the workspace environment (.venv) matches uv.lock.
# Used by every Makefile target, so `make demo` and `make test` work on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v git >/dev/null 2>&1 || { echo "bootstrap: git is required" >&2; exit 1; }
if ! scripts/uv.sh --version >/dev/null 2>&1; then
  echo "bootstrap: installing uv (from PyPI)" >&2
  python3 -m pip install --quiet --user uv 2>/dev/null \
    || python3 -m pip install --quiet uv 2>/dev/null \
    || python3 -m pip install --quiet --user --break-system-packages uv
fi
# Compiled once here: every daemon, CLI and stage process imports the
# dependencies again, and where PYTHONDONTWRITEBYTECODE is set (or the venv is
# read-only) nothing would ever be cached (about 1 s per daemon start).
scripts/uv.sh sync --quiet --frozen --all-packages --compile-bytecode
