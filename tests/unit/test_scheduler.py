"""The scheduler in-process (issue 7, item 11): DAG order and parallelism,
skips, retries with backoff, stage and run timeouts, concurrency groups,
cancelling a queued run, and draining in both shutdown modes.

Everything is real except the daemon process: a SQLite database under
``tmp_path``, git repositories and checkouts, the built-in ``run`` kind on
the ``local`` executor, and a ``probe`` stage kind whose stages do what the
test scripts for them (wait for an event, hang, fail) and record when they
start and end.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from conveyor.daemon.config import Config
from conveyor.daemon.records import EventKind, EventRecord, RunRecord, RunStatus, StageRecord
from conveyor.daemon.scheduler import Scheduler
from conveyor.daemon.scheduler.runner import RunExecution
from conveyor.daemon.service import RunService, SubmitRequest
from conveyor.daemon.store import RunStore
from conveyor.daemon.store.runs import Update
from conveyor.plugin import StageContext, StageKind, StageOutcome, StageSpec, StageStatus, hookimpl
from tests.support.inprocess import plugins_with, serving
from tests.support.repos import make_repo

Script = Callable[[StageContext], Awaitable[StageOutcome]]
#: Seconds any one wait of a test may take before it fails.
PATIENCE = 20


async def succeed(ctx: StageContext) -> StageOutcome:
    return StageOutcome(StageStatus.SUCCEEDED)


async def hang(ctx: StageContext) -> StageOutcome:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


def after(event: trio.Event) -> Script:
    """A stage that succeeds once ``event`` is set."""

    async def script(ctx: StageContext) -> StageOutcome:
        await event.wait()
        return StageOutcome(StageStatus.SUCCEEDED)

    return script


def rendezvous(count: int) -> Script:
    """Stages that succeed only once ``count`` of them run at the same time
    (run one after another, the first would wait forever)."""
    arrived = 0
    everyone = trio.Event()

    async def script(ctx: StageContext) -> StageOutcome:
        nonlocal arrived
        arrived += 1
        if arrived == count:
            everyone.set()
        await everyone.wait()
        return StageOutcome(StageStatus.SUCCEEDED)

    return script


@dataclass
class Probe:
    """The ``probe`` stage kind. Each stage runs the script the test gave
    for its name (default: succeed at once); every start and end is
    recorded, in order, as ``(what, run id, stage, attempt)``."""

    name: str = "probe"
    description: str = "a stage scripted by the test"
    scripts: dict[str, Script] = field(default_factory=dict)
    events: list[tuple[str, str, str, int]] = field(default_factory=list)
    #: When each attempt started (trio time), by (run id, stage, attempt).
    started_at: dict[tuple[str, str, int], float] = field(default_factory=dict)
    running: int = 0
    most_at_once: int = 0
    _starts: dict[tuple[str, str], trio.Event] = field(default_factory=dict)

    def validate(self, spec: StageSpec) -> Iterable[tuple[str, str]]:
        return []

    async def run(self, ctx: StageContext) -> StageOutcome:
        self.events.append(("start", ctx.run.id, ctx.name, ctx.attempt))
        self.started_at[ctx.run.id, ctx.name, ctx.attempt] = trio.current_time()
        self._started(ctx.run.id, ctx.name).set()
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            return await self.scripts.get(ctx.name, succeed)(ctx)
        finally:
            self.running -= 1
            self.events.append(("end", ctx.run.id, ctx.name, ctx.attempt))

    def _started(self, run_id: str, stage: str) -> trio.Event:
        return self._starts.setdefault((run_id, stage), trio.Event())

    async def wait_started(self, run: RunRecord, stage: str) -> None:
        with trio.fail_after(PATIENCE):
            await self._started(run.id, stage).wait()

    def index(self, what: str, run: RunRecord, stage: str) -> int:
        """Where in :attr:`events` the stage of ``run`` started or ended."""
        return self.events.index((what, run.id, stage, 1))

    def ran(self, run: RunRecord) -> bool:
        return any(run_id == run.id for _, run_id, _, _ in self.events)


class ProbePlugin:
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    @hookimpl
    def conveyor_stage_kinds(self) -> list[StageKind]:
        return [self.probe]


@dataclass
class Harness:
    config: Config
    service: RunService
    scheduler: Scheduler
    store: RunStore
    probe: Probe
    root: Path
    _names: Iterator[int] = field(default_factory=itertools.count)

    async def submit(self, pipeline: str, repo: Path | None = None) -> RunRecord:
        """Submit ``pipeline``, committed to a new repository (or ``repo``)."""
        if repo is None:
            repo = self.root / f"repo{next(self._names)}"
            await trio.to_thread.run_sync(make_repo, repo, {"conveyor.yaml": pipeline})
        run, created = await self.service.submit(SubmitRequest(repository=str(repo), ref="main"))
        assert created
        return run

    async def wait(self, run: RunRecord) -> RunRecord:
        """Follow the run until it ends; the run as stored then."""
        with trio.fail_after(PATIENCE):
            async for _ in self.service.watch(run.id, 0):
                pass
        return await self.stored(run)

    async def stored(self, run: RunRecord) -> RunRecord:
        return await self.service.get_run(run.id)

    async def events(self, run: RunRecord) -> list[EventRecord]:
        return await self.store.events_after(run.id, 0)

    def log(self, run: RunRecord, stage: str) -> bytes:
        path = self.config.logs_dir / run.id / f"{stage}.log"
        return path.read_bytes() if path.exists() else b""


@asynccontextmanager
async def open_scheduler(root: Path, **settings: Any) -> AsyncIterator[Harness]:
    """A serving scheduler behind a :class:`RunService`, as the daemon wires them."""
    config = Config(home=root / "home", kill_grace=1.0, **settings)
    probe = Probe()
    async with serving(config, plugins_with(probe=ProbePlugin(probe))) as wired:
        yield Harness(config, wired.service, wired.scheduler, wired.store, probe, root)


def _stage_statuses(run: RunRecord) -> dict[str, StageStatus]:
    return {stage.name: stage.status for stage in run.stages}


# -- the DAG ----------------------------------------------------------------------------


async def test_stages_start_after_their_needs_and_independent_ones_run_at_once(
    tmp_path: Path,
) -> None:
    async with open_scheduler(tmp_path) as h:
        h.probe.scripts["b"] = h.probe.scripts["c"] = h.probe.scripts["e"] = rendezvous(3)
        run = await h.submit(
            """
