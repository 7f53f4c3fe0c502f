"""Conveyor benchmarks: ``python -m bench [NAME ...] [--quick]``.

Each benchmark starts its own ``conveyord`` in a throwaway home under /tmp,
prints a table and writes ``bench/results/<name>.json``. Targets are reported
as met or not, never asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: The workspace root, so that ``tests.support`` imports whatever the cwd is.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
