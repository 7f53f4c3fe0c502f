"""Every call is authenticated and authorized, and refusals are audited.

A real daemon listens on its unix socket (where the daemon's own user is an
admin) and on TCP loopback, where callers need a bearer token. The table
runs every ConveyorService RPC without credentials, with an expired token,
with a revoked token, and with each token whose roles lack the RPC's
permission: each is refused with the right code and leaves an audit record.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conveyor.daemon.auth.permissions import RULES, Grants, Permission, method, parse_roles
from conveyor.v1 import (
    artifacts_pb2,
    audit_pb2,
    auth_pb2,
    delivery_pb2,
    pipelines_pb2,
    runs_pb2,
    server_pb2,
    service_pb2,
    service_pb2_grpc,
)
from tests.support.daemon import DaemonProcess, bearer
from tests.support.ports import free_port
from tests.support.repos import make_repo

PIPELINE = "name: authz\nstages:\n  s:\n    run: echo hello from the stage\n"
#: Tokens whose roles lack some permission, tried against every RPC they may not call.
LIMITED = {
    "no-role": (),
    "viewer": ("viewer",),
    "developer": ("developer",),
    "deployer": ("deployer:staging",),
    "approver": ("approver:staging",),
}
#: A deployment id no deployment has (Approve and Reject name one).
UNKNOWN_DEPLOYMENT = "0" * 20
#: Approve and Reject need `approver:ENV` for the deployment's environment,
#: checked once the deployment is found (the interceptor checks read).
SCOPED_BY_DEPLOYMENT = {"Approve", "Reject"}
SERVICE = service_pb2.DESCRIPTOR.services_by_name["ConveyorService"]
RPCS = [m.name for m in SERVICE.methods]


@dataclass
class Setup:
    daemon: DaemonProcess
    tcp: service_pb2_grpc.ConveyorServiceStub
    channel: grpc.Channel
    tokens: dict[str, str]
    ids: dict[str, str]
    run_id: str
    allowed: Path
    outside: Path

    def admin(self) -> tuple[tuple[str, str]]:
        return bearer(self.tokens["admin"])


def _token_id(secret: str) -> str:
    return "t_" + secret.split("_")[1]


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    root = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    port = free_port()
    daemon = DaemonProcess(
        root / "home",
        args=[
            "--kill-grace",
            "1",
            "--listen",
            f"unix://{root / 'home' / 'conveyord.sock'}",
            "--listen",
            f"127.0.0.1:{port}",
        ],
    ).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        allowed = root / "repos" / "team"
        outside = root / "repos" / "other"
        make_repo(allowed / "app", {"conveyor.yaml": PIPELINE})
        make_repo(outside / "secret", {"conveyor.yaml": PIPELINE})
        tokens = {"admin": daemon.issue_token("ops", ("admin",))}
        for name, roles in LIMITED.items():
            folders = (str(allowed),) if name == "developer" else ()
            tokens[name] = daemon.issue_token(f"{name}-bot", roles, repositories=folders)
        tokens["revoked"] = daemon.issue_token("gone", ("admin",), name="gone")
        daemon.stub.RevokeToken(
            auth_pb2.RevokeTokenRequest(token_id=_token_id(tokens["revoked"])), timeout=10
        )
        tokens["expired"] = daemon.issue_token(
            "late", ("admin",), name="late", expires_in_seconds=1
        )
        tcp = service_pb2_grpc.ConveyorServiceStub(channel)
        expired = bearer(tokens["expired"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the token lives one second
            try:
                tcp.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=expired, timeout=5)
            except grpc.RpcError as exc:
                assert "expired" in str(exc.details())
                break
        run = daemon.submit(allowed / "app")
        daemon.wait(run.id)
        yield Setup(
            daemon,
            tcp,
            channel,
            tokens,
            {name: _token_id(secret) for name, secret in tokens.items()},
            run.id,
            allowed,
            outside,
        )
    finally:
        channel.close()
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


def _requests(s: Setup) -> dict[str, Message]:
    """A valid request of every RPC: refusals must come from the credentials."""
    return {
        "SubmitRun": runs_pb2.SubmitRunRequest(repository=str(s.allowed / "app"), ref="main"),
        "GetRun": runs_pb2.GetRunRequest(run_id=s.run_id),
        "ListRuns": runs_pb2.ListRunsRequest(),
        "WatchRun": runs_pb2.WatchRunRequest(run_id=s.run_id),
        "StreamLogs": runs_pb2.StreamLogsRequest(run_id=s.run_id, stage="s"),
        "CancelRun": runs_pb2.CancelRunRequest(run_id=s.run_id),
        "ValidatePipeline": pipelines_pb2.ValidatePipelineRequest(content=PIPELINE),
        "ListPlugins": server_pb2.ListPluginsRequest(),
        "GetServerStatus": server_pb2.GetServerStatusRequest(),
        "ListArtifacts": artifacts_pb2.ListArtifactsRequest(),
        "GetArtifact": artifacts_pb2.GetArtifactRequest(artifact="sha256:" + "0" * 64),
        "GetSigningKey": artifacts_pb2.GetSigningKeyRequest(),
        "Deploy": delivery_pb2.DeployRequest(
            environment="production", artifact="sha256:" + "0" * 64
        ),
        "Promote": delivery_pb2.PromoteRequest(
            from_environment="staging", environment="production"
        ),
        "Rollback": delivery_pb2.RollbackRequest(environment="production", to="previous"),
        "GetDeployment": delivery_pb2.GetDeploymentRequest(deployment_id=UNKNOWN_DEPLOYMENT),
        "ListDeployments": delivery_pb2.ListDeploymentsRequest(),
        "GetEnvironment": delivery_pb2.GetEnvironmentRequest(environment="production"),
        "ListEnvironments": delivery_pb2.ListEnvironmentsRequest(),
        "StopEnvironment": delivery_pb2.StopEnvironmentRequest(environment="production"),
        "GetDoraMetrics": delivery_pb2.GetDoraMetricsRequest(environment="production"),
        "WhoAmI": auth_pb2.WhoAmIRequest(),
        "CreateWebLogin": auth_pb2.CreateWebLoginRequest(),
        "IssueToken": auth_pb2.IssueTokenRequest(name="x", identity="x", roles=["viewer"]),
        "ListTokens": auth_pb2.ListTokensRequest(),
        "RevokeToken": auth_pb2.RevokeTokenRequest(token_id="t_000000000000"),
        "ListAuditEvents": audit_pb2.ListAuditEventsRequest(),
        "Approve": delivery_pb2.ApproveRequest(deployment_id=UNKNOWN_DEPLOYMENT),
        "Reject": delivery_pb2.RejectRequest(deployment_id=UNKNOWN_DEPLOYMENT),
    }


def _call(
    s: Setup, name: str, metadata: tuple[tuple[str, str], ...] = (), request: Message | None = None
) -> object:
    """Make the call; a stream's first answer is awaited, so its refusal raises."""
    request = request if request is not None else _requests(s)[name]
    rpc = getattr(s.tcp, name)
    if SERVICE.methods_by_name[name].server_streaming:
        return next(iter(rpc(request, metadata=metadata, timeout=10)), None)
    return rpc(request, metadata=metadata, timeout=10)


