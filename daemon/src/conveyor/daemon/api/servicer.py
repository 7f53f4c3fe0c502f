"""``ConveyorService``: thin adapters from gRPC calls to :class:`RunService`.

Every unary method runs in a worker thread of the server's pool, every
streaming method on the server's asyncio loop (see
:mod:`conveyor.daemon.api.loop`), and does only two things: translate
messages, and hand the work to the trio loop through the bridge.
Requests were checked against the limits table, and the caller
authenticated and authorized, before they get here (see
:mod:`conveyor.daemon.api.admission`); :func:`current_principal` is the
caller, passed on to the trio side where it matters (who submitted a run,
whose run may be cancelled). Records read fresh from the store are turned
into messages in the worker thread, not in the loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from conveyor.daemon.api import convert
from conveyor.daemon.api.bridge import TrioBridge
from conveyor.daemon.api.identity import caller
from conveyor.daemon.api.limits import LIST_BUDGET
from conveyor.daemon.artifacts.catalog import ArtifactDetail
from conveyor.daemon.artifacts.model import Artifact
from conveyor.daemon.auth.admin import AccessAdmin, TokenRequest
from conveyor.daemon.auth.identity import Principal, current_principal
from conveyor.daemon.delivery.approvals import decide
from conveyor.daemon.delivery.dora import DoraFigures
from conveyor.daemon.delivery.records import DeploymentRecord
from conveyor.daemon.delivery.service import DeliveryService, EnvironmentView, StopResult
from conveyor.daemon.errors import FailedPrecondition
from conveyor.daemon.service import RunService, SubmitRequest
from conveyor.daemon.store import ArtifactFilter, RunFilter
from conveyor.daemon.store.audit import AuditFilter
from conveyor.v1 import (
    artifacts_pb2,
    audit_pb2,
    auth_pb2,
    delivery_pb2,
    pipelines_pb2,
    runs_pb2,
    server_pb2,
    service_pb2_grpc,
)

VERSION = "0.1.0"
AioContext = grpc.aio.ServicerContext[Any, Any]
_TRACE_HEADERS = ("traceparent", "tracestate")
#: Makes a one-time dashboard login link for a principal: its URL and when
#: it expires (see :meth:`conveyor.daemon.web.app.Dashboard.login_link`).
WebLogin = Callable[[Principal], tuple[str, float]]


def trace_carrier(context: grpc.ServicerContext) -> dict[str, str]:
    """The W3C trace context headers sent with a call."""
    return {
        key: value if isinstance(value, str) else value.decode()
        for key, value in context.invocation_metadata()
        if key in _TRACE_HEADERS
    }


class ConveyorService(service_pb2_grpc.ConveyorServiceServicer):
    def __init__(
        self,
        service: RunService,
        bridge: TrioBridge,
        admin: AccessAdmin,
        *,
        web_login: WebLogin | None = None,
        web_url: str = "",
    ) -> None:
        self._service = service
        self._bridge = bridge
        self._admin = admin
        self._web_login = web_login
        self._web_url = web_url

    def SubmitRun(
        self, request: runs_pb2.SubmitRunRequest, context: grpc.ServicerContext
    ) -> runs_pb2.SubmitRunResponse:
        carrier = trace_carrier(context)
        caller = current_principal()

        async def submit() -> runs_pb2.SubmitRunResponse:
            submit_request = SubmitRequest(
                repository=request.repository,
                ref=request.ref,
                pipeline_path=request.pipeline_path,
                trigger=convert.trigger_from_proto(request.trigger),
                idempotency_key=request.idempotency_key,
                commit=request.commit,
                trace_carrier=carrier,
                caller=caller,
            )
            run, created = await self._service.submit(submit_request)
            # the record is shared with the scheduler: convert it in the loop
            message = convert.fit_run(convert.run_message(run))
            return runs_pb2.SubmitRunResponse(run=message, created=created)

        return self._bridge.unary(context, submit)

    def GetRun(
        self, request: runs_pb2.GetRunRequest, context: grpc.ServicerContext
    ) -> runs_pb2.Run:
        run = self._bridge.unary(context, self._service.get_run, request.run_id)
        return convert.fit_run(convert.run_message(run))

    def ListRuns(
        self, request: runs_pb2.ListRunsRequest, context: grpc.ServicerContext
    ) -> runs_pb2.ListRunsResponse:
        filt = RunFilter(
            pipeline=request.pipeline,
            status=convert.run_status_from_proto(request.status),
            commit_prefix=request.commit,
        )
        runs, token = self._bridge.unary(
            context, self._service.list_runs, filt, request.page_size, request.page_token
        )
        response = runs_pb2.ListRunsResponse()
        size = 0
        for index, run in enumerate(runs):
            message = convert.fit_run(convert.run_message(run, summary=True))
            cost = message.ByteSize() + 6
            if response.runs and size + cost > LIST_BUDGET:
                token = runs[index - 1].id  # a full page by size: the rest on the next
                break
            response.runs.append(message)
            size += cost
        response.next_page_token = token
        return response

    async def WatchRun(
        self, request: runs_pb2.WatchRunRequest, context: AioContext
    ) -> AsyncIterator[runs_pb2.RunEvent]:
        async def events() -> AsyncIterator[runs_pb2.RunEvent]:
            async for event in self._service.watch(request.run_id, request.after_seq):
                yield convert.event_message(event)

        async for message in self._bridge.stream(context, events):
            yield message

    async def StreamLogs(
        self, request: runs_pb2.StreamLogsRequest, context: AioContext
    ) -> AsyncIterator[runs_pb2.LogChunk]:
        async def chunks() -> AsyncIterator[runs_pb2.LogChunk]:
            async for offset, data in self._service.stream_logs(
                request.run_id, request.stage, request.offset, request.follow
            ):
                yield runs_pb2.LogChunk(stage=request.stage, offset=offset, data=data)

        async for message in self._bridge.stream(context, chunks):
            yield message

    def CancelRun(
        self, request: runs_pb2.CancelRunRequest, context: grpc.ServicerContext
    ) -> runs_pb2.CancelRunResponse:
        run = self._bridge.unary(
            context, self._service.cancel_run, request.run_id, request.reason, current_principal()
        )
        return runs_pb2.CancelRunResponse(run=convert.fit_run(convert.run_message(run)))

    def ValidatePipeline(
        self, request: pipelines_pb2.ValidatePipelineRequest, context: grpc.ServicerContext
    ) -> pipelines_pb2.ValidatePipelineResponse:
        async def validate() -> pipelines_pb2.ValidatePipelineResponse:
            result = await self._service.validate(request.content, request.file)
            return pipelines_pb2.ValidatePipelineResponse(
                valid=not result.diagnostics,
                diagnostics=[convert.diagnostic_message(d) for d in result.diagnostics],
                stage_order=result.spec.stage_order() if result.spec else [],
                pipeline_name=result.spec.name if result.spec else "",
            )

        return self._bridge.unary(context, validate)

    def ListPlugins(
        self, request: server_pb2.ListPluginsRequest, context: grpc.ServicerContext
    ) -> server_pb2.ListPluginsResponse:
        async def list_plugins() -> server_pb2.ListPluginsResponse:
            return server_pb2.ListPluginsResponse(
                plugins=[convert.plugin_message(p) for p in self._service.list_plugins()]
            )

        return self._bridge.unary(context, list_plugins)

    def GetServerStatus(
        self, request: server_pb2.GetServerStatusRequest, context: grpc.ServicerContext
    ) -> server_pb2.GetServerStatusResponse:
        async def status() -> server_pb2.GetServerStatusResponse:
            scheduler = self._service.scheduler
            telemetry = self._service.telemetry
            spans = telemetry.stats
            return server_pb2.GetServerStatusResponse(
                version=VERSION,
                started_at=convert.timestamp(self._service.started_at),
                queued_runs=scheduler.queued_runs,
                active_runs=scheduler.active_runs,
                active_stages=scheduler.active_stages,
                active_streams=self._bridge.active_streams,
                max_concurrent_runs=self._service.config.max_concurrent_runs,
                spans_ended=spans.ended,
                spans_exported=spans.exported,
                spans_failed=spans.failed,
                spans_dropped=spans.dropped,
                trace_exporters=telemetry.exporters,
                web_url=self._web_url,
            )

        return self._bridge.unary(context, status)

    def ListArtifacts(
        self, request: artifacts_pb2.ListArtifactsRequest, context: grpc.ServicerContext
    ) -> artifacts_pb2.ListArtifactsResponse:
        filt = ArtifactFilter(
            pipeline=request.pipeline,
            commit_prefix=request.commit,
            version=request.version,
            tag=request.tag,
            name=request.name,
        )

        async def list_artifacts() -> tuple[list[tuple[int, Artifact]], str]:
            return await self._service.artifacts.list_artifacts(
                filt, request.page_size, request.page_token
            )

        rows, token = self._bridge.unary(context, list_artifacts)
        response = artifacts_pb2.ListArtifactsResponse()
        size = 0
        for index, (_, artifact) in enumerate(rows):
            message = convert.artifact_message(artifact, summary=True)
            cost = message.ByteSize() + 6
            if response.artifacts and size + cost > LIST_BUDGET:
                token = str(rows[index - 1][0])  # a full page by size: the rest on the next
                break
            response.artifacts.append(message)
            size += cost
        response.next_page_token = token
        return response

    def GetArtifact(
        self, request: artifacts_pb2.GetArtifactRequest, context: grpc.ServicerContext
    ) -> artifacts_pb2.Artifact:
        async def get() -> ArtifactDetail:
            return await self._service.artifacts.get(request.artifact)

        detail = self._bridge.unary(context, get)
        return convert.artifact_message(detail.artifact, detail.cache_hits)

    def GetSigningKey(
        self, request: artifacts_pb2.GetSigningKeyRequest, context: grpc.ServicerContext
    ) -> artifacts_pb2.GetSigningKeyResponse:
        async def key() -> tuple[str, str]:
            return self._service.artifacts.signing_key()

        key_id, pem = self._bridge.unary(context, key)
        return artifacts_pb2.GetSigningKeyResponse(
            key_id=key_id, public_key_pem=pem, algorithm="ed25519"
        )

    # -- identity and access -------------------------------------------------------

    def WhoAmI(
        self, request: auth_pb2.WhoAmIRequest, context: grpc.ServicerContext
    ) -> auth_pb2.WhoAmIResponse:
        return convert.whoami_message(current_principal())

    def CreateWebLogin(
        self, request: auth_pb2.CreateWebLoginRequest, context: grpc.ServicerContext
    ) -> auth_pb2.CreateWebLoginResponse:
        principal = current_principal()
        web_login = self._web_login

        async def create() -> tuple[str, float]:
            if web_login is None:
                raise FailedPrecondition(
                    "the web dashboard is off: start conveyord with web_listen"
                    " (e.g. --web-listen 127.0.0.1:7480)"
                )
            return web_login(principal)

        url, expires = self._bridge.unary(context, create)
        return auth_pb2.CreateWebLoginResponse(url=url, expires_at=convert.timestamp(expires))

    def IssueToken(
        self, request: auth_pb2.IssueTokenRequest, context: grpc.ServicerContext
    ) -> auth_pb2.IssueTokenResponse:
        token_request = TokenRequest(
            name=request.name,
            identity=request.identity,
            roles=list(request.roles),
            repositories=list(request.repositories),
            expires_in_seconds=request.expires_in_seconds,
        )
        record, secret = self._bridge.unary(
            context, self._admin.issue_token, current_principal(), token_request
        )
        return auth_pb2.IssueTokenResponse(token=convert.token_message(record), secret=secret)

    def ListTokens(
        self, request: auth_pb2.ListTokensRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ListTokensResponse:
        async def list_tokens() -> list[auth_pb2.ApiToken]:
            records = self._admin.list_tokens(request.include_inactive)
            return [convert.token_message(record) for record in records]

        return auth_pb2.ListTokensResponse(tokens=self._bridge.unary(context, list_tokens))

    def RevokeToken(
        self, request: auth_pb2.RevokeTokenRequest, context: grpc.ServicerContext
    ) -> auth_pb2.RevokeTokenResponse:
        record = self._bridge.unary(
            context, self._admin.revoke_token, current_principal(), request.token_id
        )
        return auth_pb2.RevokeTokenResponse(token=convert.token_message(record))

    def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ListAuditEventsResponse:
        since = request.since.ToNanoseconds() / 1e9 if request.HasField("since") else 0.0
        filt = AuditFilter(identity=request.identity, action=request.action, since=since)
        records, token = self._bridge.unary(
            context, self._admin.list_audit, filt, request.page_size, request.page_token
        )
        return audit_pb2.ListAuditEventsResponse(
            events=[convert.audit_message(record) for record in records], next_page_token=token
        )

    # -- delivery ------------------------------------------------------------------
    #
    # Each method acts on one environment (Deploy, Rollback, GetEnvironment:
    # `environment`; Promote: `environment`, from `from_environment`;
    # Approve/Reject: the deployment's environment), on behalf of
    # caller(context).

    def Deploy(
        self, request: delivery_pb2.DeployRequest, context: grpc.ServicerContext
    ) -> delivery_pb2.Deployment:
        who, carrier = caller(context), trace_carrier(context)
        return self._deployment(
            context,
            lambda delivery: delivery.deploy(
                request.environment, request.artifact, deployer=who, carrier=carrier
            ),
        )

    def Promote(
        self, request: delivery_pb2.PromoteRequest, context: grpc.ServicerContext
    ) -> delivery_pb2.Deployment:
        who, carrier = caller(context), trace_carrier(context)
        return self._deployment(
            context,
            lambda delivery: delivery.promote(
                request.from_environment, request.environment, deployer=who, carrier=carrier
            ),
        )

    def Rollback(
        self, request: delivery_pb2.RollbackRequest, context: grpc.ServicerContext
    ) -> delivery_pb2.Deployment:
        who, carrier = caller(context), trace_carrier(context)
        return self._deployment(
            context,
            lambda delivery: delivery.rollback(
                request.environment, request.to, deployer=who, carrier=carrier
            ),
        )

    def Approve(
        self, request: delivery_pb2.ApproveRequest, context: grpc.ServicerContext
    ) -> delivery_pb2.Deployment:
        return self._decision(request, context, approve=True)

    def Reject(
        self, request: delivery_pb2.RejectRequest, context: grpc.ServicerContext
    ) -> delivery_pb2.Deployment:
        return self._decision(request, context, approve=False)

    def _decision(
        self,
        request: delivery_pb2.ApproveRequest | delivery_pb2.RejectRequest,
        context: grpc.ServicerContext,
        *,
        approve: bool,
    ) -> delivery_pb2.Deployment:
        principal = current_principal()
        return self._deployment(
            context,
            lambda delivery: decide(
                delivery, principal, request.deployment_id, request.comment, approve=approve
            ),
        )

    def _deployment(
        self,
        context: grpc.ServicerContext,
        act: Callable[[DeliveryService], Awaitable[DeploymentRecord]],
    ) -> delivery_pb2.Deployment:
        """``act`` on the daemon's deployments, in the trio loop (where a
        daemon without them answers UNAVAILABLE); the deployment it returns."""

        async def call() -> DeploymentRecord:
            return await act(self._service.delivery)

        return convert.deployment_message(self._bridge.unary(context, call))

    def GetDeployment(
        self, request: delivery_pb2.GetDeploymentRequest, context: grpc.ServicerContext
    ) -> delivery_pb2.Deployment:
        async def get() -> DeploymentRecord:
            return await self._service.delivery.get(request.deployment_id)

        return convert.deployment_message(self._bridge.unary(context, get), events=True)

    def ListDeployments(
        self, request: delivery_pb2.ListDeploymentsRequest, context: grpc.ServicerContext
    ) -> delivery_pb2.ListDeploymentsResponse:
        async def list_deployments() -> tuple[list[DeploymentRecord], str]:
            return await self._service.delivery.list_deployments(
                request.environment, request.artifact, request.page_size, request.page_token
            )

        records, token = self._bridge.unary(context, list_deployments)
        response = delivery_pb2.ListDeploymentsResponse()
        size = 0
        for index, record in enumerate(records):
            message = convert.deployment_message(record)
            cost = message.ByteSize() + 6
            if response.deployments and size + cost > LIST_BUDGET:
                token = records[index - 1].id  # a full page by size: the rest on the next
                break
            response.deployments.append(message)
            size += cost
        response.next_page_token = token
        return response

    def GetEnvironment(
        self, request: delivery_pb2.GetEnvironmentRequest, context: grpc.ServicerContext
    ) -> delivery_pb2.Environment:
        async def get() -> EnvironmentView:
            return await self._service.delivery.get_environment(request.environment)

        return convert.environment_message(self._bridge.unary(context, get))

    def ListEnvironments(
        self, request: delivery_pb2.ListEnvironmentsRequest, context: grpc.ServicerContext
    ) -> delivery_pb2.ListEnvironmentsResponse:
        async def list_environments() -> list[EnvironmentView]:
            delivery = self._service.delivery
            return [
                await delivery.get_environment(name, live=False)
                for name in await delivery.environment_names()
            ]

        views = self._bridge.unary(context, list_environments)
        return delivery_pb2.ListEnvironmentsResponse(
            environments=[convert.environment_message(view) for view in views]
        )

    def StopEnvironment(
        self, request: delivery_pb2.StopEnvironmentRequest, context: grpc.ServicerContext
    ) -> delivery_pb2.StopEnvironmentResponse:
        who = caller(context)

        async def stop() -> StopResult:
            return await self._service.delivery.stop_environment(request.environment, by=who)

        return convert.stop_message(self._bridge.unary(context, stop))

    def GetDoraMetrics(
        self, request: delivery_pb2.GetDoraMetricsRequest, context: grpc.ServicerContext
    ) -> delivery_pb2.DoraMetrics:
        window = (
            request.window.ToTimedelta().total_seconds() if request.HasField("window") else None
        )

        async def figures() -> DoraFigures:
            return await self._service.delivery.dora(request.environment, window)

        return convert.dora_message(self._bridge.unary(context, figures))
