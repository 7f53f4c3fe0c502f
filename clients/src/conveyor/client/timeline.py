"""`conveyor trace`: a run as a stage waterfall, from the daemon's records."""

from __future__ import annotations

from conveyor.client import render
from conveyor.client.terminal import printable
from conveyor.v1 import runs_pb2

BAR_WIDTH = 40


def _bar(start: float, end: float, origin: float, span: float, width: int) -> str:
    if span <= 0:
        return "█".ljust(width)
    first = min(width - 1, int((start - origin) / span * width))
    last = max(first + 1, min(width, round((end - origin) / span * width)))
    return (" " * first + "█" * (last - first)).ljust(width)


def timeline(run: runs_pb2.Run, *, now: float, width: int = BAR_WIDTH) -> list[str]:
    """Lines showing the run's queue time, then each stage on a shared time axis."""
    created = render.ts_seconds(run.created_at) or now
    started = render.ts_seconds(run.started_at)
    finished = render.ts_seconds(run.finished_at) or now
    origin = started or created
    total = max(finished - origin, 0.0)
    lines = [
        f"run {printable(run.id)} #{run.number} {printable(run.pipeline)}:"
        f" {render.run_status_name(run.status)} in {render.format_duration(total)}",
        f"  commit {printable(run.commit)}  ref {printable(run.ref)}",
        f"  trace  {printable(run.trace_id) or '-'}  (run span {printable(run.span_id) or '-'})",
    ]
    if started is not None:
        lines.append(f"  queued {render.format_duration(started - created)} before starting")
    names = [printable(s.name) for s in run.stages]
    name_width = max([len("STAGE"), *(len(name) for name in names)])
    lines.append("")
    lines.append(
        f"{'STAGE'.ljust(name_width)}  {'STATUS'.ljust(11)} {'START':>8} {'DURATION':>9}  "
        f"|{'0s'.ljust(width - len(render.format_duration(total)))}"
        f"{render.format_duration(total)}|"
    )
    for name, stage in zip(names, run.stages, strict=True):
        stage_start = render.ts_seconds(stage.started_at)
        stage_end = render.ts_seconds(stage.finished_at)
        status = render.stage_status_name(stage.status)
        if stage_start is None:
            bar, offset, duration = " " * width, "-", "-"
        else:
            end = stage_end if stage_end is not None else now
            bar = _bar(stage_start, end, origin, total, width)
            offset = f"+{stage_start - origin:.3f}s"
            duration = render.format_duration(end - stage_start)
        lines.append(
            f"{name.ljust(name_width)}  {status.ljust(11)} {offset:>8} {duration:>9}  |{bar}|"
        )
    return lines