name: dag
stages:
  a: {uses: probe}
  b: {uses: probe, needs: [a]}
  c: {uses: probe, needs: [a]}
  d: {uses: probe, needs: [b, c, e]}
  e: {uses: probe, needs: [a]}
"""
        )
        final = await h.wait(run)
    assert final.status is RunStatus.SUCCEEDED
    assert set(_stage_statuses(final).values()) == {StageStatus.SUCCEEDED}
    probe = h.probe
    for middle in "bce":
        assert probe.index("end", run, "a") < probe.index("start", run, middle)
        assert probe.index("end", run, middle) < probe.index("start", run, "d")
    assert probe.most_at_once == 3, "b, c and e ran at the same time"


async def test_a_stage_that_can_start_is_recorded_running_before_the_waiting_stages_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first stage of a big run does not wait for every other stage's
    task to take its first step (trio runs a batch of new tasks in either
    order: several runs make the other order all but certain)."""
    steps: list[tuple[str, str]] = []
    stage_task, stage_change = RunExecution._stage_task, RunExecution._stage_change

    async def first_step(self: RunExecution, stage: StageRecord) -> None:
        steps.append(("task", stage.name))
        await stage_task(self, stage)

    def changing(
        self: RunExecution, stage: StageRecord, status: StageStatus, *args: Any, **kw: Any
    ) -> Update:
        steps.append((status.value, stage.name))
        return stage_change(self, stage, status, *args, **kw)

    monkeypatch.setattr(RunExecution, "_stage_task", first_step)
    monkeypatch.setattr(RunExecution, "_stage_change", changing)
    waiting = [f"s{i}" for i in range(1, 11)]
    pipeline = "name: fan\nstages:\n  first: {uses: probe}\n" + "".join(
        f"  {name}: {{uses: probe, needs: [first]}}\n" for name in waiting
    )
    async with open_scheduler(tmp_path) as h:
        for _ in range(8):
            steps.clear()
            final = await h.wait(await h.submit(pipeline))
            assert final.status is RunStatus.SUCCEEDED
            running = steps.index(("running", "first"))
            assert all(steps.index(("task", name)) > running for name in waiting), steps


