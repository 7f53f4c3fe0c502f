"""Artifacts: what was built, from which commit, signed how, deployed where."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.daemon.artifacts.catalog import ArtifactDetail
from conveyor.daemon.artifacts.model import Artifact
from conveyor.daemon.delivery.records import DeploymentRecord
from conveyor.daemon.web.html import Markup, html, join, url
from conveyor.daemon.web.pages.common import (
    View,
    badge,
    duration,
    empty,
    filters,
    layout,
    link,
    moment,
    short,
    text_field,
)
from conveyor.daemon.web.pages.run import human_size


def artifact_rows(artifacts: Sequence[Artifact]) -> Markup:
    if not artifacts:
        return empty("No artifacts match.", 7)
    return join(
        html(
            "<tr><td>{name}</td><td>{kind}</td><td>{version}</td><td>{digest}</td>"
            "<td>{commit}</td><td>{run}</td><td>{created}</td></tr>",
            name=link(a.name, "artifacts", a.digest),
            kind=a.kind,
            version=a.version,
            digest=link(short(a.digest, 19), "artifacts", a.digest),
            commit=short(a.commit),
            run=link(f"{a.pipeline} #{a.run_number}", "runs", a.run_id),
            created=moment(a.created_at),
        )
        for a in artifacts
    )


def artifacts_page(
    view: View, query: dict[str, str], artifacts: Sequence[Artifact], next_token: str
) -> Markup:
    form = filters(
        "/artifacts",
        [
            text_field("name", "Name", query.get("name", "")),
            text_field("pipeline", "Pipeline", query.get("pipeline", "")),
            text_field("commit", "Commit", query.get("commit", ""), "hex prefix"),
            text_field("version", "Version", query.get("version", "")),
        ],
    )
    older = (
        html(
            '<p class="pager"><a href="{}">Older artifacts →</a></p>',
            url("artifacts", **query, before=next_token),
        )
        if next_token
        else Markup("")
    )
    body = html(
        "<h1>Artifacts</h1>{}<table><thead><tr><th>Name</th><th>Kind</th><th>Version</th>"
        "<th>Digest</th><th>Commit</th><th>Run</th><th>Created</th></tr></thead><tbody>{}"
        "</tbody></table>{}",
        form,
        artifact_rows(artifacts),
        older,
    )
    return layout(view, "Artifacts", body, section="Artifacts")


def deployment_rows(records: Sequence[DeploymentRecord], *, environment: bool = True) -> Markup:
    if not records:
        return empty("No deployments.", 9 if environment else 8)
    return join(
        html(
            "<tr><td>{id}</td>{env}<td>{kind}</td><td>{version}</td><td>{commit}</td>"
            "<td>{deployer}</td><td>{status}</td><td>{created}</td><td>{took}</td></tr>",
            id=link(short(r.id, 12), "deployments", r.id),
            env=html("<td>{}</td>", link(r.environment, "environments", r.environment))
            if environment
            else Markup(""),
            kind=r.kind,
            version=r.version,
            commit=short(r.commit),
            deployer=r.deployer + (f" (decided by {r.decided_by})" if r.decided_by else ""),
            status=badge(r.status),
            created=moment(r.created_at),
            took=duration(r.started_at or r.created_at, r.finished_at),
        )
        for r in records
    )


def artifact_page(
    view: View,
    detail: ArtifactDetail,
    provenance: str,
    verified: bool,
    running_in: Sequence[str],
    deployments: Sequence[DeploymentRecord],
) -> Markup:
    a = detail.artifact
    stages = join(
        html(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            link(s.name, "runs", a.run_id, "stages", s.name),
            moment(s.started_at),
            duration(s.started_at, s.finished_at),
        )
        for s in a.stages
    )
    where = (
        join((link(name, "environments", name) for name in running_in), ", ")
        if running_in
        else Markup('<span class="muted">nowhere now</span>')
    )
    body = html(
        '<p class="crumbs"><a href="/artifacts">Artifacts</a> / {name}</p>'
        '<h1>{name} <span class="muted">{version}</span></h1>'
        '<dl class="facts"><dt>Digest</dt><dd class="mono">{digest}</dd>'
        "<dt>Kind</dt><dd>{kind} {media}</dd><dt>Size</dt><dd>{size}</dd>"
        "<dt>Tags</dt><dd>{tags}</dd>"
        "<dt>Repository</dt><dd>{repository}</dd><dt>Ref</dt><dd>{ref}</dd>"
        '<dt>Commit</dt><dd class="mono">{commit}</dd>'
        "<dt>Built by</dt><dd>{run}, stage {stage}</dd><dt>Created</dt><dd>{created}</dd>"
        "<dt>Pushed to</dt><dd>{pushed}</dd>"
        "<dt>Reproducible</dt><dd>{reproducible}</dd>"
        '<dt>Provenance</dt><dd><span class="badge" data-status="{prov_status}">{prov_word}'
        "</span> {provenance}</dd>"
        "<dt>Cache hits</dt><dd>{hits}</dd>"
        "<dt>Running in</dt><dd>{where}</dd></dl>"
        "<h2>Stages that built it</h2><table><thead><tr><th>Stage</th><th>Started</th>"
        "<th>Duration</th></tr></thead><tbody>{stages}</tbody></table>"
        "<h2>Deployments</h2><table><thead><tr><th>Deployment</th><th>Environment</th>"
        "<th>Kind</th><th>Version</th><th>Commit</th><th>Deployer</th><th>Status</th>"
        "<th>Created</th><th>Took</th></tr></thead><tbody>{deployments}</tbody></table>",
        name=a.name,
        version=a.version,
        digest=a.digest,
        kind=a.kind,
        media=f"({a.media_type})" if a.media_type else "",
        size=human_size(a.size) if a.size else "-",
        tags=", ".join(a.tags) or "-",
        repository=a.repository,
        ref=a.ref,
        commit=a.commit,
        run=link(f"{a.pipeline} #{a.run_number}", "runs", a.run_id),
        stage=a.stage,
        created=moment(a.created_at),
        pushed=", ".join(a.pushed_to)
        + (f" (manifest {a.manifest_digest})" if a.manifest_digest else "")
        if a.pushed_to
        else "-",
        reproducible="yes" if a.reproducible else f"no: changed {', '.join(a.changed_files)}",
        prov_status="succeeded" if verified else "failed",
        prov_word="verified" if verified else "does not verify",
        provenance=provenance,
        hits=str(len(detail.cache_hits)),
        where=where,
        stages=stages,
        deployments=deployment_rows(deployments),
    )
    return layout(view, a.name, body, section="Artifacts")
