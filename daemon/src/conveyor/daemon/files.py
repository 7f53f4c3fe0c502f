"""Small helpers for writing files by descriptor."""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less). Blocking."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
