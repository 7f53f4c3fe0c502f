"""The event bus in-process: watchers are woken by publishes, recent events
are served from memory without gaps, and topics go with their last watcher."""

from __future__ import annotations

import time

import trio
import trio.testing

from conveyor.daemon import events
from conveyor.daemon.events import EventBus
from conveyor.daemon.records import EventKind, EventRecord, RunStatus

RUN = "0123456789ab00000000"


def event(seq: int, run_id: str = RUN) -> EventRecord:
    return EventRecord(
        run_id=run_id,
        seq=seq,
        time=time.time(),
        kind=EventKind.RUN_STATUS,
        run_status=RunStatus.RUNNING,
    )


async def test_a_publish_wakes_every_watcher_of_the_run_and_no_other() -> None:
    bus = EventBus()
    woken: list[str] = []

    async def watch(run_id: str, name: str, ready: trio.Event) -> None:
        with bus.subscribe(run_id) as topic:
            changed = topic.event
            ready.set()
            await changed.wait()
            woken.append(name)

    async with trio.open_nursery() as nursery:
        ready = [trio.Event() for _ in range(3)]
        nursery.start_soon(watch, RUN, "first", ready[0])
        nursery.start_soon(watch, RUN, "second", ready[1])
        nursery.start_soon(watch, "other", "other", ready[2])
        for r in ready:
            await r.wait()
        bus.publish(RUN, event(1))
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(woken) == ["first", "second"]
        bus.publish("other")
    assert sorted(woken) == ["first", "other", "second"]


def test_publishing_without_watchers_keeps_nothing() -> None:
    bus = EventBus()
    bus.publish(RUN, event(1))
    with bus.subscribe(RUN) as topic:
        assert topic.recent == []
        assert topic.cached_after(0) is None, "memory cannot say: read the store"


def test_recent_events_are_served_in_order_without_gaps() -> None:
    bus = EventBus()
    with bus.subscribe(RUN) as topic:
        for seq in (3, 5, 4, 6):  # stored in order, published a little out of it
            bus.publish(RUN, event(seq))
        assert [e.seq for e in topic.recent] == [3, 4, 5, 6]
        assert [e.seq for e in topic.cached_after(2) or []] == [3, 4, 5, 6]
        assert [e.seq for e in topic.cached_after(4) or []] == [5, 6]
        assert topic.cached_after(6) == [], "nothing newer yet: wait"
        assert topic.cached_after(1) is None, "event 2 is not in memory: read the store"


def test_a_gap_in_memory_ends_what_it_can_serve() -> None:
    bus = EventBus()
    with bus.subscribe(RUN) as topic:
        for seq in (1, 2, 4):
            bus.publish(RUN, event(seq))
        assert [e.seq for e in topic.cached_after(0) or []] == [1, 2]


def test_memory_per_run_is_bounded() -> None:
    bus = EventBus()
    with bus.subscribe(RUN) as topic:
        for seq in range(1, events.RECENT + 51):
            bus.publish(RUN, event(seq))
        assert len(topic.recent) == events.RECENT
        assert topic.recent[0].seq == 51
        assert topic.cached_after(10) is None


def test_a_topic_lives_as_long_as_its_watchers() -> None:
    bus = EventBus()
    with bus.subscribe(RUN) as first, bus.subscribe(RUN) as second:
        assert first is second
        bus.publish(RUN, event(1))
    with bus.subscribe(RUN) as fresh:
        assert fresh.recent == [], "the last watcher leaving dropped the topic"