@dataclass
class Transactions:
    """What each write of the runs' state stored, as (stage or "run",
    status) per event."""

    stored: list[list[tuple[str, str]]] = field(default_factory=list)
    _waiting: dict[tuple[str, str], trio.Event] = field(default_factory=dict)

    def add(self, events: list[tuple[str, str]]) -> None:
        self.stored.append(events)
        for event in events:
            self._waiting.setdefault(event, trio.Event()).set()

    async def wait_for(self, event: tuple[str, str]) -> None:
        with trio.fail_after(PATIENCE):
            await self._waiting.setdefault(event, trio.Event()).wait()


@pytest.fixture
def transactions(monkeypatch: pytest.MonkeyPatch) -> Transactions:
    """The writes of the runs' state, spied on."""
    spied = Transactions()
    update_all = RunStore.update_all

    async def spy(self: RunStore, run_id: str, updates: list[Update]) -> list[EventRecord]:
        records = await update_all(self, run_id, updates)
        events = [update.event for update in updates]
        spied.add([(e.stage or "run", str(e.stage_status or e.run_status)) for e in events])
        return records

    monkeypatch.setattr(RunStore, "update_all", spy)
    return spied


@pytest.mark.parametrize(
    ("pipeline", "a_fails", "with_a"),
    [
        ("a: {uses: probe}\n  b: {uses: probe, needs: [a]}", False, [("b", "running")]),
        ("a: {uses: probe}\n  b: {uses: probe}", False, []),  # b waits for a to end
        ("a: {uses: probe}\n  b: {uses: probe, needs: [a]}", True, []),  # b is skipped
    ],
    ids=["chain", "parallel", "skipped"],
)
async def test_the_last_stage_to_finish_is_stored_with_the_runs_end(
    tmp_path: Path,
    transactions: Transactions,
    pipeline: str,
    a_fails: bool,
    with_a: list[tuple[str, str]],
) -> None:
    """No stage waits for the last one: its final record and the run's are
    one transaction, the stage's event first. Every other stage's final
    record is stored before anything that needs it starts: with the
    `running` record of the stage it lets start, or on its own."""
    async with open_scheduler(tmp_path) as h:
        a_end = ("a", "failed" if a_fails else "succeeded")

        async def a(ctx: StageContext) -> StageOutcome:
            return StageOutcome(StageStatus.FAILED if a_fails else StageStatus.SUCCEEDED, "")

        async def b(ctx: StageContext) -> StageOutcome:
            await transactions.wait_for(a_end)
            return StageOutcome(StageStatus.SUCCEEDED)

        h.probe.scripts["a"], h.probe.scripts["b"] = a, b
        run = await h.submit(f"name: last\nstages:\n  {pipeline}\n")
        final = await h.wait(run)
        events = [(e.stage or "run", e.stage_status or e.run_status) for e in await h.events(run)]
        watched = [
            (e.stage or "run", e.stage_status or e.run_status)
            async for e in h.service.watch(run.id, 0)
        ]
    assert transactions.stored[-1] == [
        ("b", str(final.stages[1].status)),
        ("run", str(final.status)),
    ]
    assert [t for t in transactions.stored if ("a", str(final.stages[0].status)) in t] == [
        [("a", str(final.stages[0].status)), *with_a]
    ], "a's end is stored on its own, or with the start of what it lets start"
    assert events[-2:] == [("b", final.stages[1].status), ("run", final.status)]
    assert watched == events


async def test_a_stage_that_needs_others_is_stored_running_with_its_last_needs_end(
    tmp_path: Path, transactions: Transactions
) -> None:
    """One transaction per stage of a chain: a stage's final record and the
    `running` record of the stage it lets start; the stage that needs two
    starts with the last of them to end. Each process starts after both
    are stored, and watchers see the end before the start."""
    stored_at_start: dict[str, list[list[tuple[str, str]]]] = {}

    def probe(name: str) -> Callable[[StageContext], Awaitable[StageOutcome]]:
        async def script(ctx: StageContext) -> StageOutcome:
            stored_at_start[name] = list(transactions.stored)
            return StageOutcome(StageStatus.SUCCEEDED)

        return script

    async def c(ctx: StageContext) -> StageOutcome:
        # c ends once b's end is stored and b's task is done with it
        await transactions.wait_for(("b", "succeeded"))
        await trio.testing.wait_all_tasks_blocked()
        return await probe("c")(ctx)

    async with open_scheduler(tmp_path) as h:
        for name in "abd":
            h.probe.scripts[name] = probe(name)
        h.probe.scripts["c"] = c
        run = await h.submit(
            """
name: chain
stages:
  a: {uses: probe}
  b: {uses: probe, needs: [a]}
  c: {uses: probe, needs: [a]}
  d: {uses: probe, needs: [b, c]}
"""
        )
        final = await h.wait(run)
        events = [
            (e.stage or "run", str(e.stage_status or e.run_status)) for e in await h.events(run)
        ]
    assert final.status is RunStatus.SUCCEEDED
    a_end = [("a", "succeeded"), ("b", "running"), ("c", "running")]
    assert a_end in transactions.stored
    d_start = [t for t in transactions.stored if ("d", "running") in t]
    assert d_start == [[("c", "succeeded"), ("d", "running")]], "with the last need's end"
    assert a_end in stored_at_start["b"]
    assert d_start[0] in stored_at_start["d"]
    assert events.index(("a", "succeeded")) < events.index(("b", "running"))
    assert [e for e in events if e[0] == "d"] == [("d", "running"), ("d", "succeeded")]


