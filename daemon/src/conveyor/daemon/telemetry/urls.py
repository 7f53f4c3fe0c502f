"""Stable URLs of runs and stages, for ``cicd.pipeline.run.url.full`` and
``cicd.pipeline.task.run.url.full``, and of the daemon itself
(``cicd.worker.url.full``).

With the web dashboard on (``web_listen``), they are its pages::

    http://127.0.0.1:7480                                      the daemon
    http://127.0.0.1:7480/runs/<run id>                        a run
    http://127.0.0.1:7480/runs/<run id>/stages/<stage>         a stage's log

Without it, the URLs name the daemon and its home folder with the
``conveyor`` scheme, which identifies a run uniquely across daemons (two
daemons on one host have two homes)::

    conveyor://build-1/var/lib/conveyor                        the daemon
    conveyor://build-1/var/lib/conveyor/runs/<run id>          a run
    conveyor://build-1/var/lib/conveyor/runs/<run id>/stages/<stage>

Either way they stay the same for the run's life (with the dashboard on a
fixed port). :func:`conveyor.daemon.telemetry.setup.configure` picks one.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import quote

__all__ = ["RunUrls"]

SCHEME = "conveyor"


class RunUrls:
    """URLs under one base: the web dashboard's (``http://127.0.0.1:7480``)
    or the daemon's (``conveyor://host/home``)."""

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
