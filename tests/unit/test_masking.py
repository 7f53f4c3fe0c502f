"""Masking secret values (issue 11, item 5): every form of a value, in
whole texts and in streams cut anywhere, and the places that mask with
what the process knows (log records, spans, reports, stage outputs)."""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import sys
import urllib.parse

import pytest
import trio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from conveyor.daemon.executors.base import MaskedOutput
from conveyor.daemon.reports import Finding, StageReport
from conveyor.daemon.reports import TestCaseResult as CaseResult
from conveyor.daemon.secrets.masking import MASK, Masker
from conveyor.daemon.secrets.redaction import REDACTOR, RedactingFilter, redact, redact_report
from conveyor.daemon.telemetry.export import RedactingSpanExporter

VALUE = 'Tok3n/with+special="chars"&more?x9'
RAW = VALUE.encode()


@pytest.fixture
def masker() -> Masker:
    return Masker({"DEPLOY_TOKEN": VALUE})


def _encodings() -> dict[str, bytes]:
    out = {
        "plain": RAW,
        "json": json.dumps({"t": VALUE}).encode(),
        "json-ascii": json.dumps({"t": VALUE + "é"}, ensure_ascii=True).encode(),
        "url": urllib.parse.quote(VALUE, safe="").encode(),
        "url-lower": re.sub(
            "%[0-9A-F]{2}", lambda m: m.group(0).lower(), urllib.parse.quote(VALUE, safe="")
        ).encode(),
        "url-plus": urllib.parse.quote_plus(VALUE).encode(),
        "hex": RAW.hex().encode(),
        "HEX": RAW.hex().upper().encode(),
    }
    for lead in range(3):
        for trail in range(3):
            data = b"\x9b" * lead + RAW + b"\xfe" * trail
            out[f"base64 {lead}/{trail}"] = base64.b64encode(data)
            out[f"base64url {lead}/{trail}"] = base64.urlsafe_b64encode(data)
    return out


@pytest.mark.parametrize(("form", "encoded"), list(_encodings().items()), ids=list(_encodings()))
def test_every_form_of_a_value_is_masked(masker: Masker, form: str, encoded: bytes) -> None:
    text = b"before " + encoded + b" after"
    masked = masker.mask(text)
    assert MASK in masked
    assert masked.startswith(b"before ") and masked.endswith(b" after")
    # what is left of the encoding around the mask is too little to decode the value
    assert len(masked) < len(text) - len(RAW) // 2


def test_text_without_a_value_is_left_as_it_is(masker: Masker) -> None:
    text = b"no secret here, just " + RAW[:-1] + b"!"
    assert masker.mask(text) is text
    assert masker.mask_text("plain text") == "plain text"


def test_derived_forms_too_short_to_be_specific_are_not_masked() -> None:
    masker = Masker({"PIN": "abcd"})
    assert b"abcd" in masker.patterns
    assert all(len(p) >= 4 for p in masker.patterns)
    assert masker.mask_text("YW and 61") == "YW and 61"


def test_overlapping_and_nested_values_are_masked_as_one() -> None:
    masker = Masker({"SHORT": "abcd1234", "LONG": "abcd1234-and-more", "OVER": "1234-and"})
    assert masker.mask(b"[abcd1234-and-more]") == b"[***]"
    assert masker.mask(b"[abcd1234-and]") == b"[***]"
    assert masker.mask(b"x abcd1234 y 1234-and z") == b"x *** y *** z"


def test_the_owner_of_a_value_is_named_in_any_form(masker: Masker) -> None:
    assert masker.owner(f"TOKEN={VALUE}") == "DEPLOY_TOKEN"
    assert masker.owner("x" + base64.b64encode(b"ab" + RAW).decode()) == "DEPLOY_TOKEN"
    assert masker.owner(RAW.hex().upper()) == "DEPLOY_TOKEN"
    assert masker.owner("nothing") is None


def _stream(masker: Masker, chunks: list[bytes]) -> bytes:
    stream = masker.stream()
    out = b"".join(stream.feed(chunk) for chunk in chunks)
    return out + stream.flush()


def test_a_stream_cut_anywhere_is_masked_as_the_whole_text(masker: Masker) -> None:
    text = b"".join(b"line %d: " % i + form + b"\n" for i, form in enumerate(_encodings().values()))
    expected = masker.mask(text)
    assert RAW not in expected
    rng = random.Random(11)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 40)))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert _stream(masker, chunks) == expected


