"""The daemon: its status and its plugins."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from conveyor.daemon.plugins import PluginInfo
from conveyor.daemon.web.html import Markup, html, join
from conveyor.daemon.web.pages.common import View, duration, layout, moment


@dataclass(frozen=True)
class ServerStatus:
    version: str
    started_at: float
    queued_runs: int
    active_runs: int
    active_stages: int
    max_concurrent_runs: int
    live_pages: int
    spans_ended: int
    spans_exported: int
    spans_failed: int
    spans_dropped: int
    exporters: Sequence[str]
    refusing_runs: str


def server_page(view: View, status: ServerStatus, plugins: Sequence[PluginInfo]) -> Markup:
    rows = join(
        html(
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            Markup(' class="broken"') if p.error else "",
            p.name,
            f"{p.distribution} {p.version}".strip(),
            ", ".join(p.provides) or "-",
            ", ".join(p.hooks) or "-",
            html('<span class="badge" data-status="failed">failed to load</span> {}', p.error)
            if p.error
            else html('<span class="badge" data-status="succeeded">loaded</span>'),
        )
        for p in plugins
    )
    refusing = (
        html('<p class="reason" data-status="failed">{}</p>', status.refusing_runs)
        if status.refusing_runs
        else Markup("")
    )
    body = html(
        "<h1>Server</h1>{refusing}"
        '<dl class="facts"><dt>Version</dt><dd>{version}</dd><dt>Started</dt><dd>{started}</dd>'
        "<dt>Up</dt><dd>{up}</dd><dt>Runs</dt><dd>{active} running, {queued} queued"
        " (at most {limit} at once)</dd><dt>Stages running</dt><dd>{stages}</dd>"
        "<dt>Open live pages</dt><dd>{live}</dd>"
        "<dt>Spans</dt><dd>{ended} ended, {exported} exported, {failed} failed, {dropped} dropped"
        " ({exporters})</dd></dl>"
        "<h2>Plugins</h2><table><thead><tr><th>Plugin</th><th>Distribution</th><th>Provides</th>"
        "<th>Hooks</th><th>State</th></tr></thead><tbody>{rows}</tbody></table>",
        refusing=refusing,
        version=status.version,
        started=moment(status.started_at),
        up=duration(status.started_at, None),
        active=str(status.active_runs),
        queued=str(status.queued_runs),
        limit=str(status.max_concurrent_runs),
        stages=str(status.active_stages),
        live=str(status.live_pages),
        ended=str(status.spans_ended),
        exported=str(status.spans_exported),
        failed=str(status.spans_failed),
        dropped=str(status.spans_dropped),
        exporters=", ".join(status.exporters) or "not exported",
        rows=rows,
    )
    return layout(view, "Server", body, section="Server")
