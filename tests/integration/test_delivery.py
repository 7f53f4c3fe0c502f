"""Continuous delivery end to end: a real daemon, real git repositories, a
real pipeline building a tiny HTTP service as a ``file`` artifact, real
replica processes on the ``process`` target behind real front proxies.

Replicas and proxies outlive the daemon by design: each test kills what its
own daemon's home started when it ends.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from conveyor.v1 import artifacts_pb2, delivery_pb2, runs_pb2
from tests.support import delivery as d
from tests.support.daemon import DaemonProcess
from tests.support.repos import GitRepo, make_repo

S = delivery_pb2
CLI = [sys.executable, "-m", "conveyor.client.cli"]


@dataclass
class Shop:
    daemon: DaemonProcess
    repo: GitRepo
    staging: int
    production: int

    def pipeline(self, **options: Any) -> str:
        return d.pipeline(staging_port=self.staging, production_port=self.production, **options)

    def release(self, version: str, broken: str = "", **options: Any) -> str:
        """Commit a version of the service (and the pipeline); build it."""
        self.repo.commit(
            {
                "service.py": d.service_source(version, broken),
                "conveyor.yaml": self.pipeline(**options),
            },
            f"release {version}{' (broken)' if broken else ''}",
        )
        return d.build(self.daemon, self.repo)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "--address", self.daemon.address, *args],
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    staging, production = d.free_port(), d.free_port()
    repo = make_repo(
        tmp_path / "shop",
        {
            "conveyor.yaml": d.pipeline(staging_port=staging, production_port=production),
            "service.py": d.service_source("1.0.0"),
            "deploy/production.env": "GREETING=from the env file\nDB=production\n",
        },
    )
    daemon = DaemonProcess(home, args=["--kill-grace", "1"]).start()
    try:
        yield Shop(daemon, repo, staging, production)
    finally:
        daemon.stop()
        d.stop_processes_of(home)


def healthy(daemon: DaemonProcess, deployment: delivery_pb2.Deployment) -> delivery_pb2.Deployment:
    final = d.finished(daemon, deployment.id)
    assert final.status == S.DEPLOYMENT_STATUS_HEALTHY, final.reason
    return final


def test_the_digest_built_and_deployed_by_the_pipeline_is_promoted_with_its_own_configuration(
    shop: Shop,
) -> None:
    shop.repo.commit({"conveyor.yaml": shop.pipeline(deploy_stage=True)}, "deploy to staging")
    run = shop.daemon.wait(shop.daemon.submit(shop.repo.path).id, timeout=120)
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED, run.reason
    artifacts = shop.daemon.stub.ListArtifacts(
        artifacts_pb2.ListArtifactsRequest(commit=run.commit), timeout=10
    )
    digest = artifacts.artifacts[0].digest
    log = shop.daemon.logs(run.id, "deploy").decode()
    assert "starting replica 2/2" in log and "progressing -> healthy" not in log
    assert "healthy: 2 replica(s) healthy" in log

    staging = d.environment(shop.daemon, "staging")
    assert staging.healthy, staging.health_detail
    assert staging.current.digest == digest
    # a stage deploys on behalf of whoever submitted its run (here the
    # daemon's own user on its socket), never a name the client sent
    assert staging.current.deployer == f"{run.submitted_by} (run {run.id})"
    assert run.submitted_by == pwd.getpwuid(os.getuid()).pw_name
    assert len([r for r in staging.replicas if r.healthy]) == 2

    promoted = shop.daemon.stub.Promote(
        S.PromoteRequest(from_environment="staging", environment="production"), timeout=30
    )
    assert promoted.kind == S.DEPLOYMENT_KIND_PROMOTE
    production = healthy(shop.daemon, promoted)
    assert production.digest == digest  # the digest built and tested, not a rebuild
    assert production.source_environment == "staging"
    assert production.deployer == pwd.getpwuid(os.getuid()).pw_name
    assert production.config_hash != staging.current.config_hash

    at_staging, at_production = d.version_at(shop.staging), d.version_at(shop.production)
    assert at_staging["version"] == at_production["version"] == "1.0.0"
    assert at_staging["greeting"] == "hello from staging"
    assert at_production["greeting"] == "hello from production"  # config wins over the env file

    trace = shop.cli("trace", digest)
    assert trace.returncode == 0, trace.stderr
    assert "production   healthy" in trace.stdout and "staging      healthy" in trace.stdout
    envs = shop.cli("envs")
    assert envs.returncode == 0 and "production" in envs.stdout and digest[:19] in envs.stdout


@pytest.mark.parametrize(
    ("broken", "watch"),
    [("always", "0.3s"), ("after:2", "3s")],
    ids=["health-failing", "failing-after-2s-in-the-watch-window"],
)
def test_a_broken_version_rolls_back_automatically_without_a_failed_request(
    shop: Shop, broken: str, watch: str
) -> None:
    good = d.build(shop.daemon, shop.repo)
    first = healthy(shop.daemon, d.deploy(shop.daemon, "staging", good))
    bad = shop.release("2.0.0", broken, watch=watch)

    with d.polling(shop.staging) as poller:
        attempt = d.finished(shop.daemon, d.deploy(shop.daemon, "staging", bad).id)
        d.wait_for(lambda: poller.ok > 20, what="more requests after the rollback")

    assert attempt.status == S.DEPLOYMENT_STATUS_ROLLED_BACK, attempt.reason
    assert "health check" in attempt.reason
    assert poller.failed == 0, poller.errors[:5]
    restore = shop.daemon.stub.GetDeployment(
        S.GetDeploymentRequest(deployment_id=attempt.restored_by), timeout=10
    )
    assert restore.kind == S.DEPLOYMENT_KIND_RESTORE
    assert restore.status == S.DEPLOYMENT_STATUS_HEALTHY
    assert restore.cause_id == attempt.id and restore.restores_id == first.id
    assert restore.digest == good
    staging = d.environment(shop.daemon, "staging")
    assert staging.current.id == restore.id and staging.healthy, staging.health_detail
    assert {r.digest for r in staging.replicas} == {good}
    assert d.version_at(shop.staging)["version"] == "1.0.0"
    transitions = [(e.from_status, e.status) for e in attempt.events if e.from_status]
    assert transitions == [(S.DEPLOYMENT_STATUS_PROGRESSING, S.DEPLOYMENT_STATUS_ROLLED_BACK)]


def test_rollback_to_an_earlier_deployment_restores_its_digest(shop: Shop) -> None:
    one = d.build(shop.daemon, shop.repo)
    first = healthy(shop.daemon, d.deploy(shop.daemon, "staging", one))
    two = shop.release("2.0.0")
    second = healthy(shop.daemon, d.deploy(shop.daemon, "staging", two))
    assert [c.subject for c in second.commits] == ["release 2.0.0"]
    assert d.version_at(shop.staging)["version"] == "2.0.0"

    back = healthy(
        shop.daemon,
        shop.daemon.stub.Rollback(
            S.RollbackRequest(environment="staging", to=first.id), timeout=30
        ),
    )
    assert back.kind == S.DEPLOYMENT_KIND_ROLLBACK and back.restores_id == first.id
    assert back.digest == one and [c.subject for c in back.reverted_commits] == ["release 2.0.0"]
    assert d.environment(shop.daemon, "staging").current.digest == one
    assert d.version_at(shop.staging)["version"] == "1.0.0"

    again = shop.cli("rollback", "staging")  # previous: 2.0.0
    assert again.returncode == 0, again.stdout + again.stderr
    assert d.environment(shop.daemon, "staging").current.digest == two
    history = shop.cli("history", "staging")
    assert history.stdout.count("rollback") == 2 and history.stdout.count("deploy") == 2


def test_a_deployment_awaiting_approval_does_nothing_until_approved(shop: Shop) -> None:
    qa = d.free_port()
    extra = f"""\
  qa:
    run: [python3, "{{artifact}}"]
    port: {qa}
    health: {{path: /health, interval: 0.05}}
    watch: 0
    requires_approval: true
    approval_expiry: 0.5s
