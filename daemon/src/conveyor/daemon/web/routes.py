"""The dashboard's routes: each reads through the daemon's service layer
(:class:`~conveyor.daemon.service.RunService`, its artifact catalog and
delivery service, the same calls the gRPC API makes) and renders a page.

Request values are checked against the API's own limits table by building
the matching API request (:func:`conveyor.daemon.api.limits.check_request`),
so a value the API refuses is refused here with the same message.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import trio

from conveyor.client.provenance import VerificationError, verify_envelope
from conveyor.daemon.api.limits import check_request
from conveyor.daemon.api.servicer import VERSION
from conveyor.daemon.auth.audit import Outcome
from conveyor.daemon.auth.identity import AuthMethod, Principal
from conveyor.daemon.delivery.approvals import decide
from conveyor.daemon.errors import ConveyorError, InvalidArgument, NotFound, Unauthenticated
from conveyor.daemon.records import RunRecord, RunStatus, StageRecord
from conveyor.daemon.store import ArtifactFilter, RunFilter
from conveyor.daemon.web import live
from conveyor.daemon.web.ansi import AnsiToHtml
from conveyor.daemon.web.html import Markup, join, url
from conveyor.daemon.web.http import HttpError, Request, Response, Stream
from conveyor.daemon.web.pages.artifacts import artifact_page, artifacts_page
from conveyor.daemon.web.pages.environments import (
    deployment_page,
    environment_page,
    environments_page,
)
from conveyor.daemon.web.pages.login import login_page
from conveyor.daemon.web.pages.logs import Window, log_page
from conveyor.daemon.web.pages.run import run_page
from conveyor.daemon.web.pages.runs import RunQuery, runs_page
from conveyor.daemon.web.pages.server import ServerStatus, server_page
from conveyor.v1 import artifacts_pb2, delivery_pb2, runs_pb2

if TYPE_CHECKING:
    from conveyor.daemon.web.app import Context, Dashboard, Route

#: Runs and artifacts per page.
PAGE_SIZE = 50
#: Bytes of a log rendered into its page.
WINDOW = 512 << 10
#: Deployments listed in an environment's or an artifact's history.
HISTORY = 50
_NOTICES = {"approved": "Approved: the deployment rolls out.", "rejected": "Rejected."}


def table(dashboard: Dashboard) -> list[Route]:
    from conveyor.daemon.web.app import Route

    routes = Routes(dashboard)
    return [
        Route("GET", (), routes.runs),
        Route("GET", ("runs",), routes.runs),
        Route("GET", ("live", "runs"), routes.live_runs),
        Route("GET", ("runs", "{run_id}"), routes.run),
        Route("GET", ("runs", "{run_id}", "live"), routes.live_run),
        Route("GET", ("runs", "{run_id}", "stages", "{stage}"), routes.stage_log),
        Route("GET", ("runs", "{run_id}", "stages", "{stage}", "log"), routes.live_log),
        Route("GET", ("runs", "{run_id}", "stages", "{stage}", "raw"), routes.raw_log),
        Route("GET", ("artifacts",), routes.artifacts),
        Route("GET", ("artifacts", "{reference}"), routes.artifact),
        Route("GET", ("environments",), routes.environments),
        Route("GET", ("environments", "{name}"), routes.environment),
        Route("GET", ("deployments", "{deployment_id}"), routes.deployment),
        Route("POST", ("deployments", "{deployment_id}", "approve"), routes.approve),
        Route("POST", ("deployments", "{deployment_id}", "reject"), routes.reject),
        Route("GET", ("server",), routes.server),
        Route("POST", ("logout",), routes.logout),
    ]


def _offset(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or len(text) > 15:
        raise HttpError(400, f"offset {text!r} is not a byte offset (a number from 0)")
    return int(text)


class Routes:
    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        self.service = dashboard.service

    # -- runs ------------------------------------------------------------------------

    def _run_query(self, request: Request) -> tuple[RunQuery, RunFilter]:
        query = RunQuery(
            pipeline=request.query.get("pipeline", "").strip(),
            status=request.query.get("status", "").strip(),
            commit=request.query.get("commit", "").strip().lower(),
            before=request.query.get("before", "").strip(),
        )
        check_request(
            runs_pb2.ListRunsRequest(
                pipeline=query.pipeline, commit=query.commit, page_token=query.before
            )
        )
        try:
            status = RunStatus(query.status) if query.status else None
        except ValueError:
            known = ", ".join(s.value for s in RunStatus)
            raise InvalidArgument(f"status {query.status!r} is not one of {known}") from None
        return query, RunFilter(query.pipeline, status, query.commit)

    async def runs(self, context: Context) -> Response:
        query, filt = self._run_query(context.request)
        runs, token = await self.service.list_runs(filt, PAGE_SIZE, query.before)
        return Response.page(runs_page(context.view, query, runs, token))

    async def live_runs(self, context: Context) -> Stream:
        _, filt = self._run_query(context.request)
        self.dashboard.check_stream_room()
        return Stream(live.runs_table(self.service, filt))

    async def _run(self, run_id: str) -> RunRecord:
        """The run of a URL: 404 for one that does not exist or cannot."""
        try:
            return await self.service.get_run(run_id)
        except InvalidArgument:
            raise NotFound(f"there is no run {run_id!r}") from None

    async def run(self, context: Context, run_id: str) -> Response:
        run = await self._run(run_id)
        events = await live.run_events(self.service, run.id)
        return Response.page(run_page(context.view, run, events))

    async def live_run(self, context: Context, run_id: str) -> Stream:
        run = await self._run(run_id)
        after = _offset(
            context.request.headers.get("last-event-id", "")
            or context.request.query.get("after", "")
        )
        self.dashboard.check_stream_room()
        return Stream(live.run_updates(self.service, run, after or 0))

    # -- logs ------------------------------------------------------------------------

    async def _stage(self, run_id: str, stage: str) -> tuple[RunRecord, StageRecord]:
        run = await self._run(run_id)
        try:
            return run, run.stage(stage)
        except KeyError:
            raise NotFound(f"run {run.id} has no stage {stage!r}") from None

    async def stage_log(self, context: Context, run_id: str, stage: str) -> Response:
        run, record = await self._stage(run_id, stage)
        window = await self._window(run, record, _offset(context.request.query.get("offset", "")))
        return Response.page(log_page(context.view, run, record, window))

    async def _window(self, run: RunRecord, stage: StageRecord, offset: int | None) -> Window:
        """The part of the log the page shows: ``offset`` onwards, or the
        last :data:`WINDOW` bytes, at most :data:`WINDOW` bytes of it."""
        size = stage.log_size
        if offset is not None and offset > size:
            raise NotFound(
                f"offset {offset} is past the end of the log of stage {stage.name!r} ({size} bytes)"
            )
        start = offset if offset is not None else max(0, size - WINDOW)
        converter = AnsiToHtml(skip_to_newline=offset is None and start > 0)
        parts: list[Markup] = []
        end = start
        full = False
        async for chunk_offset, data in self.service.stream_logs(
            run.id, stage.name, start, follow=False
        ):
            room = start + WINDOW - chunk_offset
            if room <= len(data):
                data, full = data[:room], True
            parts.append(converter.feed(data))
            end = chunk_offset + len(data)
            if full:
                break
        if not full:
            parts.append(converter.feed(b"", final=True))
        follow = not full and not stage.status.finished
        return Window(start, end, max(size, end), join(parts), follow)

    async def live_log(self, context: Context, run_id: str, stage: str) -> Stream:
        run, record = await self._stage(run_id, stage)
        offset = _offset(
            context.request.headers.get("last-event-id", "")
            or context.request.query.get("offset", "")
        )
        self.dashboard.check_stream_room()
        return Stream(live.log_tail(self.service, run, record, offset or 0))

    async def raw_log(self, context: Context, run_id: str, stage: str) -> Stream:
        run, record = await self._stage(run_id, stage)
        offset = _offset(context.request.query.get("offset", "")) or 0
        self.dashboard.check_stream_room()
        service = self.service

        async def produce(emit: live.Emit) -> None:
            async for _, data in service.stream_logs(run.id, record.name, offset, follow=False):
                await emit(data)

        return Stream(
            produce,
            keepalive=False,
            content_type="text/plain; charset=utf-8",
            headers=[
                (
                    "content-disposition",
                    f'attachment; filename="{run.id}-{record.name}.log"',
                )
            ],
        )

    # -- artifacts -------------------------------------------------------------------

    async def artifacts(self, context: Context) -> Response:
        q = context.request.query
        query = {key: q.get(key, "").strip() for key in ("name", "pipeline", "commit", "version")}
        before = q.get("before", "").strip()
        check_request(
            artifacts_pb2.ListArtifactsRequest(
                name=query["name"],
                pipeline=query["pipeline"],
                commit=query["commit"],
                version=query["version"],
                page_token=before,
            )
        )
        filt = ArtifactFilter(
            pipeline=query["pipeline"],
            commit_prefix=query["commit"].lower(),
            version=query["version"],
            name=query["name"],
        )
        rows, token = await self.service.artifacts.list_artifacts(filt, PAGE_SIZE, before)
        return Response.page(
            artifacts_page(context.view, query, [artifact for _, artifact in rows], token)
        )

    async def artifact(self, context: Context, reference: str) -> Response:
        check_request(artifacts_pb2.GetArtifactRequest(artifact=reference))
        catalog = self.service.artifacts
        try:
            detail = await catalog.get(reference)
        except InvalidArgument as exc:
            raise NotFound(str(exc)) from None
        artifact = detail.artifact
        try:
            statement = await trio.to_thread.run_sync(
                lambda: verify_envelope(
                    artifact.provenance, catalog.key.public, subject_digest=artifact.digest
                )
            )
            predicate = statement.statement.get("predicateType", "")
            provenance = f"signed by this daemon's key {statement.key_id} ({predicate})"
            verified = True
        except VerificationError as exc:
            provenance, verified = str(exc), False
        delivery = self.service.delivery
        deployments, _ = await delivery.list_deployments("", artifact.digest, HISTORY, "")
        running_in = []
        for name in await delivery.environment_names():
            env = await delivery.get_environment(name, live=False)
            if env.current is not None and env.current.digest == artifact.digest:
                running_in.append(name)
        return Response.page(
            artifact_page(context.view, detail, provenance, verified, running_in, deployments)
        )

    # -- environments and deployments --------------------------------------------------

    async def environments(self, context: Context) -> Response:
        delivery = self.service.delivery
        views = [
            await delivery.get_environment(name, live=False)
            for name in await delivery.environment_names()
        ]
        return Response.page(environments_page(context.view, views))

    async def environment(self, context: Context, name: str) -> Response:
        check_request(delivery_pb2.GetEnvironmentRequest(environment=name))
        delivery = self.service.delivery
        try:
            env = await delivery.get_environment(name)
        except InvalidArgument as exc:
            raise NotFound(str(exc)) from None
        history, _ = await delivery.list_deployments(name, "", HISTORY, "")
        notice = _NOTICES.get(context.request.query.get("done", ""), "")
        return Response.page(environment_page(context.view, env, history, notice))

    async def deployment(self, context: Context, deployment_id: str) -> Response:
        check_request(delivery_pb2.GetDeploymentRequest(deployment_id=deployment_id))
        try:
            record = await self.service.delivery.get(deployment_id)
        except InvalidArgument as exc:
            raise NotFound(str(exc)) from None
        notice = _NOTICES.get(context.request.query.get("done", ""), "")
        return Response.page(deployment_page(context.view, record, notice))

    async def approve(self, context: Context, deployment_id: str) -> Response:
        return await self._decide(context, deployment_id, approve=True)

    async def reject(self, context: Context, deployment_id: str) -> Response:
        return await self._decide(context, deployment_id, approve=False)

    async def _decide(self, context: Context, deployment_id: str, *, approve: bool) -> Response:
        """Approve or reject through the same check as the API, audited as
        the API audits it (action ``Approve``/``Reject``, with the
        dashboard as the peer)."""
        form = await context.request.form()
        comment = form.get("comment", "").strip()
        action = "Approve" if approve else "Reject"
        target = f"deployment_id {deployment_id}"
        audit = self.dashboard.access.audit
        principal = context.principal
        try:
            check_request(delivery_pb2.ApproveRequest(deployment_id=deployment_id, comment=comment))
            record = await decide(
                self.service.delivery, principal, deployment_id, comment, approve=approve
            )
        except ConveyorError as exc:
            from conveyor.daemon.web.app import _status_of

            outcome = Outcome.DENIED if _status_of(exc) == 403 else Outcome.FAILED
            await audit.record(principal, action, target, outcome, detail=f"dashboard: {exc}")
            raise
        await audit.record(
            principal,
            action,
            target,
            Outcome.OK,
            detail=f"dashboard: deployment {record.id} {record.status.value}",
            environment=record.environment,
        )
        done = "approved" if approve else "rejected"
        return Response.redirect(url("deployments", record.id, done=done))

    # -- the daemon --------------------------------------------------------------------

    async def server(self, context: Context) -> Response:
        service = self.service
        scheduler = service.scheduler
        spans = service.telemetry.stats
        status = ServerStatus(
            version=VERSION,
            started_at=service.started_at,
            queued_runs=scheduler.queued_runs,
            active_runs=scheduler.active_runs,
            active_stages=scheduler.active_stages,
            max_concurrent_runs=service.config.max_concurrent_runs,
            live_pages=self.dashboard.streams,
            spans_ended=spans.ended,
            spans_exported=spans.exported,
            spans_failed=spans.failed,
            spans_dropped=spans.dropped,
            exporters=service.telemetry.exporters,
            refusing_runs=service.refusing_runs,
        )
        return Response.page(server_page(context.view, status, service.list_plugins()))

    async def logout(self, context: Context) -> Response:
        from conveyor.daemon.web.app import clear_cookie

        self.dashboard.sessions.end(context.session.id)
        await self.dashboard.access.audit.record(
            context.principal, "WebLogout", "dashboard", Outcome.OK
        )
        response = Response.redirect("/login" if self.dashboard.sessions.enabled else "/")
        response.headers.append(("set-cookie", clear_cookie()))
        return response


# -- signing in (no session needed) ---------------------------------------------------


def _next(value: str) -> str:
    """Where to go after signing in: a path of this dashboard only."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


