"""The client reads the daemon's rich error details when it can."""

from __future__ import annotations

import sys
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

from conveyor.client.errors import FieldViolation, translate_rpc_error


class RichRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, *extra: Message) -> None:
        self._code, self._details = code, details
        status = status_pb2.Status(code=code.value[0], message=details)
        for message in extra:
            packed = any_pb2.Any()
            packed.Pack(message)
            status.details.append(packed)
        self._trailers: tuple[Any, ...] = (("grpc-status-details-bin", status.SerializeToString()),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[Any, ...]:
        return self._trailers


def _bad_request(field: str, description: str) -> Message:
    violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
    request: Message = error_details_pb2.BadRequest(field_violations=[violation])
    return request


def test_field_violations_are_read_and_shown_when_the_message_lacks_them() -> None:
    exc = RichRpcError(
        grpc.StatusCode.INVALID_ARGUMENT, "bad request", _bad_request("reason", "too long")
    )
    err = translate_rpc_error(exc, "addr")
    assert err.field_violations == (FieldViolation("reason", "too long"),)
    assert str(err) == "bad request\n  reason: too long"


def test_a_violation_the_message_already_says_is_not_repeated() -> None:
    text = "reason is 5000 bytes long; the limit is 1024 bytes"
    exc = RichRpcError(grpc.StatusCode.INVALID_ARGUMENT, text, _bad_request("reason", text))
    assert str(translate_rpc_error(exc, "addr")) == text


def test_retry_info_becomes_retry_after() -> None:
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2))
    exc = RichRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many streams", info)
    err = translate_rpc_error(exc, "addr")
    assert err.retry_after == 2.0
    assert str(err) == "too many streams (retry in 2s)"


def test_without_googleapis_protos_the_message_is_enough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "google.rpc", None)
    exc = RichRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad", _bad_request("reason", "long"))
    err = translate_rpc_error(exc, "addr")
    assert err.field_violations == () and str(err) == "bad"


def test_a_malformed_details_trailer_is_ignored() -> None:
    exc = RichRpcError(grpc.StatusCode.NOT_FOUND, "gone")
    exc._trailers = (("grpc-status-details-bin", b"\xff\xff"),)
    err = translate_rpc_error(exc, "addr")
    assert err.code_name == "NOT_FOUND" and str(err) == "gone"
