"""The engine's multiplexed output stream, taken apart in chunks of any size."""

from __future__ import annotations

import struct

from conveyor.plugins.executors.frames import Demuxer


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


STREAM = frame(1, b"out 1\n") + frame(2, b"err\n") + frame(1, b"") + frame(1, b"x" * 70000)
PAYLOADS = b"out 1\nerr\n" + b"x" * 70000


def test_every_way_of_cutting_the_stream_gives_the_payloads_in_order() -> None:
    for size in (1, 2, 3, 7, 8, 9, 13, 4096, len(STREAM)):
        demux = Demuxer()
        out = b"".join(demux.feed(STREAM[at : at + size]) for at in range(0, len(STREAM), size))
        assert out == PAYLOADS, size
        assert demux.at_frame_boundary


def test_a_header_cut_in_the_middle_is_remembered() -> None:
    demux = Demuxer()
    assert demux.feed(STREAM[:5]) == b""
    assert not demux.at_frame_boundary
    assert demux.feed(STREAM[5:10]) == b"ou"
