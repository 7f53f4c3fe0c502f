"""`conveyor deploy|promote|rollback|approve|reject|history|envs|stop|dora`:
rendering of deployments, environments and DORA figures, and following a
deployment to its end.

Every string from the daemon goes through
:func:`~conveyor.client.terminal.printable` before it is laid out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from conveyor.client import render
from conveyor.client.terminal import printable
from conveyor.v1 import delivery_pb2

FINISHED = frozenset(
    {
        delivery_pb2.DEPLOYMENT_STATUS_HEALTHY,
        delivery_pb2.DEPLOYMENT_STATUS_FAILED,
        delivery_pb2.DEPLOYMENT_STATUS_ROLLED_BACK,
        delivery_pb2.DEPLOYMENT_STATUS_REJECTED,
        delivery_pb2.DEPLOYMENT_STATUS_EXPIRED,
        delivery_pb2.DEPLOYMENT_STATUS_INTERRUPTED,
    }
)
#: Seconds between two looks at a deployment being followed.
POLL_INTERVAL = 0.2
SHORT_DIGEST = 19  # "sha256:" and 12 hex digits


def status_name(value: int) -> str:
    name = delivery_pb2.DeploymentStatus.Name(delivery_pb2.DeploymentStatus.ValueType(value))
    return name.removeprefix("DEPLOYMENT_STATUS_").lower()


def kind_name(value: int) -> str:
    name = delivery_pb2.DeploymentKind.Name(delivery_pb2.DeploymentKind.ValueType(value))
    return name.removeprefix("DEPLOYMENT_KIND_").lower()


def short_digest(digest: str) -> str:
    return printable(digest[:SHORT_DIGEST])


def _duration(d: delivery_pb2.Deployment) -> str:
    return render.format_duration(d.duration_seconds) if d.HasField("finished_at") else "-"


def deployments_table(deployments: Sequence[delivery_pb2.Deployment]) -> list[str]:
    """`conveyor history`: newest first."""
    headers = ["ID", "ENV", "KIND", "STATUS", "VERSION", "DIGEST", "BY", "CREATED", "DURATION"]
    rows = [
        [
            printable(d.id),
            printable(d.environment),
            kind_name(d.kind),
            status_name(d.status),
            printable(d.version),
            short_digest(d.digest),
            printable(d.deployer),
            render.format_time(d.created_at),
            _duration(d),
        ]
        for d in deployments
    ]
    return render.table(headers, rows)


def _commit_lines(title: str, commits: Sequence[delivery_pb2.Commit]) -> list[str]:
    if not commits:
        return []
    return [title] + [f"  {printable(c.id[:12])}  {printable(c.subject)}" for c in commits]


def deployment_detail(d: delivery_pb2.Deployment) -> list[str]:
    """One deployment in full: what, where, who, when, what changed, its log."""
    fields = [
        ("environment", printable(d.environment)),
        ("kind", kind_name(d.kind)),
        ("status", f"{status_name(d.status)}: {printable(d.reason)}"),
        (
            "artifact",
            f"{printable(d.artifact_name)} {printable(d.version)} ({printable(d.digest)})",
        ),
        ("commit", printable(d.commit)),
        ("built by", f"run {printable(d.run_id)} #{d.run_number} {printable(d.pipeline)}"),
        ("deployer", printable(d.deployer)),
        ("target", f"{printable(d.target)}, {d.replicas} replica(s)"),
        ("created", render.format_time(d.created_at)),
        ("finished", render.format_time(d.finished_at)),
        ("duration", _duration(d)),
        (
            "previous",
            f"{printable(d.previous_id)} ({short_digest(d.previous_digest)})"
            if d.previous_id
            else "- (the first deployment here)",
        ),
        (
            "configuration",
            f"{printable(d.config_hash)}" + (" (changed)" if d.config_changed else " (unchanged)"),
        ),
        ("trace", printable(d.trace_id) or "-"),
    ]
    if d.source_environment:
        fields.insert(2, ("promoted from", printable(d.source_environment)))
    if d.restores_id:
        fields.append(("goes back to", printable(d.restores_id)))
    if d.cause_id:
        fields.append(("after", f"deployment {printable(d.cause_id)} failed"))
    if d.restored_by:
        fields.append(("restored by", printable(d.restored_by)))
    if d.decided_by:
        fields.append(
            (
                "decided by",
                f"{printable(d.decided_by)} at {render.format_time(d.decided_at)}"
                + (f": {printable(d.decision_comment)}" if d.decision_comment else ""),
            )
        )
    elif d.HasField("approval_expires_at"):
        fields.append(("approval until", render.format_time(d.approval_expires_at)))
    lines = [f"deployment {printable(d.id)}"]
    lines += [f"  {label + ':':<15}{value}" for label, value in fields]
    shown = len(d.commits) + len(d.reverted_commits)
    lines += _commit_lines(f"commits since the previous deployment ({d.commits_total}):", d.commits)
    lines += _commit_lines("commits going back:", d.reverted_commits)
    if d.commits_total > shown:
        lines.append(f"  ... and {d.commits_total - shown} more")
    if d.events:
        lines.append("log:")
        lines += [event_line(e) for e in d.events]
    return lines


def event_line(event: delivery_pb2.DeploymentEvent) -> str:
    clock = render.format_clock(render.ts_seconds(event.time) or 0)
    if event.from_status:
        change = f"{status_name(event.from_status)} -> {status_name(event.status)}: "
        return f"  {clock}  {change}{printable(event.message)}"
    return f"  {clock}  {printable(event.message)}"


def environments_table(environments: Sequence[delivery_pb2.Environment]) -> list[str]:
    """`conveyor envs`: which version runs where, since when."""
    headers = ["NAME", "TARGET", "ENDPOINT", "VERSION", "DIGEST", "SINCE", "DEPLOYMENT", "NOW"]
    rows = []
    for env in environments:
        current = env.current if env.HasField("current") else None
        now = printable(env.busy)
        if env.HasField("active"):
            now = f"{status_name(env.active.status)} {printable(env.active.id)}"
        rows.append(
            [
                printable(env.name),
                printable(env.target) or "-",
                printable(env.endpoint) or "-",
                printable(current.version) if current else "-",
                short_digest(current.digest) if current else "-",
                render.format_time(env.since),
                printable(current.id) if current else "-",
                now or "-",
            ]
        )
    return render.table(headers, rows)


def environment_detail(env: delivery_pb2.Environment) -> list[str]:
    """`conveyor envs NAME`: what runs, since when, healthy or not, replicas."""
    current = env.current if env.HasField("current") else None
    health = "healthy" if env.healthy else "NOT HEALTHY"
    lines = [
        f"environment {printable(env.name)}  ({printable(env.target)}, {printable(env.endpoint)})",
        f"  {'health:':<15}{health if current else '-'}  {printable(env.health_detail)}",
    ]
    if current is not None:
        lines += [
            f"  {'runs:':<15}{printable(current.artifact_name)} {printable(current.version)}"
            f" ({printable(current.digest)})",
            f"  {'since:':<15}{render.format_time(env.since)} (deployment {printable(current.id)}"
            f" by {printable(current.deployer)})",
            f"  {'commit:':<15}{printable(current.commit)}",
        ]
    else:
        lines.append(f"  {'runs:':<15}nothing")
    lines += [
        f"  {'replicas:':<15}{env.desired_replicas} wanted",
        f"  {'approval:':<15}{'required' if env.requires_approval else 'not required'}",
        f"  {'promoted from:':<15}{printable(env.promote_from) or '-'}",
        f"  {'defined in:':<15}{printable(env.source) or '-'}",
    ]
    if env.HasField("active"):
        lines.append(
            f"  {'in progress:':<15}deployment {printable(env.active.id)}"
            f" {status_name(env.active.status)} ({printable(env.active.version)})"
        )
    if env.busy:
        lines.append(f"  {'busy:':<15}{printable(env.busy)}")
    if env.replicas:
        rows = [
            [
                printable(r.id),
                str(r.port),
                printable(r.state),
                "yes" if r.healthy else "no",
                printable(r.deployment_id),
                printable(r.detail),
            ]
            for r in env.replicas
        ]
        lines += [
            "",
            *render.table(["REPLICA", "PORT", "STATE", "HEALTHY", "DEPLOYMENT", "CHECK"], rows),
        ]
    return lines


def started(d: delivery_pb2.Deployment) -> str:
    what = {
        delivery_pb2.DEPLOYMENT_KIND_PROMOTE: f"promotion from {printable(d.source_environment)}",
        delivery_pb2.DEPLOYMENT_KIND_ROLLBACK: f"rollback to {printable(d.restores_id)}",
    }.get(d.kind, "deployment")
    line = (
        f"{what} {printable(d.id)}: {printable(d.artifact_name)} {printable(d.version)}"
        f" ({short_digest(d.digest)}) to {printable(d.environment)}, {status_name(d.status)}"
    )
    if d.status == delivery_pb2.DEPLOYMENT_STATUS_PENDING_APPROVAL:
        line += f"; waits for approval: conveyor approve {printable(d.id)}"
    return line


def follow(
    get: Callable[[str], delivery_pb2.Deployment],
    deployment_id: str,
    emit: Callable[[str], None],
    *,
    after_seq: int = 0,
    sleep: Callable[[float], None] = time.sleep,
) -> delivery_pb2.Deployment:
    """Print the deployment's new log lines until it ends (or waits for
    approval); returns it as it is then."""
    seen = after_seq
    while True:
        deployment = get(deployment_id)
        for event in deployment.events:
            if event.seq > seen:
                emit(event_line(event))
                seen = event.seq
        if deployment.status in FINISHED or (
            deployment.status == delivery_pb2.DEPLOYMENT_STATUS_PENDING_APPROVAL
        ):
            return deployment
        sleep(POLL_INTERVAL)


def finished_line(d: delivery_pb2.Deployment) -> str:
    line = (
        f"deployment {printable(d.id)} to {printable(d.environment)}: {status_name(d.status)}"
        f" in {_duration(d)}: {printable(d.reason)}"
    )
    if d.status == delivery_pb2.DEPLOYMENT_STATUS_PENDING_APPROVAL:
        line = (
            f"deployment {printable(d.id)} waits for approval: conveyor approve {printable(d.id)}"
        )
    return line


def trace_lines(deployments: Sequence[delivery_pb2.Deployment]) -> list[str]:
    """`conveyor trace DIGEST`: where the artifact was deployed, by whom, when."""
    if not deployments:
        return ["deployed: nowhere yet"]
    lines = ["deployed:"]
    for d in deployments:
        lines.append(
            f"  {printable(d.environment):<12} {status_name(d.status):<13}"
            f" {render.format_time(d.created_at)}  by {printable(d.deployer)}"
            f"  ({kind_name(d.kind)} {printable(d.id)})"
        )
    return lines


def stopped_line(response: delivery_pb2.StopEnvironmentResponse) -> str:
    """`conveyor stop ENV`: what was stopped."""
    name = printable(response.environment)
    if not response.HasField("stopped") and not response.replicas_stopped:
        return f"{name}: nothing was running" + (
            "; stopped its front proxy" if response.proxy_stopped else ""
        )
    what = f"{response.replicas_stopped} replica(s)" + (
        " and the front proxy" if response.proxy_stopped else ""
    )
    line = f"stopped {name}: {what}"
    if response.HasField("stopped"):
        d = response.stopped
        line += (
            f"; it ran {printable(d.artifact_name)} {printable(d.version)}"
            f" ({short_digest(d.digest)}, deployment {printable(d.id)})"
        )
    return line


def _optional(present: bool, seconds: float) -> str:
    return render.format_duration(seconds) if present else "-"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def dora_lines(m: delivery_pb2.DoraMetrics) -> list[str]:
    """`conveyor dora ENV`: the four figures over the window."""
    start, end = render.ts_seconds(m.window_start) or 0, render.ts_seconds(m.window_end) or 0
    days = (end - start) / 86400
    rate = (
        f"{m.change_failure_rate:.0%} ({m.failed_changes} of {_count(m.changes, 'change')} failed)"
        if m.HasField("change_failure_rate")
        else "- (no change)"
    )
    lead_median = _optional(m.HasField("lead_time_median_seconds"), m.lead_time_median_seconds)
    lead_p90 = _optional(m.HasField("lead_time_p90_seconds"), m.lead_time_p90_seconds)
    restore_median = _optional(
        m.HasField("time_to_restore_median_seconds"), m.time_to_restore_median_seconds
    )
    restore_p90 = _optional(
        m.HasField("time_to_restore_p90_seconds"), m.time_to_restore_p90_seconds
    )
    lead = (
        f"median {lead_median}, p90 {lead_p90} ({_count(m.lead_time_samples, 'change')})"
        if m.lead_time_samples
        else "- (no change became healthy)"
    )
    restore = (
        f"median {restore_median}, p90 {restore_p90} ({m.restored} restored,"
        f" {m.unrestored} not restored)"
        if m.restored
        else f"- ({_count(m.unrestored, 'failed change')} not restored)"
        if m.unrestored
        else "- (no failed change)"
    )
    return [
        f"DORA figures of {printable(m.environment)}, the last {days:g} days"
        f" ({render.format_time(m.window_start)} to {render.format_time(m.window_end)})",
        f"  {'deployment frequency:':<24}{_count(m.deployments, 'deployment')},"
        f" {m.deployments_per_day:.2f}/day",
        f"  {'lead time for changes:':<24}{lead}",
        f"  {'change failure rate:':<24}{rate}",
        f"  {'time to restore:':<24}{restore}",
    ]
