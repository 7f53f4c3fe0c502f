"""Whole runs in-process (the real runner, store, git and signing key; stage
kinds defined here): recording what stages produce, the build-once cache,
the workspace check, and what later stages, plugins and spans are told."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor.client.provenance import load_public_key, verify_envelope
from conveyor.daemon.artifacts import signing
from conveyor.daemon.artifacts.recorder import ArtifactDeps
from conveyor.daemon.config import Config
from conveyor.daemon.events import EventBus
from conveyor.daemon.logstore import LogStore
from conveyor.daemon.pipeline import load_pipeline
from conveyor.daemon.plugins import Plugins
from conveyor.daemon.records import RunRecord, RunStatus, StageRecord, StageStatus, TriggerKind
from conveyor.daemon.scheduler.control import RunControl
from conveyor.daemon.scheduler.journal import Journal
from conveyor.daemon.scheduler.runner import RunDeps, RunExecution
from conveyor.daemon.store import ArtifactStore, Database, RunStore
from conveyor.daemon.telemetry.metrics import Instruments
from conveyor.daemon.telemetry.tracing import RunTracing
from conveyor.plugin import (
    FILE,
    Artifact,
    ArtifactOutput,
    Run,
    StageContext,
    StageOutcome,
    StageSpec,
    hookimpl,
)
from conveyor.plugin import (
    StageStatus as PluginStageStatus,
)
from tests.support.repos import GitRepo, git, make_repo


@dataclass
class Producer:
    """Returns the artifact its ``with:`` describes; counts its builds."""

    name: str = "produce"
    description: str = "returns an artifact"
    produces_artifacts: bool = True
    available: bool = True
    builds: int = 0

    def validate(self, spec: StageSpec) -> Iterable[tuple[str, str]]:
        return []

    def cache_inputs(self, spec: StageSpec) -> list[str]:
        return list(spec.with_.get("extra_inputs", []))

    async def artifact_available(self, artifact: Artifact) -> bool:
        return self.available

    async def run(self, ctx: StageContext) -> StageOutcome:
        self.builds += 1
        w = ctx.spec.with_
        output = ArtifactOutput(
            kind=w.get("kind", FILE),
            name=w.get("name", "app.tar"),
            digest=w["digest"],
            size=w.get("size", 7),
            tags=tuple(w.get("tags", [ctx.version])),
        )
        return StageOutcome(PluginStageStatus.SUCCEEDED, artifacts=(output,))


@dataclass
class Reader:
    """Records what it is given: the run's version and artifacts."""

    name: str = "read"
    description: str = "reads ctx"
    seen: list[tuple[str, tuple[Artifact, ...]]] = field(default_factory=list)

    def validate(self, spec: StageSpec) -> Iterable[tuple[str, str]]:
        return []

    async def run(self, ctx: StageContext) -> StageOutcome:
        self.seen.append((ctx.version, ctx.artifacts))
        return StageOutcome(PluginStageStatus.SUCCEEDED)


class Observer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Artifact]] = []

    @hookimpl
    def conveyor_artifact_produced(self, run: Run, artifact: Artifact) -> None:
        self.calls.append((run.id, artifact))


