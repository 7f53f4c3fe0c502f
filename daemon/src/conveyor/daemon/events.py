"""Wake-ups for watchers of a run. Events themselves live in the store;
this only says "run X has new events", so a watcher reads them from there
and can resume from any sequence number."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import trio


@dataclass
class _Topic:
    event: trio.Event = field(default_factory=trio.Event)
    subscribers: int = 0


class EventBus:
    def __init__(self) -> None:
        self._topics: dict[str, _Topic] = {}

    def publish(self, run_id: str) -> None:
        topic = self._topics.get(run_id)
        if topic is not None:
            topic.event.set()
            topic.event = trio.Event()

    @contextmanager
    def subscribe(self, run_id: str) -> Iterator[_Topic]:
        """Take ``topic.event`` *before* reading the store, then wait on it."""
        topic = self._topics.setdefault(run_id, _Topic())
        topic.subscribers += 1
        try:
            yield topic
        finally:
            topic.subscribers -= 1
            if topic.subscribers == 0:
                del self._topics[run_id]