async def login(dashboard: Dashboard, request: Request) -> Response:
    """``GET /login``: the form; ``POST /login``: sign in with a token."""
    from conveyor.daemon.web.app import session_cookie

    if request.method not in ("GET", "HEAD", "POST"):
        raise HttpError(405, f"{request.method} is not allowed here")
    if not dashboard.sessions.enabled:
        return Response.redirect("/")
    if request.method != "POST":
        why = request.query.get("why", "")
        message = "Your session ended: sign in again." if why == "expired" else ""
        return Response.page(login_page(_next(request.query.get("next", "/")), message))
    origin = request.headers.get("origin")
    if origin is not None and origin not in dashboard.origins:
        raise HttpError(403, f"the form was posted from {origin}, not from this dashboard")
    form = await request.form()
    token = form.get("token", "").strip()
    next_url = _next(form.get("next", "/"))
    peer = f"web {request.client}"
    audit = dashboard.access.audit
    if not token:
        return Response.page(login_page(next_url, "Paste a bearer token."), 401)
    try:
        session, principal = dashboard.sessions.login_with_token(token, peer)
    except Unauthenticated as exc:
        await audit.record(
            dataclasses.replace(_nobody(), peer=peer, token_id=exc.token_id),
            "WebLogin",
            "dashboard",
            Outcome.UNAUTHENTICATED,
            detail=str(exc),
        )
        return Response.page(login_page(next_url, str(exc)), 401)
    await audit.record(principal, "WebLogin", "dashboard", Outcome.OK, detail="with a token")
    response = Response.redirect(next_url)
    response.headers.append(("set-cookie", session_cookie(session.id)))
    return response


