"""A typed, blocking client for the Conveyor daemon's gRPC API."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

import grpc

from conveyor.client.address import default_address
from conveyor.client.errors import DaemonUnavailable, translate_rpc_error
from conveyor.v1 import (
    artifacts_pb2,
    delivery_pb2,
    pipelines_pb2,
    runs_pb2,
    server_pb2,
    service_pb2_grpc,
)

T = TypeVar("T")
R = TypeVar("R")

# Unary calls are quick; a hung daemon should not hang the CLI forever.
UNARY_TIMEOUT = 60.0


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """W3C trace context from ``TRACEPARENT``/``TRACESTATE``, as gRPC metadata.

    A script that runs inside a traced job (a Conveyor stage, for one) makes
    the run it submits part of its own trace.
    """
    traceparent = os.environ.get("TRACEPARENT", "").strip()
    if not traceparent:
        return ()
    tracestate = os.environ.get("TRACESTATE", "").strip()
    if tracestate:
        return (("traceparent", traceparent), ("tracestate", tracestate))
    return (("traceparent", traceparent),)


class Stream(Generic[T]):
    """A server stream whose errors surface as `ConveyorError`s.

    `cancel()` may be called from another thread; the iteration then stops
    quietly instead of raising.
    """

    def __init__(self, call: grpc.CallIterator[T], address: str) -> None:
        self._call = call
        self._iter = iter(call)
        self._address = address
        self._cancelled = threading.Event()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        try:
            return next(self._iter)
        except grpc.RpcError as exc:
            if self._cancelled.is_set():
                raise StopIteration from None
            raise translate_rpc_error(exc, self._address) from None

    def cancel(self) -> None:
        self._cancelled.set()
        self._call.cancel()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()


class ConveyorClient:
    """The daemon's API over one channel; use `connect()` to make one."""

    def __init__(self, channel: grpc.Channel, address: str) -> None:
        self.address = address
        self._channel = channel
        self._stub = service_pb2_grpc.ConveyorServiceStub(channel)

    def _unary(self, fn: Callable[[], R]) -> R:
        try:
            return fn()
        except grpc.RpcError as exc:
            raise translate_rpc_error(exc, self.address) from None

    def submit_run(
        self,
        repository: str,
        ref: str = "",
        *,
        pipeline_path: str = "",
        trigger: runs_pb2.TriggerKind.ValueType = runs_pb2.TRIGGER_KIND_MANUAL,
        idempotency_key: str = "",
        commit: str = "",
    ) -> runs_pb2.SubmitRunResponse:
        request = runs_pb2.SubmitRunRequest(
            repository=repository,
            ref=ref,
            pipeline_path=pipeline_path,
            trigger=trigger,
            idempotency_key=idempotency_key,
            commit=commit,
        )
        metadata = trace_metadata()
        return self._unary(
            lambda: self._stub.SubmitRun(request, timeout=UNARY_TIMEOUT, metadata=metadata)
        )

    def get_run(self, run_id: str) -> runs_pb2.Run:
        request = runs_pb2.GetRunRequest(run_id=run_id)
        return self._unary(lambda: self._stub.GetRun(request, timeout=UNARY_TIMEOUT))

    def list_runs(
        self,
        *,
        pipeline: str = "",
        status: runs_pb2.RunStatus.ValueType = runs_pb2.RUN_STATUS_UNSPECIFIED,
        commit: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> runs_pb2.ListRunsResponse:
        request = runs_pb2.ListRunsRequest(
            pipeline=pipeline,
            status=status,
            commit=commit,
            page_size=page_size,
            page_token=page_token,
        )
        return self._unary(lambda: self._stub.ListRuns(request, timeout=UNARY_TIMEOUT))

    def watch_run(self, run_id: str, after_seq: int = 0) -> Stream[runs_pb2.RunEvent]:
        request = runs_pb2.WatchRunRequest(run_id=run_id, after_seq=after_seq)
        return Stream(self._unary(lambda: self._stub.WatchRun(request)), self.address)

    def stream_logs(
        self, run_id: str, stage: str, *, offset: int = 0, follow: bool = False
    ) -> Stream[runs_pb2.LogChunk]:
        request = runs_pb2.StreamLogsRequest(
            run_id=run_id, stage=stage, offset=offset, follow=follow
        )
        return Stream(self._unary(lambda: self._stub.StreamLogs(request)), self.address)

    def cancel_run(self, run_id: str, reason: str = "") -> runs_pb2.Run:
        request = runs_pb2.CancelRunRequest(run_id=run_id, reason=reason)
        response = self._unary(lambda: self._stub.CancelRun(request, timeout=UNARY_TIMEOUT))
        return response.run

    def validate_pipeline(
        self, content: str, file: str = "conveyor.yaml"
    ) -> pipelines_pb2.ValidatePipelineResponse:
        request = pipelines_pb2.ValidatePipelineRequest(file=file, content=content)
        return self._unary(lambda: self._stub.ValidatePipeline(request, timeout=UNARY_TIMEOUT))

    def list_plugins(self) -> list[server_pb2.Plugin]:
        request = server_pb2.ListPluginsRequest()
        response = self._unary(lambda: self._stub.ListPlugins(request, timeout=UNARY_TIMEOUT))
        return list(response.plugins)

    def server_status(self) -> server_pb2.GetServerStatusResponse:
        request = server_pb2.GetServerStatusRequest()
        return self._unary(lambda: self._stub.GetServerStatus(request, timeout=UNARY_TIMEOUT))

    def list_artifacts(
        self,
        *,
        pipeline: str = "",
        commit: str = "",
        version: str = "",
        tag: str = "",
        name: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> artifacts_pb2.ListArtifactsResponse:
        request = artifacts_pb2.ListArtifactsRequest(
            pipeline=pipeline,
            commit=commit,
            version=version,
            tag=tag,
            name=name,
            page_size=page_size,
            page_token=page_token,
        )
        return self._unary(lambda: self._stub.ListArtifacts(request, timeout=UNARY_TIMEOUT))

    def get_artifact(self, artifact: str) -> artifacts_pb2.Artifact:
        """By digest (or a unique prefix of 8+ hex digits), NAME:TAG or NAME@DIGEST."""
        request = artifacts_pb2.GetArtifactRequest(artifact=artifact)
        return self._unary(lambda: self._stub.GetArtifact(request, timeout=UNARY_TIMEOUT))

    def signing_key(self) -> artifacts_pb2.GetSigningKeyResponse:
        request = artifacts_pb2.GetSigningKeyRequest()
        return self._unary(lambda: self._stub.GetSigningKey(request, timeout=UNARY_TIMEOUT))

    # -- delivery --------------------------------------------------------------------

    def deploy(self, environment: str, artifact: str) -> delivery_pb2.Deployment:
        request = delivery_pb2.DeployRequest(environment=environment, artifact=artifact)
        metadata = trace_metadata()
        return self._unary(
            lambda: self._stub.Deploy(request, timeout=UNARY_TIMEOUT, metadata=metadata)
        )

    def promote(self, source: str, environment: str) -> delivery_pb2.Deployment:
        request = delivery_pb2.PromoteRequest(from_environment=source, environment=environment)
        metadata = trace_metadata()
        return self._unary(
            lambda: self._stub.Promote(request, timeout=UNARY_TIMEOUT, metadata=metadata)
        )

    def rollback(self, environment: str, to: str = "") -> delivery_pb2.Deployment:
        request = delivery_pb2.RollbackRequest(environment=environment, to=to)
        metadata = trace_metadata()
        return self._unary(
            lambda: self._stub.Rollback(request, timeout=UNARY_TIMEOUT, metadata=metadata)
        )

    def approve(self, deployment_id: str, comment: str = "") -> delivery_pb2.Deployment:
        request = delivery_pb2.ApproveRequest(deployment_id=deployment_id, comment=comment)
        return self._unary(lambda: self._stub.Approve(request, timeout=UNARY_TIMEOUT))

    def reject(self, deployment_id: str, comment: str = "") -> delivery_pb2.Deployment:
        request = delivery_pb2.RejectRequest(deployment_id=deployment_id, comment=comment)
        return self._unary(lambda: self._stub.Reject(request, timeout=UNARY_TIMEOUT))

    def get_deployment(self, deployment_id: str) -> delivery_pb2.Deployment:
        request = delivery_pb2.GetDeploymentRequest(deployment_id=deployment_id)
        return self._unary(lambda: self._stub.GetDeployment(request, timeout=UNARY_TIMEOUT))

    def list_deployments(
        self,
        *,
        environment: str = "",
        artifact: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> delivery_pb2.ListDeploymentsResponse:
        request = delivery_pb2.ListDeploymentsRequest(
            environment=environment, artifact=artifact, page_size=page_size, page_token=page_token
        )
        return self._unary(lambda: self._stub.ListDeployments(request, timeout=UNARY_TIMEOUT))

    def get_environment(self, environment: str) -> delivery_pb2.Environment:
        request = delivery_pb2.GetEnvironmentRequest(environment=environment)
        return self._unary(lambda: self._stub.GetEnvironment(request, timeout=UNARY_TIMEOUT))

    def list_environments(self) -> list[delivery_pb2.Environment]:
        request = delivery_pb2.ListEnvironmentsRequest()
        response = self._unary(lambda: self._stub.ListEnvironments(request, timeout=UNARY_TIMEOUT))
        return list(response.environments)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ConveyorClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(address: str | None = None, timeout: float = 10.0) -> ConveyorClient:
    """Open a channel to the daemon and wait until it is ready.

    Raises `DaemonUnavailable` when the daemon cannot be reached within `timeout`
    seconds.
    """
    target = address or default_address()
    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        channel.close()
        raise DaemonUnavailable(target) from None
    except BaseException:
        channel.close()
        raise
    return ConveyorClient(channel, target)
