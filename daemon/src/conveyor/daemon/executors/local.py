"""The ``local`` executor: stage processes run on this machine, in the run's
workspace. It is the embedded default and is registered as a plugin through
the ``conveyor`` entry-point group like any other executor."""

from __future__ import annotations

from conveyor.daemon.executors.base import Executor, ProcessRequest
from conveyor.daemon.executors.process import run_in_process_group
from conveyor.daemon.hookspecs import hookimpl
from conveyor.daemon.logstore import StageLog


class LocalExecutor:
    name = "local"

    async def run(
        self,
        request: ProcessRequest,
        log: StageLog,
    ) -> int:
        return await run_in_process_group(request, log)


@hookimpl
def conveyor_executors() -> list[Executor]:
    return [LocalExecutor()]
