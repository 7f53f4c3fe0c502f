"""Secrets reach the stages that ask, and nothing else (issue 11, item 5),
in-process: injected as variables only into those stages, masked in the
run's logs and in everything recorded (reasons, events, reports), and a
secret that went away fails its stage instead of running it without."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from conveyor.daemon.config import Config
from conveyor.daemon.records import RunRecord, RunStatus, StageStatus
from conveyor.daemon.secrets.providers import Secrets
from conveyor.daemon.service import RunService, SubmitRequest
from conveyor.daemon.store import RunStore
from conveyor.plugin import Finding, StageContext, StageOutcome, StageReport
from tests.support.inprocess import plugins_with, serving
from tests.support.repos import make_repo
from tests.unit.test_scheduler import PATIENCE, Probe, ProbePlugin, hang

TOKEN = "stage-secret-5f0e9d8c7b"


@dataclass
class Harness:
    config: Config
    service: RunService
    store: RunStore
    probe: Probe
    secrets: Secrets
    root: Path

    async def submit(self, pipeline: str) -> RunRecord:
        repo = self.root / f"repo{len(os.listdir(self.root))}"
        await trio.to_thread.run_sync(make_repo, repo, {"conveyor.yaml": pipeline})
        run, _ = await self.service.submit(SubmitRequest(repository=str(repo), ref="main"))
        return run

    async def wait(self, run: RunRecord) -> RunRecord:
        with trio.fail_after(PATIENCE):
            async for _ in self.service.watch(run.id, 0):
                pass
        return await self.service.get_run(run.id)

    def log(self, run: RunRecord, stage: str) -> bytes:
        return (self.config.logs_dir / run.id / f"{stage}.log").read_bytes()

    def database(self) -> bytes:
        home = self.config.home
        return b"".join(
            (home / name).read_bytes()
            for name in ("conveyor.db", "conveyor.db-wal")
            if (home / name).exists()
        )


@asynccontextmanager
async def open_daemon(root: Path, **settings: object) -> AsyncIterator[Harness]:
    """The scheduler and service as the daemon wires them, with secrets."""
    config = Config(home=root / "home", kill_grace=1.0, **settings)  # type: ignore[arg-type]
    secrets = Secrets(from_env=["TOKEN"], environ={"TOKEN": TOKEN})
    probe = Probe()
    repos = root / "repos"
    repos.mkdir()
    async with serving(config, plugins_with(probe=ProbePlugin(probe)), secrets=secrets) as wired:
        yield Harness(config, wired.service, wired.store, probe, secrets, repos)


async def test_only_stages_that_ask_get_a_secret_and_their_run_logs_mask_it(
    tmp_path: Path,
) -> None:
    async with open_daemon(tmp_path) as h:
        run = await h.submit(
            "name: s\nstages:\n"
            "  asks:\n    secrets: [TOKEN]\n"
            "    run: ['echo \"got $TOKEN\"', 'printf %s \"$TOKEN\" > token.txt']\n"
            "  later:\n    needs: [asks]\n"
            "    run: ['echo \"env ${TOKEN:-unset}\"', 'cat token.txt']\n"
        )
        final = await h.wait(run)
        assert final.status is RunStatus.SUCCEEDED, final.reason
        assert b"\ngot ***\n" in h.log(run, "asks")
        # the stage that did not ask has no TOKEN; what it finds in the
        # workspace is masked all the same: the run's logs mask its secrets
        later = h.log(run, "later")
        assert b"env unset\n" in later and later.endswith(b"***")


async def test_what_a_stage_kind_says_is_recorded_masked(tmp_path: Path) -> None:
    async def leaky(ctx: StageContext) -> StageOutcome:
        token = ctx.env["TOKEN"]
        return StageOutcome(
            StageStatus.FAILED,
            f"rejected {token}",
            report=StageReport(
                kind="scan",
                findings=[Finding("t", "r", "high", "f", message=f"has {token}")],
                gate_passed=False,
                gate_reason=token,
            ),
        )

    async with open_daemon(tmp_path) as h:
        h.probe.scripts["leak"] = leaky
        run = await h.submit("name: r\nstages:\n  leak: {uses: probe, secrets: [TOKEN]}\n")
        final = await h.wait(run)
        events = await h.store.events_after(run.id, 0)
    stage = final.stage("leak")
    assert stage.reason == "rejected ***" and final.reason == "stage 'leak' failed: rejected ***"
    assert stage.report is not None and stage.report.findings[0].message == "has ***"
    assert stage.report.gate_reason == "***"
    assert not [e for e in events if TOKEN in e.message]
    assert TOKEN.encode() not in h.database()


async def test_a_secret_gone_since_the_run_was_submitted_fails_its_stage(
    tmp_path: Path,
) -> None:
    async with open_daemon(tmp_path, max_concurrent_runs=1) as h:
        h.probe.scripts["s"] = hang
        running = await h.submit("name: one\nstages:\n  s: {uses: probe}\n")
        await h.probe.wait_started(running, "s")
        queued = await h.submit("name: two\nstages:\n  use: {run: 'true', secrets: [TOKEN]}\n")
        h.secrets._from_env.clear()  # as `conveyord secrets rm` and a reload would
        h.secrets._publish()
        await h.service.cancel_run(running.id, "make room")
        final = await h.wait(queued)
    assert final.stage("use").status is StageStatus.FAILED
    assert final.stage("use").reason == (
        "the daemon no longer holds the secret(s) it asks for: TOKEN (conveyord secrets list)"
    )


async def test_a_cancel_reason_holding_a_secret_is_stored_masked(tmp_path: Path) -> None:
    async with open_daemon(tmp_path, max_concurrent_runs=1) as h:
        h.probe.scripts["s"] = hang
        running = await h.submit("name: one\nstages:\n  s: {uses: probe}\n")
        await h.probe.wait_started(running, "s")
        queued = await h.submit("name: two\nstages:\n  s: {uses: probe}\n")
        answer = await h.service.cancel_run(queued.id, f"rotating {TOKEN}")
        await h.service.cancel_run(running.id, f"and {TOKEN}")
        running_final = await h.wait(running)
        events = await h.store.events_after(queued.id, 0)
    assert answer.reason == "rotating ***"
    assert answer.stage("s").reason == "not started: rotating ***"
    assert running_final.reason == "and ***"
    assert not [e for e in events if TOKEN in e.message]
    assert TOKEN.encode() not in h.database()