def _refused(s: Setup, name: str, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        _call(s, name, metadata)
    return err.value


def _audited(s: Setup, name: str, outcome: str, token_id: str = "", identity: str = "") -> None:
    """The newest audit records of ``name`` include this refusal."""
    events = s.tcp.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(action=name, page_size=50),
        metadata=s.admin(),
        timeout=10,
    ).events
    matching = [
        e
        for e in events
        if e.outcome == outcome and e.token_id == token_id and e.identity == identity
    ]
    assert matching, f"no audit record of {name} {outcome} by {identity or '-'} {token_id}"
    assert matching[0].peer.startswith("ipv4:127.0.0.1:")


def test_every_rpc_has_a_request_in_the_table(setup: Setup) -> None:
    assert set(_requests(setup)) == set(RPCS), "add a request for the new RPC to _requests"


@pytest.mark.parametrize("name", RPCS)
def test_no_credentials_is_unauthenticated_and_audited(setup: Setup, name: str) -> None:
    error = _refused(setup, name)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "no credentials" in str(error.details())
    _audited(setup, name, "unauthenticated")


@pytest.mark.parametrize("name", RPCS)
def test_an_expired_token_is_unauthenticated_and_says_so(setup: Setup, name: str) -> None:
    error = _refused(setup, name, bearer(setup.tokens["expired"]))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert f"{setup.ids['expired']} ('late') expired at" in str(error.details())
    _audited(setup, name, "unauthenticated", setup.ids["expired"])


