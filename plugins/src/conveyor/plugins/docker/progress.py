"""The engine's progress stream (build and push), written into the stage log.

The engine answers a build or a push with a stream of JSON objects, which
the SDK decodes (``decode=True``) into dicts:

- ``{"stream": "Step 2/4 : RUN make\\n"}``: builder output, written as is;
- ``{"status": "Pushing", "id": "1e3c5ebb113c", "progressDetail": {...}}``:
  one line per layer and status (``1e3c5ebb113c: Pushed``); repeated
  progress of the same layer and status is left out of the log;
- ``{"aux": {...}}``: results (the built image's ``ID``, a push's ``Digest``),
  kept, not logged;
- ``{"errorDetail": {"message": ...}, "error": ...}``: the failure. The engine
  reports errors inside the stream, not as an HTTP status: a build or push
  has failed when its stream carried an error, whatever else it said.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from conveyor.plugin import OutputWriter

#: ``---> Running in 9ef1b3c3d957``: the classic builder started a container.
RUNNING_IN: Final = re.compile(r"---> Running in ([0-9a-f]{12,64})\b")
#: ``Removing intermediate container 9ef1b3c3d957``: and removed it.
REMOVING: Final = re.compile(r"Removing intermediate container ([0-9a-f]{12,64})\b")


class ProgressLog:
    """Feeds a decoded progress stream into the stage log (from the worker
    thread that reads it) and keeps what the stage needs from it."""

    def __init__(self, writer: OutputWriter) -> None:
        self._writer = writer
        self._seen: set[tuple[str, str]] = set()
        #: The error the stream carried ("" when none).
        self.error = ""
        #: The ``aux`` objects, in order.
        self.aux: list[Mapping[str, Any]] = []
        #: The builder's intermediate container still running, if any.
        self.container = ""

    def feed_all(self, chunks: Iterable[Mapping[str, Any]]) -> None:
        for chunk in chunks:
            self.feed(chunk)

    def feed(self, chunk: Mapping[str, Any]) -> None:
        if not isinstance(chunk, Mapping):  # not an object: show it
            self._write(f"{chunk}\n")
            return
        if "errorDetail" in chunk or "error" in chunk:
            detail = chunk.get("errorDetail")
            message = detail.get("message") if isinstance(detail, Mapping) else None
            self.error = str(message or chunk.get("error") or "unknown error").strip()
            self._write(f"{self.error}\n")
            return
        aux = chunk.get("aux")
        if isinstance(aux, Mapping):
            self.aux.append(aux)
        text = chunk.get("stream")
        if isinstance(text, str):
            self._track_containers(text)
            self._write(text)
        status = chunk.get("status")
        if isinstance(status, str):
            self._status(chunk, status)

    def _track_containers(self, text: str) -> None:
        if started := RUNNING_IN.search(text):
            self.container = started.group(1)
        if (removed := REMOVING.search(text)) and self.container.startswith(removed.group(1)):
            self.container = ""

    def _status(self, chunk: Mapping[str, Any], status: str) -> None:
        layer = str(chunk.get("id") or "")
        detail = chunk.get("progressDetail")
        key = (layer, status)
        if isinstance(detail, Mapping) and "current" in detail and key in self._seen:
            return  # the same layer making progress: once is enough in a log
        self._seen.add(key)
        self._write(f"{layer}: {status}\n" if layer else f"{status}\n")

    def _write(self, text: str) -> None:
        if text:
            self._writer.write(text.encode("utf-8", "replace"))

    def aux_value(self, key: str) -> str:
        """The last ``aux`` value of ``key`` ("" when none)."""
        for aux in reversed(self.aux):
            value = aux.get(key)
            if isinstance(value, str) and value:
                return value
        return ""
