"""Deployments in the store, and the state machine that moves them: every
transition recorded with its reason, a transition that lost its race
changes nothing, final statuses are final, history pages."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from conveyor.daemon.artifacts import signing
from conveyor.daemon.delivery.records import DeploymentRecord, DeploymentStatus
from conveyor.daemon.delivery.rollout import TRANSITIONS, Ledger, sources_of
from conveyor.daemon.store import ArtifactStore, Database
from conveyor.daemon.store.deployments import DeploymentFilter, DeploymentStore, StaleTransition
from tests.unit.artifacts.test_store import draft, file_output, seal_with, stored_run
from tests.unit.delivery.support import record

S = DeploymentStatus


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "conveyor.db")
    try:
        yield database
    finally:
        database.close()


async def with_artifacts(db: Database, tmp_path: Path, *numbers: int) -> None:
    key = signing.load_or_create(tmp_path)
    run = await stored_run(db)
    drafts = [draft(run, file_output(n, name=f"a{n}")) for n in numbers]
    await ArtifactStore(db).record(drafts, seal_with(key))


async def test_a_deployment_is_stored_with_its_first_event_and_moves_with_reasons(
    db: Database, tmp_path: Path
) -> None:
    await with_artifacts(db, tmp_path, 1)
    store = DeploymentStore(db)
    stored = await store.create(record(), "deploy service.py 1.0.1 to staging, asked by uid:1000")
    assert [e.message for e in stored.events] == [
        "deploy service.py 1.0.1 to staging, asked by uid:1000"
    ]
    await store.log(stored.id, "starting replica 1/2")
    moved = await store.transition(
        stored.id, S.HEALTHY, "2 replica(s) healthy", expect={S.PROGRESSING}, healthy_at=5.0
    )
    assert (moved.status, moved.reason, moved.healthy_at) == (
        S.HEALTHY,
        "2 replica(s) healthy",
        5.0,
    )
    again = await store.get(stored.id)
    assert again is not None
    assert [(e.from_status, e.status, e.message) for e in again.events] == [
        (None, S.PROGRESSING, "deploy service.py 1.0.1 to staging, asked by uid:1000"),
        (None, S.PROGRESSING, "starting replica 1/2"),
        (S.PROGRESSING, S.HEALTHY, "2 replica(s) healthy"),
    ]
    assert [e.message for e in again.transitions] == ["2 replica(s) healthy"]


async def test_a_transition_from_another_status_writes_nothing(
    db: Database, tmp_path: Path
) -> None:
    await with_artifacts(db, tmp_path, 1)
    store = DeploymentStore(db)
    held = await store.create(record(status=S.PENDING_APPROVAL), "held")
    await store.transition(held.id, S.EXPIRED, "nobody approved it", expect={S.PENDING_APPROVAL})
    with pytest.raises(StaleTransition) as stale:
        await store.transition(
            held.id, S.PROGRESSING, "approved by uid:1", expect={S.PENDING_APPROVAL}
        )
    assert stale.value.status is S.EXPIRED
    after = await store.get(held.id)
    assert after is not None and after.status is S.EXPIRED and len(after.events) == 2


async def test_history_is_paged_newest_first_and_the_current_is_the_latest_healthy(
    db: Database, tmp_path: Path
) -> None:
    await with_artifacts(db, tmp_path, 1, 2)
    store = DeploymentStore(db)
    made: list[DeploymentRecord] = []
    for n, status in [(1, S.HEALTHY), (2, S.ROLLED_BACK), (1, S.HEALTHY), (2, S.HEALTHY)]:
        made.append(await store.create(record(status=status, n=n), "x"))
    other = await store.create(record("production", S.PENDING_APPROVAL, n=2), "y")
    first = await store.list_deployments(DeploymentFilter(environment="staging"), limit=3)
    assert [r.id for r in first] == [m.id for m in reversed(made)][:3]
    rest = await store.list_deployments(
        DeploymentFilter(environment="staging"), limit=3, before_id=first[-1].id
    )
    assert [r.id for r in rest] == [made[0].id]
    by_digest = await store.list_deployments(DeploymentFilter(digest=made[1].digest), limit=10)
    assert {r.id for r in by_digest} == {made[1].id, made[3].id, other.id}
    current = await store.current("staging")
    assert current is not None and current.id == made[3].id
    before = await store.healthy_before("staging", made[3].id)
    assert before is not None and before.id == made[2].id
    active = await store.active("production")
    assert active is not None and active.id == other.id
    assert await store.active("staging") is None
    assert await store.environments() == ["production", "staging"]


def test_final_statuses_never_move_and_every_status_is_reachable() -> None:
    for status in S:
        assert (not TRANSITIONS[status]) == status.finished
        if status is not S.PENDING_APPROVAL and status is not S.PROGRESSING:
            assert sources_of(status), status
    assert sources_of(S.PROGRESSING) == {S.PENDING_APPROVAL}
    assert sources_of(S.ROLLED_BACK) == {S.PROGRESSING}


async def test_the_ledger_tells_sinks_before_it_wakes_followers(
    db: Database, tmp_path: Path
) -> None:
    await with_artifacts(db, tmp_path, 1)
    ended: list[DeploymentRecord] = []
    ledger = Ledger(DeploymentStore(db), ended.append)
    stored = await ledger.store.create(record(), "created")
    lines: list[str] = []
    seen_when_woken: list[int] = []

    async def sink(line: str) -> None:
        await trio.sleep(0.01)  # a slow log
        lines.append(line)

    async def follower() -> None:
        await ledger.changed(stored.id).wait()
        seen_when_woken.append(len(lines))

    ledger.add_sink(stored.id, sink)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(follower)
        await trio.lowlevel.checkpoint()
        moved = await ledger.move(stored.id, S.FAILED, "replica 1 failed")
    assert lines == ["failed: replica 1 failed"] and seen_when_woken == [1]
    assert moved.finished_at is not None and ended == [moved]
    with pytest.raises(StaleTransition):
        await ledger.move(stored.id, S.HEALTHY, "too late")
    assert ended == [moved]
    assert replace(moved, events=[]).status is S.FAILED
