"""A stage attempt that returns after its deadline is timed out, however
late the trio loop notices that its process ended (issue 9, item 1)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from conveyor.daemon.config import Config
from conveyor.daemon.events import EventBus
from conveyor.daemon.executors.base import LogOutput
from conveyor.daemon.executors.local import LocalExecutor
from conveyor.daemon.logstore import LogStore
from conveyor.daemon.pipeline import PipelineSpec, StageSpec
from conveyor.daemon.plugins import Plugins
from conveyor.daemon.records import RunRecord, RunStatus, StageRecord, StageStatus, TriggerKind
from conveyor.daemon.scheduler.control import RunControl
from conveyor.daemon.scheduler.journal import Journal
from conveyor.daemon.scheduler.runner import RunDeps, RunExecution
from conveyor.daemon.stages import StageContext, StageOutcome
from conveyor.daemon.store import Database, RunStore
from conveyor.daemon.telemetry.metrics import Instruments
from conveyor.daemon.telemetry.tracing import RunTracing
from conveyor.daemon.views import run_view


@dataclass
class ProcessKind:
    """Runs ``argv`` through the stage's executor, then holds the whole
    loop for ``hold`` seconds (a synchronous sleep) before answering."""

    argv: list[str]
    hold: float = 0.0
    name: str = "process"
    description: str = "runs a command"

    def validate(self, spec: StageSpec) -> Iterable[tuple[str, str]]:
        return []

    async def run(self, ctx: StageContext) -> StageOutcome:
        code = await ctx.run_process(self.argv)
        time.sleep(self.hold)  # noqa: ASYNC251 -- blocking the loop is the point
        return StageOutcome.from_exit_code(code)


@dataclass
class Attempt:
    execution: RunExecution
    ctx: StageContext


@pytest.fixture
async def attempt(tmp_path: Path) -> AsyncIterator[Attempt]:
    db = Database(tmp_path / "conveyor.db")
    deps = RunDeps(
        config=Config(home=tmp_path),
        journal=Journal(RunStore(db), EventBus()),
        logs=LogStore(tmp_path / "logs"),
        plugins=Plugins(),
        base_env={},
        tracing=RunTracing(
            TracerProvider().get_tracer("test"), Instruments(MeterProvider().get_meter("test"))
        ),
    )
    spec = PipelineSpec.model_validate({"name": "p", "stages": {"s": {"run": "x"}}})
    run_id = "0" * 20
    run = RunRecord(
        id=run_id,
        number=1,
        pipeline="p",
        repository=str(tmp_path),
        ref="main",
        commit="a" * 40,
        pipeline_path="conveyor.yaml",
        trigger=TriggerKind.MANUAL,
        status=RunStatus.RUNNING,
        created_at=time.time(),
        spec_json="{}",
        concurrency_group="",
        stages=[StageRecord(run_id=run_id, name="s", position=0, kind="process", needs=[])],
    )
    execution = RunExecution(deps, run, spec, RunControl(run_id, ""))
    execution.workspace.mkdir(parents=True)
    ctx = StageContext(
        run=run_view(run),
        name="s",
        spec=spec.stages["s"],
        attempt=1,
        workspace=execution.workspace,
        env={"PATH": "/usr/bin:/bin"},
        executor=LocalExecutor(),
        log=LogOutput(deps.logs.open_live(run_id, "s")),
        kill_grace=1.0,
    )
    try:
        yield Attempt(execution, ctx)
    finally:
        db.close()


async def test_a_process_ending_after_its_deadline_while_the_loop_is_held_up_times_out(
    attempt: Attempt,
) -> None:
    """The daemon's loop is busy (another task blocks it) from before the
    stage's deadline until after its process ended: when the loop gets
    back, the process's exit and the deadline are both due."""
    kind = ProcessKind(["sleep", "0.4"])
    outcome: list[StageOutcome] = []

    async def stage() -> None:
        outcome.append(await attempt.execution._attempt(kind, attempt.ctx, 0.3))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stage)
        await trio.sleep(0.1)
        # Hold the loop while the deadline (0.3 s) and the exit (0.4 s) pass.
        time.sleep(0.8)  # noqa: ASYNC251
    assert outcome[0].status is StageStatus.TIMED_OUT
    assert outcome[0].reason == "timed out after 0.3s"


async def test_a_stage_kind_answering_after_its_deadline_times_out(attempt: Attempt) -> None:
    kind = ProcessKind(["true"], hold=0.4)
    outcome = await attempt.execution._attempt(kind, attempt.ctx, 0.2)
    assert outcome.status is StageStatus.TIMED_OUT


async def test_a_stage_ending_within_its_deadline_keeps_its_result(attempt: Attempt) -> None:
    succeeded = await attempt.execution._attempt(ProcessKind(["true"]), attempt.ctx, 30)
    assert succeeded.status is StageStatus.SUCCEEDED
    failed = await attempt.execution._attempt(ProcessKind(["sh", "-c", "exit 3"]), attempt.ctx, 30)
    assert (failed.status, failed.exit_code) == (StageStatus.FAILED, 3)
    untimed = await attempt.execution._attempt(ProcessKind(["true"]), attempt.ctx, None)
    assert untimed.status is StageStatus.SUCCEEDED
