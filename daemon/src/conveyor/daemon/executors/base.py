"""The executor contract that stage kinds use to run processes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from conveyor.daemon.logstore import StageLog


class ExecutorError(Exception):
    """A process could not be started (missing program, bad workspace...)."""


@dataclass(frozen=True)
class ProcessRequest:
    """One process of a stage: its command, folder and complete environment."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    #: Seconds between SIGTERM and SIGKILL when the process is cancelled.
    kill_grace: float = 5.0


class Executor(Protocol):
    """Runs stage processes, sending their output (stdout and stderr merged)
    to the stage log.

    Cancellation: when the calling task is cancelled (stage timeout, run
    cancelled), the executor stops the process and everything it started
    (SIGTERM, then SIGKILL after ``kill_grace``) before re-raising.
    """

    name: str

    async def run(
        self,
        request: ProcessRequest,
        log: StageLog,
    ) -> int:
        """Run to completion and return the exit code (negative: killed by
        that signal). The request's environment carries the stage marker
        (``CONVEYOR_STAGE_PROCESS``): keep it in every process started, so a
        restarted daemon can clean up after a crash."""
        ...
