"""What live pages receive: server-sent events fed by the daemon's event
bus and log store, one stream per open page.

- the runs page: its table body again whenever any run changed (at most
  every :data:`RUNS_INTERVAL` s), only when it differs from the last one;
- a run page: each of the run's events as it is recorded (the page's script
  recolours the stage graph at once), and the parts of the page that
  change, rendered again at most every :data:`PARTS_INTERVAL` s while
  events come; ``end`` when the run has finished;
- a log page: the log's new bytes as HTML, as they are written; a reader
  more than :data:`SKIP_BEHIND` bytes behind skips to the last
  :data:`TAIL` bytes (and says so) rather than send everything; ``end``
  with the stage's final state.

A stream costs nothing while nothing happens but a keep-alive comment
every 15 s; the daemon's stop ends every stream.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import cast

import trio

from conveyor.daemon.records import EventKind, EventRecord, RunRecord, StageRecord
from conveyor.daemon.service import EVENT_BATCH, RunService
from conveyor.daemon.store import RunFilter
from conveyor.daemon.web.ansi import AnsiToHtml
from conveyor.daemon.web.http import Emit, sse
from conveyor.daemon.web.pages.logs import stage_head
from conveyor.daemon.web.pages.run import parts
from conveyor.daemon.web.pages.runs import rows

__all__ = ["Emit", "log_tail", "run_events", "run_updates", "runs_table"]

#: Seconds between two renderings of the runs table.
RUNS_INTERVAL = 0.5
#: Seconds from an event to the parts of a run page rendered again, and at
#: least between two renderings.
PARTS_DELAY = 0.1
PARTS_INTERVAL = 1.0
#: Events of a run read for its timings (a run has a few per stage).
MAX_EVENTS = 20_000
#: A log reader this many bytes behind the end skips ahead...
SKIP_BEHIND = 4 << 20
#: ... to this many bytes before the end.
TAIL = 256 << 10


async def run_events(service: RunService, run_id: str) -> list[EventRecord]:
    """The run's events so far, oldest first (at most :data:`MAX_EVENTS`)."""
    events: list[EventRecord] = []
    seq = 0
    while len(events) < MAX_EVENTS:
        page = await service.store.events_after(run_id, seq, EVENT_BATCH)
        events += page
        if len(page) < EVENT_BATCH:
            break
        seq = page[-1].seq
    return events


def runs_table(service: RunService, filt: RunFilter) -> Callable[[Emit], Awaitable[None]]:
    """The runs page's table body, again whenever it changes."""

    async def produce(emit: Emit) -> None:
        shown = ""
        while True:
            changed = service.bus.any_run
            runs, _ = await service.list_runs(filt, 50, "")
            html = rows(runs)
            if html != shown:
                await emit(sse("rows", {"html": html}))
                shown = html
            await changed.wait()
            await trio.sleep(RUNS_INTERVAL)

    return produce


def _event_data(event: EventRecord, index: dict[str, int]) -> dict[str, object]:
    status = event.stage_status if event.stage else event.run_status
    return {
        "seq": event.seq,
        "kind": event.kind.value,
        "stage": index.get(event.stage, -1) if event.stage else -1,
        "status": status.value if status is not None else "",
        "attempt": event.attempt,
        "retry": event.kind is EventKind.STAGE_RETRY,
        "message": event.message,
        "time": event.time,
    }


class _Debounce:
    """Wakes a renderer after a burst of events."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def poke(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = trio.Event()


def run_updates(
    service: RunService, run: RunRecord, after_seq: int
) -> Callable[[Emit], Awaitable[None]]:
    """A run's events after ``after_seq``, and its changing parts."""
    index = {stage.name: position for position, stage in enumerate(run.stages)}

    async def send_parts(emit: Emit) -> RunRecord:
        fresh = await service.get_run(run.id)
        events = await run_events(service, run.id)
        await emit(sse("parts", parts(fresh, events)))
        return fresh

    async def produce(emit: Emit) -> None:
        debounce = _Debounce()

        async def renderer() -> None:
            while True:
                await debounce.wait()
                await trio.sleep(PARTS_DELAY)
                await send_parts(emit)
                await trio.sleep(PARTS_INTERVAL)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(renderer)
            watch = cast("AsyncGenerator[EventRecord, None]", service.watch(run.id, after_seq))
            async with aclosing(watch) as events:
                async for event in events:
                    name = "stage" if event.stage else "run"
                    await emit(sse(name, _event_data(event, index), id=event.seq))
                    debounce.poke()
            nursery.cancel_scope.cancel()
        fresh = await send_parts(emit)
        await emit(sse("end", {"status": fresh.status.value}, id=fresh.last_event_seq))

    return produce


def log_tail(
    service: RunService, run: RunRecord, stage: StageRecord, offset: int
) -> Callable[[Emit], Awaitable[None]]:
    """A stage's log from ``offset`` on, as HTML, until the stage ends."""

    async def size_now() -> int:
        fresh = await service.get_run(run.id)
        return fresh.stage(stage.name).log_size

    async def produce(emit: Emit) -> None:
        position = offset
        converter = AnsiToHtml()
        while True:
            skip_to: int | None = None
            reader = cast(
                "AsyncGenerator[tuple[int, bytes], None]",
                service.stream_logs(run.id, stage.name, position, follow=True),
            )
            async with aclosing(reader) as chunks:
                async for chunk_offset, data in chunks:
                    end = chunk_offset + len(data)
                    if len(data) >= TAIL:  # a big read: maybe far behind
                        size = await size_now()
                        if size - end > SKIP_BEHIND:
                            skip_to = size - TAIL
                            break
                    html = converter.feed(data)
                    await emit(
                        sse("chunk", {"offset": chunk_offset, "end": end, "html": html}, id=end)
                    )
                    position = end
            if skip_to is None:
                break
            await emit(sse("skip", {"from": position, "to": skip_to}))
            position = skip_to
            converter = AnsiToHtml(skip_to_newline=True)
        tail = converter.feed(b"", final=True)
        fresh = await service.get_run(run.id)
        record = fresh.stage(stage.name)
        await emit(
            sse(
                "end",
                {"end": position, "html": tail, "head": stage_head(fresh, record)},
                id=position,
            )
        )

    return produce