async def test_a_failed_stage_skips_what_needs_it_and_fails_the_run(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path) as h:
        run = await h.submit(
            """
name: failing
stages:
  lint:
    run: echo ok
  test:
    run: exit 3
  build:
    needs: [lint, test]
    run: echo never
  docs:
    needs: [lint]
    run: echo docs
"""
        )
        final = await h.wait(run)
    assert final.status is RunStatus.FAILED
    assert final.reason == "stage 'test' failed: exit code 3"
    assert _stage_statuses(final) == {
        "lint": StageStatus.SUCCEEDED,
        "test": StageStatus.FAILED,
        "build": StageStatus.SKIPPED,
        "docs": StageStatus.SUCCEEDED,
    }
    assert final.stage("test").exit_code == 3
    assert final.stage("build").reason == "needs test, which did not succeed"
    assert h.log(final, "build") == b""
    assert b"docs" in h.log(final, "docs")


# -- retries and timeouts -----------------------------------------------------------------


async def test_a_failing_stage_is_retried_after_growing_delays_until_it_succeeds(
    tmp_path: Path,
) -> None:
    async def third_time_lucky(ctx: StageContext) -> StageOutcome:
        return StageOutcome.from_exit_code(0 if ctx.attempt == 3 else 1)

    async def hopeless(ctx: StageContext) -> StageOutcome:
        return StageOutcome.from_exit_code(1)

    async with open_scheduler(tmp_path) as h:
        h.probe.scripts.update(flaky=third_time_lucky, hopeless=hopeless)
        run = await h.submit(
            """
name: flaky
stages:
  flaky: {uses: probe, retries: {max: 4, backoff: 0.05s, factor: 2}}
  hopeless: {uses: probe, retries: {max: 1, backoff: 0.01s}}
"""
        )
        final = await h.wait(run)
        events = await h.events(run)
    flaky = final.stage("flaky")
    assert (flaky.status, flaky.attempt, flaky.exit_code) == (StageStatus.SUCCEEDED, 3, 0)
    retries = [e for e in events if e.kind is EventKind.STAGE_RETRY and e.stage == "flaky"]
    assert [(e.attempt, e.exit_code) for e in retries] == [(1, 1), (2, 1)]
    assert "retrying in 0.05s" in retries[0].message
    assert "retrying in 0.1s" in retries[1].message
    starts = [h.probe.started_at[run.id, "flaky", attempt] for attempt in (1, 2, 3)]
    assert starts[1] - starts[0] >= 0.05 and starts[2] - starts[1] >= 0.1
    assert b"attempt 1/5 exit code 1; retrying in 0.05s" in h.log(final, "flaky")
    hopeless_stage = final.stage("hopeless")
    assert (hopeless_stage.status, hopeless_stage.attempt) == (StageStatus.FAILED, 2)
    assert final.status is RunStatus.FAILED


async def test_a_stage_over_its_timeout_times_out_and_skips_what_needs_it(
    tmp_path: Path,
) -> None:
    async with open_scheduler(tmp_path) as h:
        h.probe.scripts["hang"] = hang
        run = await h.submit(
            """
name: stuck
stages:
  hang: {uses: probe, timeout: 0.1s}
  after: {uses: probe, needs: [hang]}
"""
        )
        final = await h.wait(run)
    assert final.status is RunStatus.TIMED_OUT
    assert final.reason == "stage 'hang' timed out after 0.1s"
    assert final.stage("hang").status is StageStatus.TIMED_OUT
    assert final.stage("after").status is StageStatus.SKIPPED
    assert b"stage timed out after 0.1s" in h.log(final, "hang")


