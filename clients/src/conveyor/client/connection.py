"""A typed, blocking client for the Conveyor daemon's gRPC API.

Credentials: on the daemon's unix socket the daemon knows who you are (your
uid); elsewhere send a bearer token (``token``, else ``CONVEYOR_TOKEN``,
else the file ``CONVEYOR_TOKEN_FILE`` names) and/or a client certificate.
TLS (:class:`TlsOptions`) is used for TCP addresses that are not a loopback
IP, or whenever a CA, certificate or key is given (``CONVEYOR_TLS_CA``,
``CONVEYOR_TLS_CERT``, ``CONVEYOR_TLS_KEY``). A token is never sent in
plaintext to an address that is not a unix socket or a loopback IP.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Generic, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from conveyor.client.address import default_address, needs_tls_by_default
from conveyor.client.errors import ConveyorError, DaemonUnavailable, translate_rpc_error
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

T = TypeVar("T")
R = TypeVar("R")

# Unary calls are quick; a hung daemon should not hang the CLI forever.
UNARY_TIMEOUT = 60.0
#: Seconds a StopEnvironment call may take (replicas stop one after another).
STOP_TIMEOUT = 600.0


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


Metadata = tuple[tuple[str, str], ...]


class CredentialsError(ConveyorError):
    """The credentials or TLS files given cannot be used (unreadable, empty,
    or a token that would travel in plaintext)."""

    def __init__(self, message: str) -> None:
        super().__init__("FAILED_PRECONDITION", message)


@dataclass(frozen=True)
class TlsOptions:
    """TLS for a TCP address: ``ca_file`` holds the CA certificates to trust
    (default: the system's), ``cert_file`` and ``key_file`` a client
    certificate for mutual TLS."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> TlsOptions | None:
        """From ``CONVEYOR_TLS_CA``/``_CERT``/``_KEY``; None when none is set."""
        env = os.environ if environ is None else environ
        options = cls(
            env.get("CONVEYOR_TLS_CA", ""),
            env.get("CONVEYOR_TLS_CERT", ""),
            env.get("CONVEYOR_TLS_KEY", ""),
        )
        return options if options != cls() else None

    def credentials(self) -> grpc.ChannelCredentials:
        if bool(self.cert_file) != bool(self.key_file):
            raise CredentialsError("a client certificate needs both its certificate and its key")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "TLS CA file") if self.ca_file else None,
            private_key=_read(self.key_file, "TLS key file") if self.key_file else None,
            certificate_chain=_read(self.cert_file, "TLS certificate file")
            if self.cert_file
            else None,
        )


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise CredentialsError(f"cannot read the {what} {path}: {exc.strerror}") from None


def read_token_file(path: str) -> str:
    """The token in ``path`` (surrounding whitespace removed). Keep the file
    readable by its owner only (mode 0600)."""
    token = _read(path, "token file").decode("utf-8", errors="replace").strip()
    if not token:
        raise CredentialsError(f"the token file {path} is empty")
    return token