@pytest.mark.parametrize("name", RPCS)
def test_a_revoked_token_is_unauthenticated_and_says_so(setup: Setup, name: str) -> None:
    error = _refused(setup, name, bearer(setup.tokens["revoked"]))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "was revoked at" in str(error.details()) and "by root" in str(error.details())
    _audited(setup, name, "unauthenticated", setup.ids["revoked"])


def _lacking(name: str, request: Message | None = None) -> list[str]:
    """The test tokens whose roles lack what ``name`` needs (in the
    request's environment, for environment-scoped permissions: give those
    requests an environment the deployer:staging / approver:staging tokens
    do not have, such as production)."""
    rule = RULES[method(name)]
    if name in SCOPED_BY_DEPLOYMENT:
        return ["no-role"]  # the rest is checked against the deployment's environment
    environment = getattr(request, rule.environment_field, "") if rule.environment_field else ""
    return [
        token
        for token, roles in LIMITED.items()
        if not Grants.of(parse_roles(roles)).allows(rule.permission, environment)
    ]


@pytest.mark.parametrize("name", RPCS)
def test_a_role_without_the_right_is_permission_denied_and_audited(setup: Setup, name: str) -> None:
    lacking = _lacking(name, _requests(setup)[name])
    if RULES[method(name)].permission is Permission.AUTHENTICATED:
        assert not lacking, "any authenticated caller may call it"
        _call(setup, name, bearer(setup.tokens["no-role"]))
        return
    assert lacking, f"every test token may call {name}: add one that may not"
    for token in lacking:
        error = _refused(setup, name, bearer(setup.tokens[token]))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, token
        assert f"{token}-bot (token {setup.ids[token]}) may not call {name}" in str(error.details())
        _audited(setup, name, "denied", setup.ids[token], f"{token}-bot")


def test_the_expected_roles_are_refused(setup: Setup) -> None:
    """The table above, spelled out for the calls that matter most."""
    assert _lacking("SubmitRun") == ["no-role", "viewer", "deployer", "approver"]
    assert _lacking("IssueToken") == list(LIMITED)
    assert _lacking("ListAuditEvents") == list(LIMITED)
    assert _lacking("StreamLogs") == ["no-role"]
    assert _lacking("Deploy", _requests(setup)["Deploy"]) == [
        "no-role",
        "viewer",
        "developer",
        "deployer",
        "approver",
    ]


