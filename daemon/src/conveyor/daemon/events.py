"""Wake-ups for watchers of a run, with the latest events kept in memory.

Events live in the store, so a watcher can resume from any sequence number;
while a run has watchers, the events published for it are also kept here
(bounded), so following a live run costs no database reads.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import trio

from conveyor.daemon.records import EventRecord

#: Events kept per watched run.
RECENT = 256


@dataclass
class Topic:
    event: trio.Event = field(default_factory=trio.Event)
    subscribers: int = 0
    #: Recently published events, sorted by sequence number.
    recent: list[EventRecord] = field(default_factory=list)

    def cached_after(self, seq: int) -> list[EventRecord] | None:
        """The events right after ``seq`` held in memory, without gaps.

        None when memory cannot say (read the store); an empty list when the
        next event has not been published yet.
        """
        if not self.recent or self.recent[0].seq > seq + 1:
            return None
        out: list[EventRecord] = []
        expected = seq + 1
        for event in self.recent:
            if event.seq < expected:
                continue
            if event.seq != expected:
                break
            out.append(event)
            expected += 1
        return out


class EventBus:
    def __init__(self) -> None:
        self._topics: dict[str, Topic] = {}
        self._any = trio.Event()

    @property
    def any_run(self) -> trio.Event:
        """Set at the next publish for any run (a new run, any event): take
        it *before* reading, then wait on it (the dashboard's runs page)."""
        return self._any

    def publish(self, run_id: str, record: EventRecord | None = None) -> None:
        """Wake the run's watchers (after ``record`` was stored)."""
        self._any.set()
        self._any = trio.Event()
        topic = self._topics.get(run_id)
        if topic is None:
            return
        if record is not None:
            keys = [e.seq for e in topic.recent]
            topic.recent.insert(bisect.bisect(keys, record.seq), record)
            del topic.recent[:-RECENT]
        topic.event.set()
        topic.event = trio.Event()

    @contextmanager
    def subscribe(self, run_id: str) -> Iterator[Topic]:
        """Take ``topic.event`` *before* reading, then wait on it."""
        topic = self._topics.setdefault(run_id, Topic())
        topic.subscribers += 1
        try:
            yield topic
        finally:
            topic.subscribers -= 1
            if topic.subscribers == 0:
                del self._topics[run_id]