@dataclass
class Harness:
    home: Path
    db: Database
    deps: RunDeps
    key: signing.SigningKey
    spans: InMemorySpanExporter
    producer: Producer
    reader: Reader
    observer: Observer
    plugins: Plugins
    runs: RunStore
    artifacts: ArtifactStore

    async def run(self, repo: GitRepo) -> RunRecord:
        """Run the repository's HEAD to its end, as the scheduler would."""
        text = git("show", "HEAD:conveyor.yaml", cwd=repo.path)
        spec = load_pipeline(
            text,
            stage_kinds={n: k.validate for n, k in self.plugins.stage_kinds.items()},
            executors=self.plugins.executors.keys(),
        )
        run_id = f"{time.time_ns():020x}"[:20]
        run = RunRecord(
            id=run_id,
            number=0,
            pipeline=spec.name,
            repository=str(repo.path),
            ref="main",
            commit=git("rev-parse", "HEAD", cwd=repo.path),
            pipeline_path="conveyor.yaml",
            trigger=TriggerKind.MANUAL,
            status=RunStatus.QUEUED,
            created_at=time.time(),
            spec_json="{}",
            concurrency_group="",
            stages=[
                StageRecord(
                    run_id=run_id,
                    name=name,
                    position=i,
                    kind=spec.stages[name].uses,
                    needs=list(spec.stages[name].needs),
                )
                for i, name in enumerate(spec.stage_order())
            ],
        )
        run.trace_id, run.span_id = self.deps.tracing.start_run(run)
        stored, _ = await self.runs.create_run(run)
        self.deps.tracing.run_stored(stored)
        await RunExecution(self.deps, stored, spec, RunControl(run_id, "")).execute()
        return stored

    def log(self, run: RunRecord, stage: str) -> str:
        return (self.home / "logs" / run.id / f"{stage}.log").read_text()

    def span(self, run: RunRecord, stage: str) -> ReadableSpan:
        (span,) = [
            s
            for s in self.spans.get_finished_spans()
            if (s.attributes or {}).get("cicd.pipeline.task.run.id") == f"{run.id}/{stage}"
        ]
        return span

    async def delivered(self) -> None:
        """Deliver every queued notification to the plugins (the notifier
        closes: call it once the runs are done)."""
        await self.plugins.notifier.aclose(trio.current_time() + 10)
        assert self.plugins.notifier.dropped == 0


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    home = tmp_path / "home"
    config = Config(home=home, kill_grace=1.0)
    db = Database(config.database_path)
    key = signing.load_or_create(tmp_path)
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    plugins = Plugins()
    await trio.to_thread.run_sync(plugins.load_entry_points)
    producer, reader, observer = Producer(), Reader(), Observer()

    class Kinds:
        @hookimpl
        def conveyor_stage_kinds(self) -> list[Any]:
            return [producer, reader]

    plugins.register(Kinds(), "test-kinds")
    plugins.register(observer, "test-observer")
    runs = RunStore(db)
    store = ArtifactStore(db)
    deps = RunDeps(
        config=config,
        journal=Journal(runs, EventBus()),
        logs=LogStore(config.logs_dir),
        plugins=plugins,
        base_env={"PATH": "/usr/bin:/bin"},
        tracing=RunTracing(provider.get_tracer("t"), Instruments(MeterProvider().get_meter("t"))),
        artifacts=ArtifactDeps(store, key, "conveyor://test", "0.1.0"),
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(plugins.notifier.serve)
            yield Harness(
                home, db, deps, key, spans, producer, reader, observer, plugins, runs, store
            )
            nursery.cancel_scope.cancel()
    finally:
        db.close()


DIGEST = "sha256:" + "1f" * 32

CHAIN = """\
name: chain
version: 1.4.0
stages:
  prepare:
    run: "true"
  compile:
    needs: prepare
    run: "true"
  lint:
    run: "true"
  package:
    uses: produce
    needs: compile
    with: {{digest: "{digest}"}}
  use:
    uses: read
    needs: package
"""


async def test_a_produced_artifact_is_recorded_signed_announced_and_handed_on(
    harness: Harness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", {"conveyor.yaml": CHAIN.format(digest=DIGEST)})
    run = await harness.run(repo)
    assert run.status is RunStatus.SUCCEEDED, [(s.name, s.reason) for s in run.stages]
    version = f"1.4.0-rc.1+sha.{run.commit[:12]}"
    assert run.version == version
    artifact = await harness.artifacts.get(DIGEST)
    assert artifact is not None
    assert (artifact.version, artifact.tags, artifact.run_id, artifact.stage) == (
        version,
        (version,),
        run.id,
        "package",
    )
    # the producing stage and what it needs, transitively; not the unrelated lint
    assert [s.name for s in artifact.stages] == ["prepare", "compile", "package"]
    assert all(s.started_at and s.finished_at for s in artifact.stages)
    assert (artifact.trace_id, artifact.span_id) == (run.trace_id, run.span_id)
    verified = verify_envelope(
        artifact.provenance, load_public_key(harness.key.public_pem()), subject_digest=DIGEST
    )
    definition = verified.predicate["buildDefinition"]
    assert definition["resolvedDependencies"][0]["digest"] == {"gitCommit": run.commit}
    assert definition["externalParameters"]["parameters"] == {"with": {"digest": DIGEST}}
    assert definition["internalParameters"]["traceId"] == run.trace_id
    # the later stage got the version and the artifact
    ((seen_version, seen_artifacts),) = harness.reader.seen
    assert seen_version == version
    assert [a.digest for a in seen_artifacts] == [DIGEST]
    await harness.delivered()
    assert [(run_id, a.digest) for run_id, a in harness.observer.calls] == [(run.id, DIGEST)]
    attributes = dict(harness.span(run, "package").attributes or {})
    assert attributes["artifact.hash"] == DIGEST
    assert attributes["artifact.version"] == version
    assert attributes["artifact.filename"] == "app.tar"
    assert attributes["conveyor.artifact.signing_key"] == harness.key.key_id
    assert str(attributes["artifact.attestation.hash"]).startswith("sha256:")
    assert "recorded artifact " + DIGEST in harness.log(run, "package")


CACHED = """\
name: cached
stages:
  package:
    uses: produce
    inputs: [src]
    with: {{digest: "{digest}", extra_inputs: [Dockerfile]{more}}}
"""


async def test_a_stage_whose_inputs_did_not_change_reuses_its_artifact(
    harness: Harness, tmp_path: Path
) -> None:
    files = {
        "conveyor.yaml": CACHED.format(digest=DIGEST, more=""),
        "src/app.py": "print(1)\n",
        "Dockerfile": "FROM scratch\n",
        "README.md": "hello\n",
    }
    repo = make_repo(tmp_path / "repo", files)
    first = await harness.run(repo)
    assert harness.producer.builds == 1
    second = await harness.run(repo)
    stage = second.stage("package")
    assert stage.status is StageStatus.SUCCEEDED
    assert stage.reason == f"cache hit: {DIGEST} from run #{first.number}"
    assert harness.producer.builds == 1
    hits = await harness.artifacts.cache_hits(DIGEST)
    assert [(h.run_id, h.original_run_id) for h in hits] == [(second.id, first.id)]
    attributes = dict(harness.span(second, "package").attributes or {})
    assert attributes["conveyor.cache.hit"] is True
    assert attributes["conveyor.cache.original_run.id"] == first.id
    assert attributes["artifact.hash"] == DIGEST

    repo.commit({"README.md": "not an input\n"})
    await harness.run(repo)
    assert harness.producer.builds == 1, "a file outside the inputs changed the key"

    for change in ({"src/app.py": "print(2)\n"}, {"Dockerfile": "FROM busybox\n"}):
        repo.commit(change)
        await harness.run(repo)
    assert harness.producer.builds == 3, "an input or a kind's cache input did not count"

    repo.commit({"conveyor.yaml": CACHED.format(digest=DIGEST, more=", size: 8")})
    await harness.run(repo)
    assert harness.producer.builds == 4, "the stage's parameters did not count"

    harness.producer.available = False
    gone = await harness.run(repo)
    assert harness.producer.builds == 5
    assert "is no longer available; building again" in harness.log(gone, "package")
    await harness.delivered()
    # a cache hit reuses an artifact already announced: no notification for it
    assert second.id not in {run_id for run_id, _ in harness.observer.calls}


async def test_an_input_missing_at_the_commit_runs_the_stage_without_the_cache(
    harness: Harness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", {"conveyor.yaml": CACHED.format(digest=DIGEST, more="")})
    for _ in range(2):
        run = await harness.run(repo)
        assert run.status is RunStatus.SUCCEEDED
    assert harness.producer.builds == 2
    assert "cache: src not found at commit" in harness.log(run, "package")
    assert (await harness.artifacts.get(DIGEST)).cache_key == ""  # type: ignore[union-attr]


DIRTY = """\
name: dirty
stages:
  fix:
    run: echo "# reformatted" >> src/app.py
  package:
    uses: produce
    needs: fix
    inputs: [src]
    with: {{digest: "{digest}"}}
"""


async def test_a_workspace_that_differs_from_the_commit_fails_the_build(
    harness: Harness, tmp_path: Path
) -> None:
    files = {"conveyor.yaml": DIRTY.format(digest=DIGEST), "src/app.py": "print(1)\n"}
    repo = make_repo(tmp_path / "repo", files)
    run = await harness.run(repo)
    stage = run.stage("package")
    assert stage.status is StageStatus.FAILED
    assert stage.reason == (
        f"1 tracked file differs from commit {run.commit[:12]} before the stage (changed by an"
        " earlier or parallel stage): src/app.py"
    )
    assert harness.producer.builds == 0
    assert "set allow_dirty: true" in harness.log(run, "package")
    assert dict(harness.span(run, "package").attributes or {})["error.type"] == "workspace_changed"
    assert await harness.artifacts.get(DIGEST) is None


async def test_allow_dirty_records_the_changed_files_and_skips_the_cache(
    harness: Harness, tmp_path: Path
) -> None:
    pipeline = DIRTY.format(digest=DIGEST).replace(
        "    needs: fix\n", "    needs: fix\n    allow_dirty: true\n"
    )
    repo = make_repo(tmp_path / "repo", {"conveyor.yaml": pipeline, "src/app.py": "print(1)\n"})
    run = await harness.run(repo)
    assert run.status is RunStatus.SUCCEEDED
    artifact = await harness.artifacts.get(DIGEST)
    assert artifact is not None
    assert (artifact.reproducible, artifact.changed_files, artifact.cache_key) == (
        False,
        ("src/app.py",),
        "",
    )
    statement = verify_envelope(
        artifact.provenance, load_public_key(harness.key.public_pem()), subject_digest=DIGEST
    ).statement
    internal = statement["predicate"]["buildDefinition"]["internalParameters"]
    assert internal["reproducibleFromCommit"] is False
    assert internal["changedFiles"] == ["src/app.py"]
    assert "allowed by allow_dirty" in harness.log(run, "package")
    await harness.run(repo)
    assert harness.producer.builds == 2, "a dirty build was reused from the cache"


async def test_require_clean_checks_a_stage_that_produces_nothing(
    harness: Harness, tmp_path: Path
) -> None:
    pipeline = (
        "name: clean\nstages:\n  fix:\n    run: rm README.md\n"
        "  check:\n    needs: fix\n    run: 'true'\n    require_clean: true\n"
    )
    repo = make_repo(tmp_path / "repo", {"conveyor.yaml": pipeline, "README.md": "x\n"})
    run = await harness.run(repo)
    assert run.stage("check").status is StageStatus.FAILED
    assert run.stage("check").reason.endswith(": README.md")


async def test_an_invalid_output_fails_the_stage_as_the_plugins_fault(
    harness: Harness, tmp_path: Path
) -> None:
    pipeline = 'name: bad\nstages:\n  package:\n    uses: produce\n    with: {digest: "md5:abc"}\n'
    repo = make_repo(tmp_path / "repo", {"conveyor.yaml": pipeline})
    run = await harness.run(repo)
    stage = run.stage("package")
    assert stage.status is StageStatus.FAILED
    assert stage.reason == (
        "stage kind 'produce' (plugin test-kinds) returned an invalid artifact: digest 'md5:abc'"
        " is not sha256:<64 lower-case hex digits>"
    )
    span = dict(harness.span(run, "package").attributes or {})
    assert (span["error.type"], span["cicd.pipeline.task.run.result"]) == (
        "invalid_artifact",
        "error",
    )


async def test_a_version_tag_on_the_commit_is_the_version(harness: Harness, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"conveyor.yaml": CHAIN.format(digest=DIGEST)})
    git("tag", "-a", "v2.1.0", "-m", "release", cwd=repo.path)
    run = await harness.run(repo)
    assert run.version == "2.1.0"
    stored = await harness.runs.get_run(run.id)
    assert stored is not None and stored.version == "2.1.0"
    assert (await harness.artifacts.tag_digest("app.tar", "2.1.0")) == DIGEST
    span_attributes = [
        dict(s.attributes or {})
        for s in harness.spans.get_finished_spans()
        if s.name == "RUN chain"
    ]
    assert span_attributes[-1]["conveyor.run.version"] == "2.1.0"
    assert json.loads(json.dumps(stored.version)) == "2.1.0"