async def login_link(dashboard: Dashboard, request: Request, code: str) -> Response:
    """``GET /login/CODE``: a confirmation button (so that a link preview
    does not use the link up); ``POST``: sign in with the one-time code."""
    from conveyor.daemon.web.app import session_cookie
    from conveyor.daemon.web.html import html
    from conveyor.daemon.web.pages.common import layout

    if request.method != "POST":
        body = html(
            '<section class="login"><h1>Sign in</h1><form method="post" action="{}">'
            '<button type="submit" autofocus>Sign in to Conveyor</button></form></section>',
            url("login", code),
        )
        return Response.page(layout(None, "Sign in", body))
    origin = request.headers.get("origin")
    if origin is not None and origin not in dashboard.origins:
        raise HttpError(403, f"the form was posted from {origin}, not from this dashboard")
    peer = f"web {request.client}"
    try:
        session, principal = dashboard.sessions.redeem(code)
    except Unauthenticated as exc:
        await dashboard.access.audit.record(
            dataclasses.replace(_nobody(), peer=peer),
            "WebLogin",
            "dashboard",
            Outcome.UNAUTHENTICATED,
            detail=str(exc),
        )
        return Response.page(login_page("/", str(exc)), 401)
    principal = dataclasses.replace(principal, peer=peer)
    await dashboard.access.audit.record(
        principal, "WebLogin", "dashboard", Outcome.OK, detail="with a login link"
    )
    response = Response.redirect("/")
    response.headers.append(("set-cookie", session_cookie(session.id)))
    return response


def _nobody() -> Principal:
    """Who a refused sign-in is recorded as: nobody known."""
    return Principal.create("", AuthMethod.NONE, frozenset())
