"""What a client may send, and how much one answer may hold.

One table bounds every string field of every ``ConveyorService`` request;
:func:`check_request` applies it (the admission interceptor calls it for
every call, in the gRPC worker thread, before anything reaches the trio
loop). The response limits keep every answer well below the 4 MiB that gRPC
clients accept by default, whatever the store holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from conveyor.daemon.errors import InvalidArgument

__all__ = [
    "LIST_BUDGET",
    "MAX_ERROR_BYTES",
    "MAX_PATH_COMPONENT",
    "MAX_RESPONSE_TEXT",
    "REQUEST_FIELDS",
    "RUN_BUDGET",
    "FieldLimit",
    "check_request",
]

Characters = Literal["line", "text", "any"]


@dataclass(frozen=True)
class FieldLimit:
    """The bound of one request field.

    ``characters``: ``"line"`` allows no control character at all (names,
    paths, ids, refs); ``"text"`` allows line breaks and tabs but no NUL or
    other control character; ``"any"`` checks only the size.
    """

    max_bytes: int
    characters: Characters = "line"
    #: A file-system path: each component is also bounded.
    path: bool = False


#: Request string fields, by name: a name means the same thing in every request.
#: Sizes are UTF-8 bytes.
REQUEST_FIELDS: Final[dict[str, FieldLimit]] = {
    "repository": FieldLimit(4096, path=True),
    "ref": FieldLimit(1024),
    "commit": FieldLimit(64),
    "pipeline_path": FieldLimit(1024, path=True),
    "idempotency_key": FieldLimit(256),
    "run_id": FieldLimit(40),
    "pipeline": FieldLimit(100),
    "page_token": FieldLimit(40),
    "stage": FieldLimit(100),
    "reason": FieldLimit(1024, "text"),
    "file": FieldLimit(1024),
    # artifacts: a reference (digest, NAME:TAG, NAME@digest) and the filters
    "artifact": FieldLimit(512),
    "version": FieldLimit(128),
    "tag": FieldLimit(128),
    # an artifact's name (ListArtifacts) and a token's (IssueToken)
    "name": FieldLimit(256),
    # delivery: environment names, a rollback's target, approval comments
    "environment": FieldLimit(100),
    "from_environment": FieldLimit(100),
    "to": FieldLimit(40),
    "deployment_id": FieldLimit(40),
    "comment": FieldLimit(1024, "text"),
    # the pipeline file's own limit; the loader reports what is wrong inside
    "content": FieldLimit(1 << 20, "any"),
    # identity and access
    "identity": FieldLimit(256),
    "roles": FieldLimit(120),
    "repositories": FieldLimit(4096, path=True),
    "token_id": FieldLimit(40),
    "action": FieldLimit(100),
}

#: Longest file or folder name in a path (what Linux file systems allow).
MAX_PATH_COMPONENT: Final = 255

#: Longest text sent in one response field; longer stored text (written by an
#: older daemon, or a plugin's long message) is cut on the way out.
MAX_RESPONSE_TEXT: Final = 4096
#: Bytes one ``Run`` in a GetRun, CancelRun or SubmitRun answer may take.
RUN_BUDGET: Final = 3 << 20
#: Bytes one ListRuns page may take; a page stops early and sets
#: ``next_page_token`` rather than pass it.
LIST_BUDGET: Final = 1 << 20
#: Longest error message, in bytes: gRPC drops a status whose trailers pass
#: its metadata limit (8 KiB soft, 16 KiB hard) and the client sees only
#: "Stream removed".
MAX_ERROR_BYTES: Final = 2048

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", errors="surrogatepass"))


def _check_string(name: str, value: str, limit: FieldLimit) -> None:
    if len(value) > limit.max_bytes or (
        len(value) * 4 > limit.max_bytes and _utf8_size(value) > limit.max_bytes
    ):
        raise InvalidArgument(
            f"{name} is {_utf8_size(value)} bytes long; the limit is {limit.max_bytes} bytes",
            field=name,
        )
    pattern = {"line": _CONTROL, "text": _TEXT_CONTROL, "any": None}[limit.characters]
    bad = pattern.search(value) if pattern is not None else None
    if bad is not None:
        allowed = "a single line" if limit.characters == "line" else "text"
        raise InvalidArgument(
            f"{name} contains the control character U+{ord(bad.group()):04X} at position"
            f" {bad.start()}; it must be {allowed} without control characters",
            field=name,
        )
    if limit.path:
        for part in value.split("/"):
            if _utf8_size(part) > MAX_PATH_COMPONENT:
                raise InvalidArgument(
                    f"{name} has a path component of {_utf8_size(part)} bytes"
                    f" ({part[:40]!r}...); the limit is {MAX_PATH_COMPONENT} bytes",
                    field=name,
                )


def check_request(request: Message) -> None:
    """Raise :class:`InvalidArgument`, naming the field and the limit, for a
    string over its size, a forbidden character, or an unknown enum value.

    Fields without an entry in :data:`REQUEST_FIELDS` are held to 1 KiB on
    one line (a test keeps the table complete).
    """
    for field in request.DESCRIPTOR.fields:
        value = getattr(request, field.name)
        if field.type == FieldDescriptor.TYPE_STRING:
            values = value if field.is_repeated else [value]
            limit = REQUEST_FIELDS.get(field.name, FieldLimit(1024))
            for item in values:
                _check_string(field.name, item, limit)
        elif field.type == FieldDescriptor.TYPE_ENUM and not field.is_repeated:
            enum = field.enum_type
            assert enum is not None
            if value not in enum.values_by_number:
                known = ", ".join(v.name for v in enum.values)
                raise InvalidArgument(
                    f"{field.name}: unknown {enum.name} value {value}; expected one of {known}",
                    field=field.name,
                )
