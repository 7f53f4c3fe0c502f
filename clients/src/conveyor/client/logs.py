"""`conveyor logs`: stage logs, resumed across daemon restarts, filtered for
the terminal (see :class:`~conveyor.client.terminal.LogFilter`)."""

from __future__ import annotations

from typing import BinaryIO

from conveyor.client.errors import CommandError, DaemonUnavailable
from conveyor.client.session import STREAM_RETRIES, Session
from conveyor.client.terminal import LogFilter, printable
from conveyor.v1 import runs_pb2


def stream_stage(
    session: Session, run_id: str, stage: str, *, follow: bool, out: BinaryIO, color: bool
) -> bytes:
    """Copy one stage's log to `out`, through a :class:`LogFilter` that keeps
    colours when ``color`` is on; returns the last byte written (b"" if none).

    When the stream breaks because the daemon went away, reconnects and resumes
    from the last offset received. Interrupted (Ctrl-C), it resets the colours
    the log left on before passing the KeyboardInterrupt on.
    """
    offset = 0
    last = b""
    failures = 0
    logfilter = LogFilter(keep_colors=color)

    def write(data: bytes) -> None:
        nonlocal last
        if data:
            out.write(data)
            out.flush()
            last = data[-1:]

    try:
        while True:
            try:
                with session.client.stream_logs(
                    run_id, stage, offset=offset, follow=follow
                ) as stream:
                    for chunk in stream:
                        data = chunk.data
                        if chunk.offset < offset:  # overlap after a resume
                            data = data[offset - chunk.offset :]
                        write(logfilter.feed(data))
                        offset = max(offset, chunk.offset + len(chunk.data))
                        failures = 0
                write(logfilter.close())
                return last
            except DaemonUnavailable:
                failures += 1
                if failures > STREAM_RETRIES:
                    raise
                session.reconnect()
    except KeyboardInterrupt:
        write(logfilter.close())  # Ctrl-C during --follow: leave no colour on
        raise


def stage_names(run: runs_pb2.Run) -> list[str]:
    return [stage.name for stage in run.stages]


def logs(
    session: Session,
    run_id: str,
    stage: str | None,
    *,
    follow: bool,
    out: BinaryIO,
    color: bool = False,
) -> int:
    """Print one stage's log, or every stage's after a ``==> stage NAME <==``
    header; colours (SGR sequences of the log) only with ``color``."""
    run = session.client.get_run(run_id)
    names = stage_names(run)
    if stage is not None:
        if names and stage not in names:
            raise CommandError(
                f"run {run.id} has no stage {stage!r}"
                f" (stages: {', '.join(printable(name) for name in names)})"
            )
        stream_stage(session, run.id, stage, follow=follow, out=out, color=color)
        return 0
    last = b"\n"
    for name in names:
        if last not in (b"\n", b""):
            out.write(b"\n")
        out.write(f"==> stage {printable(name)} <==\n".encode())
        out.flush()
        last = stream_stage(session, run.id, name, follow=follow, out=out, color=color)
    return 0
