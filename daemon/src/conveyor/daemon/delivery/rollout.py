"""A deployment is a small state machine; this module is its table and the
one place that moves it (Argo Rollouts' way: every transition recorded
with its reason).

::

    pending_approval ──approved──▶ progressing ──healthy──▶ healthy
          │ │                        │ │ │
          │ └─expired─▶ expired      │ │ └─daemon stopped─▶ interrupted
          └─rejected─▶ rejected      │ └─unhealthy, previous restored─▶ rolled_back
                                     └─unhealthy, nothing to restore─▶ failed

A final status never changes again. :class:`Ledger` records each
transition (the store writes it with its reason as an event), ends the
deployment's span and counts it, tells the ``conveyor_deployment_finished``
hook, and wakes whoever follows the deployment (a ``deploy`` stage, a
waiting CLI).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from conveyor.daemon.delivery.records import DeploymentRecord, DeploymentStatus
from conveyor.daemon.store.deployments import DeploymentStore

log = logging.getLogger(__name__)

S = DeploymentStatus

#: The statuses each status may move to.
TRANSITIONS: Final[dict[DeploymentStatus, frozenset[DeploymentStatus]]] = {
    S.PENDING_APPROVAL: frozenset({S.PROGRESSING, S.REJECTED, S.EXPIRED}),
    S.PROGRESSING: frozenset({S.HEALTHY, S.FAILED, S.ROLLED_BACK, S.INTERRUPTED}),
    S.HEALTHY: frozenset(),
    S.FAILED: frozenset(),
    S.ROLLED_BACK: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
    S.INTERRUPTED: frozenset(),
}


def sources_of(status: DeploymentStatus) -> frozenset[DeploymentStatus]:
    """The statuses a deployment may be in to move to ``status``."""
    return frozenset(source for source, targets in TRANSITIONS.items() if status in targets)


#: Called with a deployment that reached a final status (span, metrics, hook).
Finished = Callable[[DeploymentRecord], None]


class Ledger:
    """Moves deployments through the table and tells whoever listens."""

    def __init__(self, store: DeploymentStore, finished: Finished) -> None:
        self.store = store
        self._finished = finished
        #: Set (and replaced) on each change of a deployment: followers wait
        #: on the current one, then read what is new.
        self._changed: dict[str, trio.Event] = {}
        #: Extra sinks of one deployment's log lines (a deploy stage's log).
        self._sinks: dict[str, list[Callable[[str], Awaitable[None]]]] = {}

    def changed(self, deployment_id: str) -> trio.Event:
        """An event set at the next change of the deployment."""
        return self._changed.setdefault(deployment_id, trio.Event())

    def _wake(self, deployment_id: str) -> None:
        event = self._changed.pop(deployment_id, None)
        if event is not None:
            event.set()

    async def move(
        self, deployment_id: str, status: DeploymentStatus, reason: str, **columns: Any
    ) -> DeploymentRecord:
        """Record the transition to ``status`` with ``reason`` (and columns);
        a final status also sets ``finished_at``. Raises
        :class:`~conveyor.daemon.store.deployments.StaleTransition` when the
        deployment is not in a status that may move there (nothing written)."""
        if status.finished:
            columns.setdefault("finished_at", time.time())
        record = await self.store.transition(
            deployment_id, status, reason, expect=sources_of(status), **columns
        )
        log.info("deployment %s %s: %s", deployment_id, status.value, reason)
        self._wake(deployment_id)
        await self._tell(deployment_id, f"{status.value}: {reason}")
        if status.finished:
            try:
                self._finished(record)
            except Exception:
                log.exception("deployment %s: reporting its end failed", deployment_id)
        return record

    async def note(self, deployment_id: str, message: str) -> None:
        """A line of the deployment's log (stored, and sent to its sinks)."""
        await self.store.log(deployment_id, message)
        self._wake(deployment_id)
        await self._tell(deployment_id, message)

    async def _tell(self, deployment_id: str, message: str) -> None:
        for sink in list(self._sinks.get(deployment_id, ())):
            try:
                await sink(message)
            except Exception:
                log.exception("deployment %s: a log sink failed", deployment_id)

    def add_sink(self, deployment_id: str, sink: Callable[[str], Awaitable[None]]) -> None:
        self._sinks.setdefault(deployment_id, []).append(sink)

    def remove_sink(self, deployment_id: str, sink: Callable[[str], Awaitable[None]]) -> None:
        sinks = self._sinks.get(deployment_id, [])
        if sink in sinks:
            sinks.remove(sink)
        if not sinks:
            self._sinks.pop(deployment_id, None)
