"""`conveyor logs`: stage logs as raw bytes, resumed across daemon restarts."""

from __future__ import annotations

from typing import BinaryIO

from conveyor.client.errors import CommandError, DaemonUnavailable
from conveyor.client.session import STREAM_RETRIES, Session
from conveyor.v1 import runs_pb2


def stream_stage(
    session: Session, run_id: str, stage: str, *, follow: bool, out: BinaryIO
) -> bytes:
    """Copy one stage's log to `out`; returns the last byte written (b"" if none).

    When the stream breaks because the daemon went away, reconnects and resumes
    from the last offset received.
    """
    offset = 0
    last = b""
    failures = 0
    while True:
        try:
            with session.client.stream_logs(run_id, stage, offset=offset, follow=follow) as stream:
                for chunk in stream:
                    data = chunk.data
                    if chunk.offset < offset:  # overlap after a resume
                        data = data[offset - chunk.offset :]
                    if data:
                        out.write(data)
                        out.flush()
                        last = data[-1:]
                    offset = max(offset, chunk.offset + len(chunk.data))
                    failures = 0
            return last
        except DaemonUnavailable:
            failures += 1
            if failures > STREAM_RETRIES:
                raise
            session.reconnect()


def stage_names(run: runs_pb2.Run) -> list[str]:
    return [stage.name for stage in run.stages]


def logs(session: Session, run_id: str, stage: str | None, *, follow: bool, out: BinaryIO) -> int:
    run = session.client.get_run(run_id)
    names = stage_names(run)
    if stage is not None:
        if names and stage not in names:
            raise CommandError(f"run {run.id} has no stage {stage!r} (stages: {', '.join(names)})")
        stream_stage(session, run.id, stage, follow=follow, out=out)
        return 0
    last = b"\n"
    for name in names:
        if last not in (b"\n", b""):
            out.write(b"\n")
        out.write(f"==> stage {name} <==\n".encode())
        out.flush()
        last = stream_stage(session, run.id, name, follow=follow, out=out)
    return 0
