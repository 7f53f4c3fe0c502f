"""Records state changes: store first (durable), then wake the watchers."""

from __future__ import annotations

from typing import Any

from conveyor.daemon.events import EventBus
from conveyor.daemon.records import EventRecord
from conveyor.daemon.secrets.redaction import redact, redact_fields
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
        # Reasons and messages may quote a stage kind or a caller: nothing
        # that holds a secret's value is stored or sent to watchers.
        event = redact_fields(event, ("message",))
        run = _redacted_reason(run)
        stage = _redacted_reason(stage)
        record = await self.store.update(run_id, event, run=run, stage=stage)
        self.bus.publish(run_id, record)
        return record


def _redacted_reason(columns: dict[str, Any] | None) -> dict[str, Any] | None:
    if columns is None or not columns.get("reason"):
        return columns
    return {**columns, "reason": redact(columns["reason"])}
