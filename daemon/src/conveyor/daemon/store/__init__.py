"""Durable state: SQLite (WAL) for runs, stages, events, idempotency keys
and artifacts."""

from conveyor.daemon.store.artifacts import ArtifactFilter, ArtifactStore
from conveyor.daemon.store.database import Database
from conveyor.daemon.store.runs import RunFilter, RunStore

__all__ = ["ArtifactFilter", "ArtifactStore", "Database", "RunFilter", "RunStore"]