def test_a_value_written_one_byte_at_a_time_is_masked(masker: Masker) -> None:
    text = b"token: " + RAW + b"\n"
    assert _stream(masker, [text[i : i + 1] for i in range(len(text))]) == b"token: ***\n"


def test_a_stream_holds_back_only_what_could_begin_a_value(masker: Masker) -> None:
    stream = masker.stream()
    assert stream.feed(b"hello world\n") == b"hello world\n"
    assert stream.held == 0
    assert stream.feed(b"about to print Tok3n/wi") == b"about to print "
    assert stream.held == len(b"Tok3n/wi")
    assert stream.feed(b"nter\n") == b"Tok3n/winter\n"  # not the value after all
    stream.feed(b"a" * 10_000 + RAW[:-1])
    assert stream.held <= masker.longest - 1
    assert stream.flush() == RAW[:-1]


def test_masking_a_stream_without_values_copies_it() -> None:
    stream = Masker({}).stream()
    assert stream.feed(b"anything") == b"anything" and stream.flush() == b""


class _Writer:
    def __init__(self, sink: bytearray) -> None:
        self.sink = sink
        self.closed = False

    def write(self, data: bytes | memoryview) -> None:
        self.sink += data

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Collect:
    """A stage output that keeps what reaches it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.writers: list[_Writer] = []

    async def write(self, data: bytes) -> None:
        self.data += data

    def open_writer(self) -> _Writer:
        self.writers.append(_Writer(self.data))
        return self.writers[-1]

    @property
    def at_line_start(self) -> bool:
        return not self.data or self.data.endswith(b"\n")


async def test_a_masked_output_masks_writes_and_each_writer_stream(masker: Masker) -> None:
    inner = _Collect()
    output = MaskedOutput(inner, masker)
    await output.write(b"from the loop: " + RAW + b"\n")

    def pump() -> None:
        with output.open_writer() as writer:
            writer.write(b"from a thread: " + RAW[:5])
            writer.write(memoryview(RAW[5:] + b" and then " + RAW[:3]))

    await trio.to_thread.run_sync(pump)
    assert bytes(inner.data) == b"from the loop: ***\nfrom a thread: *** and then " + RAW[:3]
    assert inner.writers[0].closed and output.at_line_start is False


# -- what the process knows ------------------------------------------------------------------


@pytest.fixture
def known() -> str:
    """A value the process-wide redactor masks (values are never removed)."""
    value = "process-wide-secret-7f3a9c"
    REDACTOR.add({"KNOWN": value})
    return value


def test_log_records_are_masked_message_arguments_and_traceback(known: str) -> None:
    try:
        raise RuntimeError(f"failed with {known}")
    except RuntimeError:
        record = logging.getLogger("t").makeRecord(
            "t", logging.ERROR, __file__, 1, "token %s here", (known,), exc_info=None
        )
        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert "token *** here" in text and "failed with ***" in text
    assert known not in text


def test_reports_are_masked_in_every_text(known: str) -> None:
    report = StageReport(
        kind="test",
        findings=[Finding("t", "r", "high", "f.py", message=f"saw {known}")],
        tests=[CaseResult(f"test_{known}", "failed", message=known)],
        gate_passed=False,
        gate_reason=f"because {known}",
    )
    masked = redact_report(report)
    assert known not in masked.to_json()
    assert masked.findings[0].message == "saw ***" and masked.tests[0].name == "test_***"
    assert masked.gate_reason == "because ***"
    assert redact(f"a {known}") == "a ***"


def test_exported_spans_are_masked_attributes_events_and_status(known: str) -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(exported)))
    span = provider.get_tracer("t").start_span(f"deploy {known}", attributes={"token": known})
    span.add_event("retry", {"reason": f"failed: {known}", "n": 1})
    span.set_status(Status(StatusCode.ERROR, f"reason {known}"))
    span.end()
    (out,) = exported.get_finished_spans()
    assert out.name == "deploy ***" and out.attributes == {"token": "***"}
    assert out.events[0].attributes == {"reason": "failed: ***", "n": 1}
    assert out.status.description == "reason ***"
