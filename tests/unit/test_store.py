"""The SQLite store in-process: runs, stages, events, recovery, idempotency,
paging, and reader connections that stay fixed however trio recycles its
worker threads."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from conveyor.daemon.records import (
    EventKind,
    RunRecord,
    RunStatus,
    StageRecord,
    StageStatus,
    TriggerKind,
)
from conveyor.daemon.store import Database, RunFilter, RunStore
from conveyor.daemon.store.runs import EventDraft


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "conveyor.db")
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def store(db: Database) -> RunStore:
    return RunStore(db)


_ids = iter(range(1, 1_000_000))


def make_run(pipeline: str = "svc", commit: str = "a" * 40, stages: int = 2) -> RunRecord:
    run_id = f"{next(_ids):012x}00000000"
    return RunRecord(
        id=run_id,
        number=0,
        pipeline=pipeline,
        repository="/srv/svc",
        ref="main",
        commit=commit,
        pipeline_path="conveyor.yaml",
        trigger=TriggerKind.MANUAL,
        status=RunStatus.QUEUED,
        created_at=time.time(),
        spec_json="{}",
        concurrency_group=f"{pipeline}/main",
        stages=[
            StageRecord(
                run_id=run_id,
                name=f"s{i}",
                position=i,
                kind="run",
                needs=[f"s{i - 1}"] if i else [],
            )
            for i in range(stages)
        ],
    )


async def test_a_created_run_reads_back_with_its_stages_number_and_first_event(
    store: RunStore,
) -> None:
    first, created = await store.create_run(make_run())
    second, _ = await store.create_run(make_run())
    other, _ = await store.create_run(make_run(pipeline="other"))
    assert created
    assert (first.number, second.number, other.number) == (1, 2, 1), "numbered per pipeline"
    loaded = await store.get_run(first.id)
    assert loaded is not None
    assert loaded.status is RunStatus.QUEUED
    assert [(s.name, s.position, s.needs) for s in loaded.stages] == [
        ("s0", 0, []),
        ("s1", 1, ["s0"]),
    ]
    events = await store.events_after(first.id, 0)
    assert [(e.seq, e.kind, e.run_status) for e in events] == [
        (1, EventKind.RUN_STATUS, RunStatus.QUEUED)
    ]
    assert await store.get_run("ffffffffffff00000000") is None


async def test_the_ref_type_found_at_submit_is_stored_with_the_run(store: RunStore) -> None:
    run = make_run()
    run.ref_type = "branch"  # for vcs.ref.head.type when a queued run is resumed
    stored, _ = await store.create_run(run)
    loaded = await store.get_run(stored.id)
    assert loaded is not None and loaded.ref_type == "branch"


async def test_updates_change_columns_and_append_numbered_events_atomically(
    store: RunStore,
) -> None:
    run, _ = await store.create_run(make_run())
    started = await store.update(
        run.id,
        EventDraft(EventKind.STAGE_STATUS, stage="s0", stage_status=StageStatus.RUNNING),
        run={"status": RunStatus.RUNNING, "started_at": 1.0},
        stage={"status": StageStatus.RUNNING, "attempt": 1},
    )
    assert started.seq == 2
    with pytest.raises(ValueError, match="cannot update runs columns"):
        await store.update(
            run.id, EventDraft(EventKind.RUN_STATUS), run={"status": "x", "number": 9}
        )
    loaded = await store.get_run(run.id)
    assert loaded is not None
    assert loaded.status is RunStatus.RUNNING and loaded.started_at == 1.0
    assert loaded.stage("s0").status is StageStatus.RUNNING
    assert loaded.stage("s0").attempt == 1
    assert loaded.last_event_seq == 2, "the refused update left nothing behind"
    assert await store.run_progress(run.id) == (RunStatus.RUNNING, 2)
    assert [e.seq for e in await store.events_after(run.id, 1)] == [2]


async def test_an_idempotency_key_answers_the_first_run(store: RunStore) -> None:
    first, created = await store.create_run(make_run(), "push:main:1")
    again, created_again = await store.create_run(make_run(), "push:main:1")
    assert created and not created_again
    assert again.id == first.id
    found = await store.run_for_idempotency_key(first.repository, "push:main:1")
    assert found is not None and found.id == first.id
    assert await store.run_for_idempotency_key(first.repository, "push:main:2") is None
    assert len(await store.list_runs(RunFilter(), limit=10)) == 1


async def test_list_runs_pages_newest_first_and_filters(store: RunStore) -> None:
    ids = [(await store.create_run(make_run()))[0].id for _ in range(5)]
    odd, _ = await store.create_run(make_run(pipeline="odd", commit="b" * 40))
    await store.update(
        odd.id,
        EventDraft(EventKind.RUN_STATUS, run_status=RunStatus.FAILED),
        run={"status": RunStatus.FAILED},
    )
    seen: list[str] = []
    before = ""
    while True:
        page = await store.list_runs(RunFilter(pipeline="svc"), limit=2, before_id=before)
        seen += [r.id for r in page]
        if len(page) < 2:
            break
        before = page[-1].id
    assert seen == list(reversed(ids))
    failed = await store.list_runs(RunFilter(status=RunStatus.FAILED), limit=10)
    assert [r.id for r in failed] == [odd.id]
    by_commit = await store.list_runs(RunFilter(commit_prefix="bbbb"), limit=10)
    assert [r.id for r in by_commit] == [odd.id]
    assert all(len(r.stages) == 2 for r in await store.list_runs(RunFilter(), limit=10))


async def _running_with_first_stage_done(store: RunStore) -> RunRecord:
    """A running run of the chain s0 -> s1 -> s2 whose s0 succeeded."""
    running, _ = await store.create_run(make_run(stages=3))
    await store.update(
        running.id, EventDraft(EventKind.RUN_STATUS), run={"status": RunStatus.RUNNING}
    )
    await store.update(
        running.id,
        EventDraft(EventKind.STAGE_STATUS, stage="s0"),
        stage={"status": StageStatus.SUCCEEDED},
    )
    return running


async def test_recovery_interrupts_running_runs_and_returns_queued_ones(
    store: RunStore,
) -> None:
    running = await _running_with_first_stage_done(store)
    await store.update(
        running.id,
        EventDraft(EventKind.STAGE_STATUS, stage="s1"),
        stage={"status": StageStatus.RUNNING},
    )
    queued, _ = await store.create_run(make_run())
    recovery = await trio.to_thread.run_sync(store.recover_sync, "daemon stopped")
    assert recovery.interrupted == [running.id]
    assert recovery.queued == [queued.id]
    loaded = await store.get_run(running.id)
    assert loaded is not None
    assert (loaded.status, loaded.reason) == (RunStatus.INTERRUPTED, "daemon stopped")
    assert [s.status for s in loaded.stages] == [
        StageStatus.SUCCEEDED,
        StageStatus.INTERRUPTED,
        StageStatus.SKIPPED,
    ]
    events = await store.events_after(running.id, 4)
    assert [(e.stage, e.stage_status, e.run_status) for e in events] == [
        ("s1", StageStatus.INTERRUPTED, None),
        ("s2", StageStatus.SKIPPED, None),
        ("", None, RunStatus.INTERRUPTED),
    ]
    again = await trio.to_thread.run_sync(store.recover_sync, "daemon stopped")
    assert again.interrupted == [] and again.queued == [queued.id]


async def test_recovery_interrupts_a_pending_stage_whose_needs_had_succeeded(
    store: RunStore,
) -> None:
    """A stage's process starts while its `running` record commits: one
    that was due to run when the daemon died may have started, so it is
    recorded interrupted; one still waiting for a need is skipped."""
    running = await _running_with_first_stage_done(store)
    await trio.to_thread.run_sync(store.recover_sync, "daemon stopped")
    loaded = await store.get_run(running.id)
    assert loaded is not None
    assert [(s.status, s.reason) for s in loaded.stages] == [
        (StageStatus.SUCCEEDED, ""),
        (StageStatus.INTERRUPTED, "daemon stopped"),
        (StageStatus.SKIPPED, "run was interrupted"),
    ]


async def test_a_failed_write_rolls_back_and_the_database_stays_usable(
    store: RunStore, db: Database
) -> None:
    run, _ = await store.create_run(make_run())
    duplicate = make_run()
    duplicate.id = run.id
    with pytest.raises(Exception, match="UNIQUE"):
        await store.create_run(duplicate)
    loaded = await store.get_run(run.id)
    assert loaded is not None and loaded.number == 1
    assert (await store.create_run(make_run()))[0].number == 2


# -- reader connections --------------------------------------------------------------


def _fds_on(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target == str(path):
            count += 1
    return count


async def _threads_retired(deadline: float) -> None:
    """Wait until trio's thread cache has no idle worker left (they retire
    after its idle timeout, lowered by the test)."""
    from trio._core import _thread_cache

    with trio.fail_after(deadline):
        # No event tells when a worker thread exits: poll, with a deadline.
        while _thread_cache.THREAD_CACHE._idle_workers:  # noqa: ASYNC110
            await trio.sleep(0.01)


async def test_reader_connections_stay_fixed_across_idle_periods(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trio retires worker threads idle for longer than its idle timeout (10 s,
    lowered here) and starts new ones: reads must not open a connection per
    new thread."""
    from trio._core import _thread_cache

    monkeypatch.setattr(_thread_cache, "IDLE_TIMEOUT", 0.05)
    store = RunStore(db)
    run, _ = await store.create_run(make_run())

    async def burst() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(store.get_run, run.id)

    counts: list[tuple[int, int]] = []
    for _ in range(3):
        await burst()
        counts.append((db.connections, _fds_on(db.path)))
        # Threads that served this burst picked up the lowered timeout when
        # they went idle; threads idle since before may need their old one.
        await _threads_retired(deadline=15)
    assert counts[0][1] >= 1
    assert counts == [counts[0]] * 3, f"connections and fds per period: {counts}"
