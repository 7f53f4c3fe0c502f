"""The ``local`` executor: stage processes run on this machine, in the run's
workspace. It is the embedded default and is registered as a plugin through
the ``conveyor`` entry-point group like any other executor, written against
the public :mod:`conveyor.plugin` only."""

from __future__ import annotations

from conveyor.plugin import (
    Executor,
    ProcessRequest,
    StageOutput,
    hookimpl,
    run_in_process_group,
)


class LocalExecutor:
    name = "local"

    async def run(self, request: ProcessRequest, output: StageOutput) -> int:
        return await run_in_process_group(request, output)


@hookimpl
def conveyor_executors() -> list[Executor]:
    return [LocalExecutor()]
