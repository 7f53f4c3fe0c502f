"""Durable state: SQLite (WAL) for runs, stages, events and idempotency keys."""

from conveyor.daemon.store.database import Database
from conveyor.daemon.store.runs import RunFilter, RunStore

__all__ = ["Database", "RunFilter", "RunStore"]