async def test_a_run_over_its_timeout_times_out_its_running_stage_and_skips_the_rest(
    tmp_path: Path,
) -> None:
    async with open_scheduler(tmp_path) as h:
        h.probe.scripts["s"] = hang
        run = await h.submit(
            """
name: slow
timeout: 0.1s
stages:
  s: {uses: probe}
  t: {uses: probe, needs: [s]}
"""
        )
        final = await h.wait(run)
    assert final.status is RunStatus.TIMED_OUT
    assert final.reason == "run timed out after 0.1s"
    assert final.stage("s").status is StageStatus.TIMED_OUT
    assert final.stage("s").reason == "run timed out after 0.1s"
    assert final.stage("t").status is StageStatus.SKIPPED
    assert ("start", run.id, "t", 1) not in h.probe.events


# -- concurrency groups and cancellation ----------------------------------------------------

GROUPED = """
name: grouped
concurrency: {{cancel_in_progress: {cancel}}}
stages:
  s: {{uses: probe}}
"""


async def test_runs_of_a_concurrency_group_run_one_at_a_time_in_order(tmp_path: Path) -> None:
    release = trio.Event()
    async with open_scheduler(tmp_path) as h:
        h.probe.scripts["s"] = after(release)
        first = await h.submit(GROUPED.format(cancel="false"))
        repo = Path(first.repository)
        others = [await h.submit("", repo) for _ in range(2)]
        assert {r.concurrency_group for r in [first, *others]} == {"grouped/main"}
        await h.probe.wait_started(first, "s")
        await trio.testing.wait_all_tasks_blocked()
        assert h.scheduler.queued_runs == 2, "the others wait for the group, not for a slot"
        assert not any(h.probe.ran(run) for run in others)
        release.set()
        finals = [await h.wait(r) for r in [first, *others]]
    assert [f.status for f in finals] == [RunStatus.SUCCEEDED] * 3
    assert [(what, run_id) for what, run_id, _, _ in h.probe.events] == [
        (what, run.id) for run in [first, *others] for what in ("start", "end")
    ]


async def test_a_repository_removed_before_its_run_starts_fails_the_checkout(
    tmp_path: Path,
) -> None:
    release = trio.Event()
    async with open_scheduler(tmp_path) as h:
        h.probe.scripts["s"] = after(release)
        first = await h.submit(GROUPED.format(cancel="false"))
        queued = await h.submit("", Path(first.repository))
        await h.probe.wait_started(first, "s")
        await trio.to_thread.run_sync(shutil.rmtree, Path(first.repository))
        release.set()
        final = await h.wait(queued)
    assert final.status is RunStatus.FAILED
    assert final.reason.startswith("checkout failed: repository not found:"), final.reason
    assert not h.probe.ran(queued)


async def test_cancel_in_progress_cancels_the_older_run_of_the_group(tmp_path: Path) -> None:
    async def first_hangs(ctx: StageContext) -> StageOutcome:
        return await (hang(ctx) if ctx.run.number == 1 else succeed(ctx))

    async with open_scheduler(tmp_path) as h:
        h.probe.scripts["s"] = first_hangs
        older = await h.submit(GROUPED.format(cancel="true"))
        await h.probe.wait_started(older, "s")
        newer = await h.submit("", Path(older.repository))
        old_final = await h.wait(older)
        new_final = await h.wait(newer)
    assert old_final.status is RunStatus.CANCELLED
    assert old_final.reason == f"superseded by run #2 ({newer.id}) in group 'grouped/main'"
    assert old_final.stage("s").status is StageStatus.CANCELLED
    assert new_final.status is RunStatus.SUCCEEDED