def default_token(environ: Mapping[str, str] | None = None) -> str | None:
    """``CONVEYOR_TOKEN``, else the content of ``CONVEYOR_TOKEN_FILE``, else None."""
    env = os.environ if environ is None else environ
    token = env.get("CONVEYOR_TOKEN", "").strip()
    if token:
        return token
    path = env.get("CONVEYOR_TOKEN_FILE", "")
    return read_token_file(path) if path else None


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

    def __init__(self, channel: grpc.Channel, address: str, token: str | None = None) -> None:
        self.address = address
        self._channel = channel
        self._stub = service_pb2_grpc.ConveyorServiceStub(channel)
        #: Sent with every call: the bearer token, if any.
        self._auth: Metadata = (("authorization", f"Bearer {token}"),) if token else ()

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
        metadata = self._auth + trace_metadata()
        return self._unary(
            lambda: self._stub.SubmitRun(request, timeout=UNARY_TIMEOUT, metadata=metadata)
        )

    def get_run(self, run_id: str) -> runs_pb2.Run:
        request = runs_pb2.GetRunRequest(run_id=run_id)
        return self._unary(
            lambda: self._stub.GetRun(request, timeout=UNARY_TIMEOUT, metadata=self._auth)
        )

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
        return self._unary(
            lambda: self._stub.ListRuns(request, timeout=UNARY_TIMEOUT, metadata=self._auth)
        )

    def watch_run(self, run_id: str, after_seq: int = 0) -> Stream[runs_pb2.RunEvent]:
        request = runs_pb2.WatchRunRequest(run_id=run_id, after_seq=after_seq)
        return Stream(
            self._unary(lambda: self._stub.WatchRun(request, metadata=self._auth)), self.address
        )

    def stream_logs(
        self, run_id: str, stage: str, *, offset: int = 0, follow: bool = False
    ) -> Stream[runs_pb2.LogChunk]:
        request = runs_pb2.StreamLogsRequest(
            run_id=run_id, stage=stage, offset=offset, follow=follow
        )
        return Stream(
            self._unary(lambda: self._stub.StreamLogs(request, metadata=self._auth)), self.address
        )

    def cancel_run(self, run_id: str, reason: str = "") -> runs_pb2.Run:
        request = runs_pb2.CancelRunRequest(run_id=run_id, reason=reason)
        response = self._unary(
            lambda: self._stub.CancelRun(request, timeout=UNARY_TIMEOUT, metadata=self._auth)
        )
        return response.run

    def validate_pipeline(
        self, content: str, file: str = "conveyor.yaml"
    ) -> pipelines_pb2.ValidatePipelineResponse:
        request = pipelines_pb2.ValidatePipelineRequest(file=file, content=content)
        return self._unary(
            lambda: self._stub.ValidatePipeline(request, timeout=UNARY_TIMEOUT, metadata=self._auth)
        )

    def list_plugins(self) -> list[server_pb2.Plugin]:
        request = server_pb2.ListPluginsRequest()
        response = self._unary(
            lambda: self._stub.ListPlugins(request, timeout=UNARY_TIMEOUT, metadata=self._auth)
        )
        return list(response.plugins)

    def server_status(self) -> server_pb2.GetServerStatusResponse:
        request = server_pb2.GetServerStatusRequest()
        return self._unary(
            lambda: self._stub.GetServerStatus(request, timeout=UNARY_TIMEOUT, metadata=self._auth)
        )

    def create_web_login(self) -> auth_pb2.CreateWebLoginResponse:
        request = auth_pb2.CreateWebLoginRequest()
        return self._unary(
            lambda: self._stub.CreateWebLogin(request, timeout=UNARY_TIMEOUT, metadata=self._auth)
        )

    def whoami(self) -> auth_pb2.WhoAmIResponse:
        request = auth_pb2.WhoAmIRequest()
        return self._unary(
            lambda: self._stub.WhoAmI(request, timeout=UNARY_TIMEOUT, metadata=self._auth)
        )

    def issue_token(
        self,
        name: str,
        identity: str,
        roles: list[str],
        *,
        repositories: list[str] | None = None,
        expires_in_seconds: int = 0,
    ) -> auth_pb2.IssueTokenResponse:
        request = auth_pb2.IssueTokenRequest(
            name=name,
            identity=identity,
            roles=roles,
            repositories=repositories or [],
            expires_in_seconds=expires_in_seconds,
        )
        return self._unary(
            lambda: self._stub.IssueToken(request, timeout=UNARY_TIMEOUT, metadata=self._auth)
        )

    def list_tokens(self, *, include_inactive: bool = False) -> list[auth_pb2.ApiToken]:
        request = auth_pb2.ListTokensRequest(include_inactive=include_inactive)
        response = self._unary(
            lambda: self._stub.ListTokens(request, timeout=UNARY_TIMEOUT, metadata=self._auth)
        )
        return list(response.tokens)

    def revoke_token(self, token_id: str) -> auth_pb2.ApiToken:
        request = auth_pb2.RevokeTokenRequest(token_id=token_id)
        response = self._unary(
            lambda: self._stub.RevokeToken(request, timeout=UNARY_TIMEOUT, metadata=self._auth)
        )
        return response.token

    def list_audit_events(
        self,
        *,
        identity: str = "",
        action: str = "",
        since: float | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> audit_pb2.ListAuditEventsResponse:
        request = audit_pb2.ListAuditEventsRequest(
            identity=identity, action=action, page_size=page_size, page_token=page_token
        )
        if since is not None:
            stamp = Timestamp()
            stamp.FromNanoseconds(int(since * 1e9))
            request.since.CopyFrom(stamp)
        return self._unary(
            lambda: self._stub.ListAuditEvents(request, timeout=UNARY_TIMEOUT, metadata=self._auth)
        )

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

    def stop_environment(self, environment: str) -> delivery_pb2.StopEnvironmentResponse:
        request = delivery_pb2.StopEnvironmentRequest(environment=environment)
        # stopping waits for each replica's grace period
        return self._unary(lambda: self._stub.StopEnvironment(request, timeout=STOP_TIMEOUT))

    def dora_metrics(self, environment: str, window_seconds: int = 0) -> delivery_pb2.DoraMetrics:
        """The DORA figures of ``environment``; ``window_seconds`` 0: the
        daemon's default window."""
        request = delivery_pb2.GetDoraMetricsRequest(environment=environment)
        if window_seconds:
            request.window.FromSeconds(window_seconds)
        return self._unary(lambda: self._stub.GetDoraMetrics(request, timeout=UNARY_TIMEOUT))

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


def connect(
    address: str | None = None,
    timeout: float = 10.0,
    *,
    token: str | None = None,
    tls: TlsOptions | None = None,
) -> ConveyorClient:
    """Open a channel to the daemon and wait until it is ready.

    ``token`` defaults to :func:`default_token`; ``tls`` to
    :meth:`TlsOptions.from_environment`, and TLS with the system's CAs for
    TCP addresses that are not a loopback IP.

    Raises `DaemonUnavailable` when the daemon cannot be reached within `timeout`
    seconds, `CredentialsError` when a token or TLS file cannot be used or a
    token would be sent in plaintext beyond loopback.
    """
    target = address or default_address()
    token = token if token is not None else default_token()
    tls = tls if tls is not None else TlsOptions.from_environment()
    if tls is None and needs_tls_by_default(target):
        tls = TlsOptions()
    if tls is not None and target.startswith("unix:"):
        tls = None  # the socket's own permissions and the peer uid protect it
    if tls is not None:
        channel = grpc.secure_channel(target, tls.credentials())
    else:
        channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        channel.close()
        raise DaemonUnavailable(target) from None
    except BaseException:
        channel.close()
        raise
    return ConveyorClient(channel, target, token)
