#!/usr/bin/env bash
# Make sure uv is available and the workspace environment (.venv) matches uv.lock.
# Used by every Makefile target, so `make demo` and `make test` work on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
  if [ -x "$HOME/.local/bin/uv" ]; then
    export PATH="$HOME/.local/bin:$PATH"
  else
    echo "bootstrap: installing uv" >&2
    python3 -m pip install --quiet --user uv 2>/dev/null \
      || python3 -m pip install --quiet --user --break-system-packages uv
    export PATH="$HOME/.local/bin:$PATH"
  fi
fi
command -v git >/dev/null 2>&1 || { echo "bootstrap: git is required" >&2; exit 1; }
uv sync --quiet --frozen --all-packages
