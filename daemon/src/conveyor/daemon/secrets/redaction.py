"""The process-wide redactor: every secret value this process has loaded,
masked out of whatever text leaves it other than a stage's own log (stage
reasons, events, reports, spans, API errors, the daemon's own log).

Process-wide on purpose: a logging filter, a span exporter and the API's
error path have no daemon at hand, and masking a value that one daemon in
the process knows (tests run several) costs nothing and hides nothing it
should show. Values are only ever added, so a secret that was changed or
removed stays masked for the life of the process.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import sys
import threading
from collections.abc import Mapping
from typing import Any, TextIO

from conveyor.daemon.reports import StageReport
from conveyor.daemon.secrets.masking import Masker


class Redactor:
    """Masks every value it was given (:meth:`add`), in every form."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, str] = {}
        self._masker = Masker({})

    def add(self, secrets: Mapping[str, str]) -> None:
        """Mask these values (name to value) from now on."""
        with self._lock:
            new = {value: name for name, value in secrets.items() if value not in self._values}
            if not new:
                return
            self._values.update(new)
            self._masker = Masker(
                {f"{name}#{i}": v for i, (v, name) in enumerate(self._values.items())}
            )

    @property
    def masker(self) -> Masker:
        return self._masker

    def text(self, text: str) -> str:
        """``text`` with every known value masked."""
        return self._masker.mask_text(text)


REDACTOR = Redactor()


def redact(text: str) -> str:
    """``text`` with every secret value this process knows masked."""
    return REDACTOR.text(text)


def redact_report(report: StageReport) -> StageReport:
    """``report`` with every secret value this process knows masked out of
    its texts (finding and test messages, the gate's reason...)."""
    masker = REDACTOR.masker
    if not masker:
        return report
    return StageReport.from_json(json.dumps(_masked(json.loads(report.to_json()), masker)))


def redact_fields(record: Any, names: tuple[str, ...]) -> Any:
    """A copy of the dataclass ``record`` with the text fields ``names``
    redacted (``record`` itself when there is nothing to mask)."""
    masker = REDACTOR.masker
    if not masker:
        return record
    changes = {name: masker.mask_text(getattr(record, name)) for name in names}
    return dataclasses.replace(record, **changes)


def _masked(value: Any, masker: Masker) -> Any:
    if isinstance(value, str):
        return masker.mask_text(value)
    if isinstance(value, list):
        return [_masked(item, masker) for item in value]
    if isinstance(value, dict):
        return {masker.mask_text(k): _masked(v, masker) for k, v in value.items()}
    return value


class RedactingFilter(logging.Filter):
    """Masks secret values in log records (message, arguments, traceback)
    before a handler writes them. Put it on handlers: a filter on a logger
    does not see the records of its children."""

    def filter(self, record: logging.LogRecord) -> bool:
        masker = REDACTOR.masker
        if not masker:
            return True
        record.msg = masker.mask_text(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = masker.mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = masker.mask_text(record.stack_info)
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Put a :class:`RedactingFilter` on every handler of ``logger`` (the
    root logger by default) that has none yet."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


class RedactingStream(io.TextIOBase):
    """A text stream that masks what is written to it before ``inner``
    gets it: for the daemon's standard output and error, which plugins may
    print to and Python writes tracebacks to."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        self.inner.write(REDACTOR.text(text))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.inner.fileno()

    def isatty(self) -> bool:
        return self.inner.isatty()


def install_stream_redaction() -> None:
    """Mask secret values in whatever reaches ``sys.stdout`` and
    ``sys.stderr`` from now on."""
    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout)
    if not isinstance(sys.stderr, RedactingStream):
        sys.stderr = RedactingStream(sys.stderr)
