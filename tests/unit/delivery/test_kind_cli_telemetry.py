"""The ``deploy`` stage kind's choices, the CLI's rendering of deployments
(server strings never act on the terminal), the deployment span with its
link to the build, and ``conveyor_deployment_finished``."""

from __future__ import annotations

import dataclasses

import trio
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor.client import delivery as cli
from conveyor.daemon.delivery.records import Commit, DeploymentStatus
from conveyor.daemon.plugins import Plugins
from conveyor.daemon.telemetry.deployments import DeploymentTracing
from conveyor.plugin import Deployment, StageSpec, hookimpl
from conveyor.plugins.deploy import DeployStage, choose
from conveyor.v1 import delivery_pb2
from tests.unit.delivery.support import artifact, record


def test_the_deploy_kind_takes_exactly_one_of_the_runs_artifacts() -> None:
    wheel = dataclasses.replace(artifact(1), name="shop-1.0.0.whl")
    image = dataclasses.replace(artifact(2), name="127.0.0.1:5000/shop")
    assert choose([wheel], "") == (wheel, "")
    assert choose([wheel, image], "*.whl") == (wheel, "")
    none, why = choose([wheel], "*.tar.gz")
    assert none is None and "no artifact matching '*.tar.gz'" in why
    many, why = choose([wheel, image], "")
    assert many is None and "2 artifacts could be deployed" in why and "with.artifact" in why


def test_the_deploy_kinds_parameters_are_checked_at_load() -> None:
    def problems(with_: dict[str, object], run: str = "") -> list[tuple[str, str]]:
        spec = StageSpec.model_validate({"uses": "deploy", "with": with_, "run": run or []})
        return list(DeployStage().validate(spec))

    assert problems({"environment": "staging"}) == []
    assert problems({"environment": "production", "promote_from": "staging"}) == []
    assert problems({}) == [("with.environment", "required parameter 'environment' is missing")]
    assert problems({"environment": "staging", "promote_from": "staging"})[0][0] == (
        "with.promote_from"
    )
    assert problems({"environment": "x", "promote_from": "y", "artifact": "*"})[0][0] == (
        "with.artifact"
    )
    assert problems({"environment": "staging"}, run="echo")[0][0] == "run"


def deployment(**fields: object) -> delivery_pb2.Deployment:
    message = delivery_pb2.Deployment(
        id="01a2333890a41244c19e",
        environment="staging",
        kind=delivery_pb2.DEPLOYMENT_KIND_DEPLOY,
        status=delivery_pb2.DEPLOYMENT_STATUS_ROLLED_BACK,
        reason="replica failed\x1b[2J",
        digest="sha256:" + "ab" * 32,
        artifact_name="service.py",
        version="1.0.0",
        deployer="uid:1000",
        commits=[delivery_pb2.Commit(id="c" * 40, subject="fix \x1b]0;pwned\x07 it")],
        commits_total=1,
        created_at=Timestamp(seconds=1_800_000_000),
        finished_at=Timestamp(seconds=1_800_000_002),
        duration_seconds=2.0,
    )
    for name, value in fields.items():
        setattr(message, name, value)
    return message


def test_deployments_print_without_acting_on_the_terminal() -> None:
    d = deployment()
    text = "\n".join([*cli.deployment_detail(d), *cli.deployments_table([d]), cli.finished_line(d)])
    assert "\x1b" not in text and "\\x1b[2J" in text and "\\x1b]0;pwned\\x07" in text
    assert "rolled_back" in text and "commits since the previous deployment (1):" in text
    assert cli.trace_lines([d])[1].split()[:2] == ["staging", "rolled_back"]
    assert cli.trace_lines([]) == ["deployed: nowhere yet"]


def test_following_prints_new_lines_until_the_end() -> None:
    states = [
        deployment(status=delivery_pb2.DEPLOYMENT_STATUS_PROGRESSING),
        deployment(status=delivery_pb2.DEPLOYMENT_STATUS_HEALTHY),
    ]
    states[0].events.add(seq=1, message="starting replica 1/2")
    for seq, message in [(1, "starting replica 1/2"), (2, "healthy")]:
        states[1].events.add(seq=seq, message=message)
    printed: list[str] = []
    final = cli.follow(lambda _: states.pop(0), "x", printed.append, sleep=lambda _: None)
    assert final.status == delivery_pb2.DEPLOYMENT_STATUS_HEALTHY
    assert [line.split("  ")[-1] for line in printed] == ["starting replica 1/2", "healthy"]


def test_a_deployment_span_links_to_the_build_and_counts_the_outcome() -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = InMemoryMetricReader()
    tracing = DeploymentTracing(
        provider.get_tracer("t"), MeterProvider(metric_readers=[metrics]).get_meter("t")
    )
    built = artifact()
    r = record()
    r.trace_id, r.span_id = tracing.start(r, artifact_trace=(built.trace_id, built.span_id))
    ended = dataclasses.replace(
        r, status=DeploymentStatus.ROLLED_BACK, reason="unhealthy", finished_at=r.created_at + 1
    )
    tracing.end(ended)
    (span,) = spans.get_finished_spans()
    assert span.name == "DEPLOY staging"
    assert format(span.context.trace_id, "032x") == r.trace_id
    attributes = dict(span.attributes or {})
    assert attributes["deployment.environment.name"] == "staging"
    assert attributes["deployment.id"] == r.id
    assert attributes["deployment.status"] == "rolled_back"
    assert attributes["enduser.id"] == "uid:1000"
    assert attributes["artifact.hash"] == r.digest and attributes["error.type"] == "rolled_back"
    (link,) = span.links
    assert format(link.context.trace_id, "032x") == built.trace_id
    data = metrics.get_metrics_data()
    assert data is not None
    counted = [
        (dict(point.attributes or {}), point.value)  # type: ignore[union-attr]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "conveyor.deployment.count"
        for point in metric.data.data_points
    ]
    assert counted == [
        ({"deployment.environment.name": "staging", "deployment.status": "rolled_back"}, 1)
    ]


async def test_deployment_finished_reaches_plugins_as_a_frozen_view() -> None:
    got: list[Deployment] = []
    arrived = trio.Event()

    class Pager:
        @hookimpl
        async def conveyor_deployment_finished(self, deployment: Deployment) -> None:
            got.append(deployment)
            arrived.set()

    plugins = Plugins(hook_timeout=5)
    plugins.register(Pager(), "pager")
    r = dataclasses.replace(
        record(), status=DeploymentStatus.HEALTHY, commits=[Commit("c" * 40, "fix it")]
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(plugins.notifier.serve)
            plugins.deployment_finished(r)
            await arrived.wait()
            await plugins.notifier.aclose(trio.current_time() + 5)
    (view,) = got
    assert (view.id, view.status, view.commits) == (r.id, "healthy", (("c" * 40, "fix it"),))
    assert dataclasses.is_dataclass(view) and view.duration is None
