"""Stable URLs of runs and stages, for ``cicd.pipeline.run.url.full`` and
``cicd.pipeline.task.run.url.full``, and of the daemon itself
(``cicd.worker.url.full``).

Until Conveyor serves a web dashboard, the URLs name the daemon and its home
folder with the ``conveyor`` scheme::

    conveyor://build-1/var/lib/conveyor                        the daemon
    conveyor://build-1/var/lib/conveyor/runs/<run id>          a run
    conveyor://build-1/var/lib/conveyor/runs/<run id>/stages/<stage>

They identify a run uniquely across daemons (two daemons on one host have
two homes) and stay the same for the run's life. When the dashboard exists,
``RunUrls(web_url)`` gives the same paths under its address: only the line
in :func:`conveyor.daemon.telemetry.setup.configure` that makes the
``RunUrls`` changes.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import quote

__all__ = ["RunUrls"]

SCHEME = "conveyor"


class RunUrls:
    """URLs under one base: the daemon's (``conveyor://host/home``) or,
    later, the web dashboard's (``https://ci.example.org``)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    @classmethod
    def of_daemon(cls, home: Path, host: str | None = None) -> RunUrls:
        """The ``conveyor://`` URLs of the daemon with this home folder on
        this host (``socket.gethostname()`` unless given)."""
        name = (host if host is not None else socket.gethostname()).lower() or "localhost"
        return cls(f"{SCHEME}://{quote(name, safe='')}{quote(str(home.absolute()))}")

    @property
    def daemon(self) -> str:
        return self.base

    def run(self, run_id: str) -> str:
        return f"{self.base}/runs/{quote(run_id, safe='')}"

    def stage(self, run_id: str, stage: str) -> str:
        return f"{self.run(run_id)}/stages/{quote(stage, safe='')}"
