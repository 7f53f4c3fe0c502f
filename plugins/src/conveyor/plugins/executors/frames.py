"""The Docker engine's multiplexed stream (attach, logs) of a container
without a TTY: frames of an 8-byte header (stream, 3 zero bytes, payload
size as a big-endian uint32) followed by the payload.

:class:`Demuxer` takes the stream in chunks of any size and gives back the
payloads, stdout and stderr alike, in order: the stage log merges them.
"""

from __future__ import annotations

import struct
from typing import Final

HEADER: Final = 8
_HEADER = struct.Struct(">BxxxL")


class Demuxer:
    """Payloads out of a multiplexed stream fed in arbitrary chunks."""

    def __init__(self) -> None:
        self._header = bytearray()
        #: Payload bytes still to come in the current frame.
        self._left = 0

    def feed(self, chunk: bytes | bytearray | memoryview) -> bytes:
        """The payload bytes ``chunk`` holds (b"" when it holds only headers)."""
        view = memoryview(chunk)
        parts: list[memoryview] = []
        at, end = 0, len(view)
        while at < end:
            if self._left:
                take = min(self._left, end - at)
                parts.append(view[at : at + take])
                self._left -= take
                at += take
                continue
            need = HEADER - len(self._header)
            piece = view[at : at + need]
            self._header += piece
            at += len(piece)
            if len(self._header) == HEADER:
                self._left = _HEADER.unpack(self._header)[1]
                self._header.clear()
        if len(parts) == 1:
            return bytes(parts[0])
        return b"".join(parts)

    @property
    def at_frame_boundary(self) -> bool:
        """True between frames (no header or payload half read)."""
        return not self._left and not self._header
