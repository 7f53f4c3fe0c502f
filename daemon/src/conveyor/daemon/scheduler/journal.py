"""Records state changes: store first (durable), then wake the watchers."""

from __future__ import annotations

from typing import Any

from conveyor.daemon.events import EventBus
from conveyor.daemon.records import EventRecord
from conveyor.daemon.secrets.redaction import redact, redact_fields
from conveyor.daemon.store import RunStore
from conveyor.daemon.store.runs import EventDraft, Update


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
        return (await self.record_all(run_id, [Update(event, run, stage)]))[0]

    async def record_all(self, run_id: str, updates: list[Update]) -> list[EventRecord]:
        """Store ``updates`` in one transaction, then tell watchers their
        events, in order."""
        # Reasons and messages may quote a stage kind or a caller: nothing
        # that holds a secret's value is stored or sent to watchers.
        redacted = [
            Update(
                redact_fields(event, ("message",)), _redacted_reason(run), _redacted_reason(stage)
            )
            for event, run, stage in updates
        ]
        records = await self.store.update_all(run_id, redacted)
        for record in records:
            self.bus.publish(run_id, record)
        return records


def _redacted_reason(columns: dict[str, Any] | None) -> dict[str, Any] | None:
    if columns is None or not columns.get("reason"):
        return columns
    return {**columns, "reason": redact(columns["reason"])}