async def test_cancelling_a_queued_run_records_it_and_its_stages_cancelled(
    tmp_path: Path,
) -> None:
    async with open_scheduler(tmp_path, max_concurrent_runs=1) as h:
        h.probe.scripts["s"] = hang
        running = await h.submit("name: one\nstages:\n  s: {uses: probe}\n")
        await h.probe.wait_started(running, "s")
        queued = await h.submit("name: two\nstages:\n  s: {uses: probe}\n  t: {uses: probe}\n")
        answer = await h.service.cancel_run(queued.id, "not needed")
        assert answer.status is RunStatus.CANCELLED
        assert answer.reason == "not needed"
        assert {s.name: (s.status, s.reason) for s in answer.stages} == {
            "s": (StageStatus.CANCELLED, "not started: not needed"),
            "t": (StageStatus.CANCELLED, "not started: not needed"),
        }
        assert (await h.stored(running)).status is RunStatus.RUNNING
        await h.service.cancel_run(running.id, "done")
        assert (await h.wait(running)).status is RunStatus.CANCELLED
    assert not h.probe.ran(queued)


# -- draining on shutdown ---------------------------------------------------------------------


async def test_draining_to_cancel_interrupts_running_runs_and_keeps_queued_ones_queued(
    tmp_path: Path,
) -> None:
    async with open_scheduler(tmp_path, max_concurrent_runs=1) as h:
        h.probe.scripts["s"] = hang
        running = await h.submit(
            "name: one\nstages:\n  s: {uses: probe}\n  t: {uses: probe, needs: [s]}\n"
        )
        await h.probe.wait_started(running, "s")
        queued = await h.submit("name: two\nstages:\n  s: {uses: probe}\n")
        with trio.fail_after(PATIENCE):
            await h.scheduler.drain("cancel", 30)
        # A run submitted while the daemon drains is stored, queued, and
        # left for the next start-up.
        late = await h.submit("name: three\nstages:\n  s: {uses: probe}\n")
        interrupted = await h.stored(running)
        left = [await h.stored(run) for run in (queued, late)]
    assert interrupted.status is RunStatus.INTERRUPTED
    assert interrupted.reason == "the daemon shut down while the run was in progress"
    assert _stage_statuses(interrupted) == {
        "s": StageStatus.INTERRUPTED,
        "t": StageStatus.SKIPPED,
    }
    assert [run.status for run in left] == [RunStatus.QUEUED] * 2
    assert all(s.status is StageStatus.PENDING for run in left for s in run.stages)
    assert not h.probe.ran(queued) and not h.probe.ran(late)


async def test_draining_to_finish_lets_running_runs_end_and_keeps_queued_ones_queued(
    tmp_path: Path,
) -> None:
    release = trio.Event()
    async with open_scheduler(tmp_path, max_concurrent_runs=1) as h:
        h.probe.scripts["s"] = after(release)
        running = await h.submit("name: one\nstages:\n  s: {uses: probe}\n")
        await h.probe.wait_started(running, "s")
        queued = await h.submit("name: two\nstages:\n  s: {uses: probe}\n")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.scheduler.drain, "finish", 30)
            await trio.testing.wait_all_tasks_blocked()
            assert not h.scheduler.accepting
            release.set()
        finished = await h.stored(running)
        still_queued = await h.stored(queued)
    assert finished.status is RunStatus.SUCCEEDED
    assert still_queued.status is RunStatus.QUEUED
    assert not h.probe.ran(queued)


async def test_draining_to_finish_interrupts_what_is_still_running_after_the_timeout(
    tmp_path: Path,
) -> None:
    async with open_scheduler(tmp_path) as h:
        h.probe.scripts["s"] = hang
        running = await h.submit("name: one\nstages:\n  s: {uses: probe}\n")
        await h.probe.wait_started(running, "s")
        with trio.fail_after(PATIENCE):
            await h.scheduler.drain("finish", 0.1)
        interrupted = await h.stored(running)
    assert interrupted.status is RunStatus.INTERRUPTED
    assert interrupted.stage("s").status is StageStatus.INTERRUPTED


async def test_the_scheduler_says_when_its_last_run_ends(tmp_path: Path) -> None:
    release = trio.Event()
    idle: list[tuple[int, int]] = []
    async with open_scheduler(tmp_path) as h:
        h.scheduler.on_idle = lambda: idle.append(
            (h.scheduler.active_runs, h.scheduler.queued_runs)
        )
        h.probe.scripts["s"] = after(release)
        first = await h.submit(GROUPED.format(cancel="false"))
        second = await h.submit("", Path(first.repository))
        await h.probe.wait_started(first, "s")
        assert idle == []
        release.set()
        await h.wait(first)
        await h.wait(second)
        await trio.testing.wait_all_tasks_blocked()
    assert idle == [(0, 0)], "once, when the second (the last) run ended"
