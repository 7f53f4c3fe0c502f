"""Records state changes: store first (durable), then wake the watchers."""

from __future__ import annotations

from typing import Any

from conveyor.daemon.events import EventBus
from conveyor.daemon.records import EventRecord
from conveyor.daemon.store import RunStore
from conveyor.daemon.store.runs import EventDraft


class Journal:
    def __init__(self, store: RunStore, bus: EventBus) -> None:
        self.store = store
        self.bus = bus

    async def record(
        self,
        run_id: str,
        event: EventDraft,
        *,
        run: dict[str, Any] | None = None,
        stage: dict[str, Any] | None = None,
    ) -> EventRecord:
        record = await self.store.update(run_id, event, run=run, stage=stage)
        self.bus.publish(run_id, record)
        return record
