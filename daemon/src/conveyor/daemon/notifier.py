"""Lifecycle notifications, delivered off the runs' path.

Runs post a :class:`Notification` and go on at once; one task
(:meth:`Notifier.serve`) delivers them in the order they were posted, so a
slow or hung plugin never delays a stage or a run. The queue is bounded:
when it is full, a new notification is dropped, counted and logged rather
than making a run wait.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

log = logging.getLogger(__name__)

#: Notifications waiting for delivery at most; more are dropped (and logged).
QUEUE_SIZE = 1000


@dataclass(frozen=True)
class Notification:
    """One call of a lifecycle hook, with its arguments (frozen views)."""

    hook: str
    kwargs: Mapping[str, Any]
    #: What it is about, for the daemon log: ``run 0a1b… stage build``.
    about: str


class Notifier:
    """A bounded queue of notifications and the task that delivers them.

    Start :meth:`serve` in a nursery (``await nursery.start(notifier.serve)``),
    :meth:`post` from anywhere on the trio loop, and :meth:`aclose` on
    shutdown.
    """

    def __init__(
        self,
        deliver: Callable[[Notification], Awaitable[None]],
        *,
        capacity: int = QUEUE_SIZE,
    ) -> None:
        self._deliver = deliver
        self.capacity = capacity
        self._send, self._receive = trio.open_memory_channel[Notification](capacity)
        self._scope = trio.CancelScope()
        self._started = False
        self._done = trio.Event()
        self._closed = False
        self._busy = False
        #: Notifications delivered, and dropped (queue full, or shutdown).
        self.delivered = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Notifications posted and not delivered yet (one may be in delivery)."""
        return self._receive.statistics().current_buffer_used + int(self._busy)

    def post(self, note: Notification) -> None:
        """Queue ``note`` for delivery; never blocks. When the queue is full
        or closed, the notification is dropped with a warning in the log."""
        if self._closed:
            self._drop(note, "the daemon is shutting down")
            return
        try:
            self._send.send_nowait(note)
        except trio.WouldBlock:
            self._drop(note, f"{self.capacity} notifications are already waiting")

    def _drop(self, note: Notification, why: str) -> None:
        self.dropped += 1
        log.warning(
            "dropped %s for %s: %s (%d dropped so far)", note.hook, note.about, why, self.dropped
        )

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver notifications until :meth:`aclose`.

        Cancellation: :meth:`aclose` cancels the delivery in progress when its
        deadline passes; cancelling the caller's scope does the same.
        """
        try:
            with self._scope:
                self._started = True
                task_status.started()
                async for note in self._receive:
                    self._busy = True
                    try:
                        await self._deliver(note)
                    except Exception:
                        log.exception("delivering %s for %s failed", note.hook, note.about)
                    finally:
                        self._busy = False
                    self.delivered += 1
        finally:
            self._done.set()

    async def aclose(self, deadline: float) -> None:
        """Stop taking notifications; deliver those queued until ``deadline``
        (on the trio clock), then cancel the delivery and drop what is left,
        with a warning."""
        self._closed = True
        self._send.close()
        if self._started:
            with trio.move_on_at(deadline):
                await self._done.wait()
        left = self.pending
        if left:
            self.dropped += left
            log.warning("%d notification(s) not delivered: the shutdown grace period ended", left)
        self._scope.cancel()
        if self._started:
            await self._done.wait()