"""
    one = shop.release("1.0.0", production_approval=True, extra=extra)
    healthy(shop.daemon, d.deploy(shop.daemon, "staging", one))

    def promote() -> delivery_pb2.Deployment:
        return shop.daemon.stub.Promote(
            S.PromoteRequest(from_environment="staging", environment="production"), timeout=30
        )

    held = promote()
    assert held.status == S.DEPLOYMENT_STATUS_PENDING_APPROVAL
    production = d.environment(shop.daemon, "production")
    assert production.active.id == held.id and not production.HasField("current")
    with pytest.raises(OSError):
        d.get(shop.production)  # nothing runs there
    with pytest.raises(grpc.RpcError) as busy:  # one deployment at a time
        promote()
    assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "waits for approval" in str(busy.value.details())

    approved = shop.cli("approve", held.id, "--comment", "change 42 looks fine")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    done = d.finished(shop.daemon, held.id)
    assert done.status == S.DEPLOYMENT_STATUS_HEALTHY
    assert done.decided_by == pwd.getpwuid(os.getuid()).pw_name
    assert done.decision_comment == "change 42 looks fine"
    assert d.version_at(shop.production)["greeting"] == "hello from production"

    second = promote()
    rejected = shop.daemon.stub.Reject(
        S.RejectRequest(deployment_id=second.id, comment="not today"), timeout=10
    )
    assert rejected.status == S.DEPLOYMENT_STATUS_REJECTED
    assert rejected.reason.endswith("not today")

    waiting = d.deploy(shop.daemon, "qa", one)
    assert waiting.status == S.DEPLOYMENT_STATUS_PENDING_APPROVAL
    expired = d.finished(shop.daemon, waiting.id)
    assert expired.status == S.DEPLOYMENT_STATUS_EXPIRED
    with pytest.raises(grpc.RpcError) as late:
        shop.daemon.stub.Approve(S.ApproveRequest(deployment_id=waiting.id), timeout=10)
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(OSError):
        d.get(qa)


def test_bad_requests_get_clear_errors_and_change_nothing(shop: Shop) -> None:
    digest = d.build(shop.daemon, shop.repo)
    stub = shop.daemon.stub

    def refused(call: object, request: object) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as error:
            call(request, timeout=30)  # type: ignore[operator]
        return error.value

    unknown_digest = refused(
        stub.Deploy, S.DeployRequest(environment="staging", artifact="sha256:" + "ab" * 32)
    )
    assert unknown_digest.code() == grpc.StatusCode.NOT_FOUND
    assert "no artifact sha256:abab" in str(unknown_digest.details())
    unknown_env = refused(stub.Deploy, S.DeployRequest(environment="qa", artifact=digest))
    assert unknown_env.code() == grpc.StatusCode.NOT_FOUND
    assert "no environment 'qa'" in str(unknown_env.details())
    assert "production, staging" in str(unknown_env.details())
    nothing = refused(
        stub.Promote, S.PromoteRequest(from_environment="staging", environment="production")
    )
    assert nothing.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "nothing healthy runs in staging (nothing was ever deployed there)" in str(
        nothing.details()
    )
    direct = refused(stub.Deploy, S.DeployRequest(environment="production", artifact=digest))
    assert direct.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "conveyor promote staging production" in str(direct.details())
    malformed = refused(stub.Deploy, S.DeployRequest(environment="bad name", artifact=digest))
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT
    no_back = refused(stub.Rollback, S.RollbackRequest(environment="staging"))
    assert no_back.code() == grpc.StatusCode.FAILED_PRECONDITION
    no_such = refused(stub.Approve, S.ApproveRequest(deployment_id="0123456789abcdef0123"))
    assert no_such.code() == grpc.StatusCode.NOT_FOUND

    listed = stub.ListDeployments(S.ListDeploymentsRequest(), timeout=10)
    assert list(listed.deployments) == []  # nothing was recorded
    with pytest.raises(OSError):
        d.get(shop.staging)

    # a broken staging (nothing healthy after a failed first deployment):
    # promoting from it is refused and changes nothing
    broken = shop.release("2.0.0", "always")
    failed = d.finished(shop.daemon, d.deploy(shop.daemon, "staging", broken).id)
    assert failed.status == S.DEPLOYMENT_STATUS_FAILED
    assert failed.reason.endswith("no earlier version to restore")
    unhealthy = refused(
        stub.Promote, S.PromoteRequest(from_environment="staging", environment="production")
    )
    assert unhealthy.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "nothing healthy runs in staging" in str(unhealthy.details())
    listed = stub.ListDeployments(S.ListDeploymentsRequest(environment="production"), timeout=10)
    assert list(listed.deployments) == []


def test_sigkill_mid_rollout_marks_it_interrupted_and_leaves_the_environment_healthy(
    shop: Shop,
) -> None:
    good = d.build(shop.daemon, shop.repo)
    healthy(shop.daemon, d.deploy(shop.daemon, "staging", good))
    slow = shop.release("2.0.0", watch="60s")
    attempt = d.deploy(shop.daemon, "staging", slow)

    def watching() -> bool:
        got = shop.daemon.stub.GetDeployment(
            S.GetDeploymentRequest(deployment_id=attempt.id), timeout=10
        )
        return any("watching" in e.message for e in got.events)

    d.wait_for(watching, what="the rollout's watch window")
    assert d.version_at(shop.staging)["version"] == "2.0.0"  # the new version took traffic
    with d.polling(shop.staging) as poller:
        shop.daemon.kill()
        d.wait_for(lambda: poller.ok > 20, what="requests while the daemon is down")
        shop.daemon.start()
        interrupted = d.finished(shop.daemon, attempt.id)
        assert interrupted.status == S.DEPLOYMENT_STATUS_INTERRUPTED

        def recovered() -> bool:
            env = d.environment(shop.daemon, "staging")
            return env.busy == "" and env.healthy

        d.wait_for(recovered, what="the environment's recovery")
        count = poller.ok
        d.wait_for(lambda: poller.ok > count + 20, what="requests after the recovery")
    assert poller.failed == 0, poller.errors[:5]
    staging = d.environment(shop.daemon, "staging")
    assert staging.current.digest == good
    assert {r.digest for r in staging.replicas} == {good}
    assert d.version_at(shop.staging)["version"] == "1.0.0"
    done = shop.daemon.stub.GetDeployment(
        S.GetDeploymentRequest(deployment_id=attempt.id), timeout=10
    )
    notes = [e.message for e in done.events]
    assert any(n.startswith("after the restart: stopped 2 replica(s)") for n in notes), notes


def test_the_daemons_configuration_of_an_environment_wins_over_the_pipelines(
    tmp_path: Path,
) -> None:
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    staging, production, configured = d.free_port(), d.free_port(), d.free_port()
    repo = make_repo(
        tmp_path / "shop",
        {
            "conveyor.yaml": d.pipeline(staging_port=staging, production_port=production),
            "service.py": d.service_source("1.0.0"),
        },
    )
    override = {
        "staging": {
            "run": ["python3", "{artifact}"],
            "port": configured,
            "config": {"GREETING": "from the daemon"},
            "health": {"path": "/health", "interval": 0.05},
            "watch": 0,
        }
    }
    daemon = DaemonProcess(
        home, args=["--kill-grace", "1"], env={"CONVEYOR_ENVIRONMENTS": json.dumps(override)}
    ).start()
    try:
        digest = d.build(daemon, repo)
        healthy(daemon, d.deploy(daemon, "staging", digest))
        assert d.version_at(configured)["greeting"] == "from the daemon"
        with pytest.raises(OSError):
            d.get(staging)  # the pipeline's port is not used
        env = d.environment(daemon, "staging")
        assert env.source == "the daemon's configuration" and env.port == configured
    finally:
        daemon.stop()
        d.stop_processes_of(home)


def _refused(port: int) -> bool:
    """Whether 127.0.0.1:``port`` refuses connections."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_a_replica_that_crashes_is_replaced_while_the_others_serve(shop: Shop) -> None:
    digest = d.build(shop.daemon, shop.repo)
    deployed = healthy(shop.daemon, d.deploy(shop.daemon, "staging", digest))
    replicas = sorted(d.environment(shop.daemon, "staging").replicas, key=lambda r: r.id)
    victim, victim_port = replicas[0].id, replicas[0].port
    os.kill(int(victim.split(":")[1]), signal.SIGKILL)
    # A request the replica was answering when it was killed is lost (the
    # front proxy forwards connections, it cannot replay one); from the
    # moment it is gone, its port refuses and the proxy skips it.
    d.wait_for(lambda: _refused(victim_port), what="the killed replica gone")
    with d.polling(shop.staging) as poller:

        def replaced() -> bool:
            env = d.environment(shop.daemon, "staging")
            ids = {r.id for r in env.replicas if r.healthy}
            return env.healthy and len(ids) == 2 and victim not in ids

        d.wait_for(replaced, what="a replacement replica")
        count = poller.ok
        d.wait_for(lambda: poller.ok > count + 20, what="requests after the replacement")
    assert poller.failed == 0, poller.errors[:5]
    log = shop.daemon.stub.GetDeployment(
        S.GetDeploymentRequest(deployment_id=deployed.id), timeout=10
    )
    messages = [e.message for e in log.events]
    assert any("stopped running" in m and m.endswith("starting a replacement") for m in messages), (
        messages
    )
    assert any(m.startswith("replacement on port") for m in messages)
