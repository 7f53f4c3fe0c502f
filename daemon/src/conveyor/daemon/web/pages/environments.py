"""Environments: what runs where since when, how healthy, the history of
deployments with who, what and when, and approvals."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.daemon.auth.permissions import Permission
from conveyor.daemon.delivery.records import DeploymentRecord, DeploymentStatus
from conveyor.daemon.delivery.service import EnvironmentView
from conveyor.daemon.web.html import Markup, html, join, url
from conveyor.daemon.web.pages.artifacts import deployment_rows
from conveyor.daemon.web.pages.common import View, badge, empty, layout, link, moment, short


def _current(env: EnvironmentView) -> Markup:
    current = env.current
    if current is None:
        return Markup('<span class="muted">nothing deployed</span>')
    return html(
        "{} {} ({}) since {}",
        link(current.artifact_name, "artifacts", current.digest),
        current.version,
        short(current.commit),
        moment(env.since),
    )


def _health(env: EnvironmentView, live: bool) -> Markup:
    if env.current is None:
        return Markup('<span class="muted">-</span>')
    if not live:
        return badge(env.current.status)
    word = "healthy" if env.healthy else "unhealthy"
    return html(
        '<span class="badge" data-status="{}">{}</span> <span class="muted">{}</span>',
        "succeeded" if env.healthy else "failed",
        word,
        env.health_detail,
    )


def environments_page(view: View, envs: Sequence[EnvironmentView]) -> Markup:
    rows = (
        join(
            html(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                link(env.name, "environments", env.name),
                env.spec.target if env.spec is not None else "-",
                _current(env),
                env.current.deployer if env.current is not None else "-",
                _active(env.active),
            )
            for env in envs
        )
        if envs
        else empty("No environments: define them in the daemon's configuration or a pipeline.", 5)
    )
    body = html(
        "<h1>Environments</h1><table><thead><tr><th>Environment</th><th>Target</th>"
        "<th>Running</th><th>Deployed by</th><th>In progress</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        rows,
    )
    return layout(view, "Environments", body, section="Environments")


def _active(active: DeploymentRecord | None) -> Markup:
    if active is None:
        return Markup('<span class="muted">-</span>')
    return html(
        "{} {} {}",
        link(short(active.id), "deployments", active.id),
        badge(active.status),
        active.version,
    )


def decision_form(view: View, record: DeploymentRecord) -> Markup:
    """Approve and reject buttons, for those who may approve here."""
    if record.status is not DeploymentStatus.PENDING_APPROVAL:
        return Markup("")
    expires = (
        html(" (expires {})", moment(record.approval_expires_at))
        if record.approval_expires_at
        else ""
    )
    head = html(
        "<p>Deployment {} of {} {} waits for approval{}.</p>",
        link(short(record.id), "deployments", record.id),
        record.artifact_name,
        record.version,
        expires,
    )
    if not view.principal.may(Permission.APPROVE, record.environment):
        return html(
            '<div class="approval">{}<p class="muted">Only approvers of {} may approve or'
            " reject it.</p></div>",
            head,
            record.environment,
        )
    return html(
        '<div class="approval">{head}<form method="post" class="decide">'
        '<input type="hidden" name="csrf" value="{csrf}">'
        '<label>Comment <input type="text" name="comment" maxlength="1000"></label> '
        '<button type="submit" formaction="{approve}" class="approve">Approve</button> '
        '<button type="submit" formaction="{reject}" class="reject">Reject</button></form></div>',
        head=head,
        csrf=view.csrf,
        approve=url("deployments", record.id, "approve"),
        reject=url("deployments", record.id, "reject"),
    )


def environment_page(
    view: View, env: EnvironmentView, history: Sequence[DeploymentRecord], notice: str
) -> Markup:
    replicas = join(
        html(
            "<tr><td>{}</td><td>127.0.0.1:{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            short(r.replica.id),
            str(r.replica.port),
            r.replica.state,
            link(short(r.replica.deployment_id), "deployments", r.replica.deployment_id)
            if r.replica.deployment_id
            else "-",
            html(
                '<span class="badge" data-status="{}">{}</span>',
                "succeeded" if r.healthy else "failed",
                "healthy" if r.healthy else "unhealthy",
            ),
            r.detail or r.replica.message,
        )
        for r in env.replicas
    )
    notice_html = html('<p class="notice">{}</p>', notice) if notice else Markup("")
    approval = decision_form(view, env.active) if env.active is not None else Markup("")
    spec = env.spec
    body = html(
        '<p class="crumbs"><a href="/environments">Environments</a> / {name}</p>'
        "<h1>{name}</h1>{notice}{approval}"
        '<dl class="facts"><dt>Running</dt><dd>{current}</dd><dt>Health</dt><dd>{health}</dd>'
        "<dt>Target</dt><dd>{target}</dd><dt>Replicas</dt><dd>{replicas_wanted}</dd>"
        "<dt>Approval</dt><dd>{approval_needed}</dd><dt>Defined in</dt><dd>{source}</dd>"
        "<dt>Busy</dt><dd>{busy}</dd></dl>"
        "<h2>Replicas</h2><table><thead><tr><th>Replica</th><th>Address</th><th>State</th>"
        "<th>Deployment</th><th>Health</th><th>Detail</th></tr></thead>"
        "<tbody>{replicas}</tbody></table>"
        "<h2>History</h2><table><thead><tr><th>Deployment</th><th>Kind</th><th>Version</th>"
        "<th>Commit</th><th>Who</th><th>Status</th><th>Created</th><th>Took</th></tr></thead>"
        "<tbody>{history}</tbody></table>",
        name=env.name,
        notice=notice_html,
        approval=approval,
        current=_current(env),
        health=_health(env, live=True),
        target=spec.target if spec is not None else "-",
        replicas_wanted=str(spec.replicas) if spec is not None else "-",
        approval_needed="required"
        if spec is not None and spec.requires_approval
        else "not required",
        source=env.source or "-",
        busy=env.busy or "-",
        replicas=replicas or empty("No replica runs.", 6),
        history=deployment_rows(history, environment=False),
    )
    return layout(view, env.name, body, section="Environments")


def deployment_page(view: View, record: DeploymentRecord, notice: str) -> Markup:
    events = join(
        html(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            moment(e.time),
            badge(e.status),
            e.message,
        )
        for e in record.events
    )
    commits = join(
        html('<li><span class="mono">{}</span> {}</li>', c.id[:12], c.subject)
        for c in record.commits
    )
    notice_html = html('<p class="notice">{}</p>', notice) if notice else Markup("")
    body = html(
        '<p class="crumbs"><a href="/environments">Environments</a> / {env} / {short_id}</p>'
        "<h1>Deployment to {env} {status}</h1>{notice}{approval}"
        '<p class="reason" data-status="{status_name}">{reason}</p>'
        '<dl class="facts"><dt>Kind</dt><dd>{kind}</dd><dt>Artifact</dt><dd>{artifact}</dd>'
        '<dt>Version</dt><dd>{version}</dd><dt>Commit</dt><dd class="mono">{commit}</dd>'
        "<dt>Run</dt><dd>{run}</dd><dt>Deployer</dt><dd>{deployer}</dd>"
        "<dt>Decided by</dt><dd>{decided}</dd>"
        "<dt>Created</dt><dd>{created}</dd><dt>Finished</dt><dd>{finished}</dd>"
        "<dt>Previous</dt><dd>{previous}</dd>"
        '<dt>Trace id</dt><dd class="mono">{trace}</dd></dl>'
        "<h2>Commits since the previous deployment</h2><ul>{commits}</ul>"
        "<h2>Log</h2><table><tbody>{events}</tbody></table>",
        env=link(record.environment, "environments", record.environment),
        short_id=record.id,
        status=badge(record.status),
        notice=notice_html,
        approval=decision_form(view, record),
        reason=record.reason,
        status_name=record.status,
        kind=record.kind,
        artifact=link(record.artifact_name, "artifacts", record.digest),
        version=record.version,
        commit=record.commit,
        run=link(f"{record.pipeline} #{record.run_number}", "runs", record.run_id)
        if record.run_id
        else "-",
        deployer=record.deployer,
        decided=f"{record.decided_by}: {record.decision_comment}" if record.decided_by else "-",
        created=moment(record.created_at),
        finished=moment(record.finished_at),
        previous=link(short(record.previous_id), "deployments", record.previous_id)
        if record.previous_id
        else "-",
        trace=record.trace_id or "-",
        commits=commits or Markup('<li class="muted">none</li>'),
        events=events,
    )
    return layout(view, f"Deployment {record.id}", body, section="Environments")