def test_a_developer_cannot_deploy_to_production_even_through_a_pipeline(
    setup: Setup,
) -> None:
    developer = bearer(setup.tokens["developer"])
    error = _refused_with(
        setup,
        "Deploy",
        developer,
        delivery_pb2.DeployRequest(environment="production", artifact="sha256:" + "0" * 64),
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    # a pipeline whose deploy stage goes to production is refused at submit
    repo = setup.allowed / "deploys"
    make_repo(
        repo,
        {
            "conveyor.yaml": "name: sneaky\nstages:\n  ship:\n    uses: deploy\n"
            "    with: {environment: production}\n"
            "environments:\n  production:\n    run: [sleep, '60']\n    port: 18911\n"
            "    health: {command: ['true']}\n"
        },
    )
    error = _refused_with(
        setup,
        "SubmitRun",
        developer,
        runs_pb2.SubmitRunRequest(repository=str(repo), ref="main"),
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "stage 'ship' deploys to production" in str(error.details())
    assert "deployer:production" in str(error.details())
    _audited(setup, "SubmitRun", "denied", setup.ids["developer"], "developer-bot")


def _refused_with(
    s: Setup, name: str, metadata: tuple[tuple[str, str], ...], request: Message
) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        _call(s, name, metadata, request)
    return err.value


def test_a_viewer_reads_runs_and_logs(setup: Setup) -> None:
    viewer = bearer(setup.tokens["viewer"])
    chunks = setup.tcp.StreamLogs(
        runs_pb2.StreamLogsRequest(run_id=setup.run_id, stage="s"), metadata=viewer, timeout=10
    )
    assert b"hello from the stage" in b"".join(chunk.data for chunk in chunks)
    runs = setup.tcp.ListRuns(runs_pb2.ListRunsRequest(), metadata=viewer, timeout=10)
    assert setup.run_id in {run.id for run in runs.runs}


def test_the_run_records_the_authenticated_submitter(setup: Setup) -> None:
    developer = bearer(setup.tokens["developer"])
    reply = setup.tcp.SubmitRun(
        runs_pb2.SubmitRunRequest(repository=str(setup.allowed / "app"), ref="main"),
        metadata=(*developer, ("x-user", "someone-else")),
        timeout=30,
    )
    assert reply.run.submitted_by == "developer-bot"
    final = setup.daemon.wait(reply.run.id)
    assert final.submitted_by == "developer-bot"
    assert setup.daemon.stub.GetRun(runs_pb2.GetRunRequest(run_id=reply.run.id)).submitted_by
    events = setup.tcp.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(identity="developer-bot", action="SubmitRun"),
        metadata=setup.admin(),
        timeout=10,
    ).events
    ok = [e for e in events if e.outcome == "ok"]
    assert ok and ok[0].detail.startswith(f"run {reply.run.id} #")
    assert ok[0].target == f"repository {setup.allowed / 'app'} ref main"
    assert ok[0].auth_method == "token" and ok[0].code == "OK"


@pytest.mark.parametrize("way", ["outside", "symlink", "dotdot"])
def test_a_developer_cannot_build_outside_its_folders(setup: Setup, way: str) -> None:
    link = setup.allowed / "link-to-secret"
    if not link.exists():
        link.symlink_to(setup.outside / "secret")
    repository = {
        "outside": setup.outside / "secret",
        "symlink": link,
        "dotdot": setup.allowed / ".." / "other" / "secret",
    }[way]
    with pytest.raises(grpc.RpcError) as err:
        setup.tcp.SubmitRun(
            runs_pb2.SubmitRunRequest(repository=str(repository), ref="main"),
            metadata=bearer(setup.tokens["developer"]),
            timeout=30,
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"its repository folders are {setup.allowed.resolve()}" in str(err.value.details())
    _audited(setup, "SubmitRun", "denied", setup.ids["developer"], "developer-bot")


def test_developers_cancel_only_their_own_runs(setup: Setup, tmp_path: Path) -> None:
    slow = make_repo(
        setup.allowed / f"slow-{tmp_path.name}",
        {"conveyor.yaml": "name: slow\nstages:\n  s:\n    run: sleep 30\n"},
    )
    developer = bearer(setup.tokens["developer"])
    mine = setup.tcp.SubmitRun(
        runs_pb2.SubmitRunRequest(repository=str(slow.path), ref="main"),
        metadata=developer,
        timeout=30,
    ).run
    theirs = setup.daemon.submit(slow.path)  # root's run, on the unix socket
    try:
        with pytest.raises(grpc.RpcError) as err:
            setup.tcp.CancelRun(
                runs_pb2.CancelRunRequest(run_id=theirs.id), metadata=developer, timeout=30
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "may cancel only the runs it submitted" in str(err.value.details())
        _audited(setup, "CancelRun", "denied", setup.ids["developer"], "developer-bot")
        cancelled = setup.tcp.CancelRun(
            runs_pb2.CancelRunRequest(run_id=mine.id), metadata=developer, timeout=30
        )
        assert cancelled.run.id == mine.id
    finally:
        setup.daemon.stub.CancelRun(runs_pb2.CancelRunRequest(run_id=theirs.id), timeout=30)
        for run_id in (mine.id, theirs.id):
            setup.daemon.wait(run_id)


def test_the_daemons_own_user_is_admin_on_the_unix_socket(setup: Setup) -> None:
    me = setup.daemon.stub.WhoAmI(auth_pb2.WhoAmIRequest(), timeout=10)
    assert me.identity == pwd.getpwuid(os.getuid()).pw_name
    assert (me.auth_method, list(me.roles), me.any_repository) == ("unix", ["admin"], True)


def test_health_is_open_and_reflection_needs_credentials(setup: Setup) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    reply = health_pb2_grpc.HealthStub(setup.channel).Check(
        health_pb2.HealthCheckRequest(), timeout=10
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(setup.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as err:
        list(reflection.ServerReflectionInfo(iter([request]), timeout=10))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    answers = reflection.ServerReflectionInfo(
        iter([request]), timeout=10, metadata=bearer(setup.tokens["no-role"])
    )
    assert any(a.list_services_response.service for a in answers)


def test_tokens_are_listed_without_secrets_and_revoked_once(setup: Setup) -> None:
    secret = setup.daemon.issue_token("short-lived", ("viewer",), name="listing")
    token_id = _token_id(secret)
    listed = setup.tcp.ListTokens(auth_pb2.ListTokensRequest(), metadata=setup.admin(), timeout=10)
    assert token_id in {t.id for t in listed.tokens}
    assert setup.ids["revoked"] not in {t.id for t in listed.tokens}, "only active ones"
    everything = setup.tcp.ListTokens(
        auth_pb2.ListTokensRequest(include_inactive=True), metadata=setup.admin(), timeout=10
    )
    assert {setup.ids["revoked"], setup.ids["expired"]} <= {t.id for t in everything.tokens}
    assert secret not in str(everything)
    revoked = setup.tcp.RevokeToken(
        auth_pb2.RevokeTokenRequest(token_id=token_id), metadata=setup.admin(), timeout=10
    )
    assert revoked.token.revoked_by == "ops"
    with pytest.raises(grpc.RpcError) as err:
        setup.tcp.RevokeToken(
            auth_pb2.RevokeTokenRequest(token_id=token_id), metadata=setup.admin(), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:
        setup.tcp.GetServerStatus(
            server_pb2.GetServerStatusRequest(), metadata=bearer(secret), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_forged_or_malformed_token_is_unauthenticated(setup: Setup) -> None:
    real = setup.tokens["admin"]
    forged = real[:-5] + ("xxxxx" if not real.endswith("xxxxx") else "yyyyy")
    cases: list[tuple[str, Callable[[str], bool]]] = [
        (forged, lambda text: "no such token" in text),
        ("cvt_not-a-token", lambda text: "malformed" in text),
    ]
    for token, says in cases:
        error = _refused(setup, "GetServerStatus", bearer(token))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert says(str(error.details()))


def test_a_malformed_attempt_at_a_change_is_audited_too(setup: Setup) -> None:
    with pytest.raises(grpc.RpcError) as err:
        setup.tcp.CancelRun(
            runs_pb2.CancelRunRequest(run_id=setup.run_id, reason="x" * 5000),
            metadata=bearer(setup.tokens["developer"]),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    events = setup.tcp.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(action="CancelRun", identity="developer-bot"),
        metadata=setup.admin(),
        timeout=10,
    ).events
    assert any(
        e.outcome == "failed"
        and e.code == "INVALID_ARGUMENT"
        and "reason is 5000 bytes" in e.detail
        for e in events
    )
