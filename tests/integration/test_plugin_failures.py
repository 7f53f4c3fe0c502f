"""A plugin that breaks fails only what it touched; the daemon keeps serving."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from conveyor.v1 import runs_pb2, server_pb2
from tests.support.daemon import DaemonProcess, stage
from tests.support.plugins import write_distribution
from tests.support.repos import GitRepo

BROKEN_IMPORT = """
raise ImportError("libfoo.so: cannot open shared object file")
"""

BROKEN_REGISTRATION = """
from conveyor.plugin import hookimpl

@hookimpl
def conveyor_stage_kinds():
    raise RuntimeError("config file /etc/notify.toml missing")
"""

CRASHING_STAGE = """
from conveyor.plugin import hookimpl

class Crash:
    name = "crash"
    description = "raises inside its stage"

    def validate(self, spec):
        return []

    async def run(self, ctx):
        await ctx.log_line("about to fail")
        raise ValueError("boom from the plugin")

@hookimpl
def conveyor_stage_kinds():
    return [Crash()]
"""


def kind_plugin(kind: str, more_hooks: str) -> str:
    """A plugin module with a stage kind that succeeds, and ``more_hooks``."""
    return f"""
from conveyor.plugin import StageOutcome, StageStatus, hookimpl

class Kind:
    name = "{kind}"
    description = "the {kind} kind"

    def validate(self, spec):
        return []

    async def run(self, ctx):
        return StageOutcome(StageStatus.SUCCEEDED, "{kind} works")

@hookimpl
def conveyor_stage_kinds():
    return [Kind()]
{more_hooks}"""


# one good registration hook, one that raises
HALF_BROKEN = kind_plugin(
    "half",
    """
@hookimpl
def conveyor_executors():
    raise ValueError("no executors today")
""",
)

MISSPELLED = kind_plugin(
    "never",
    """
@hookimpl
def conveyor_stage_finish(stage):
    pass
""",
)

NOISY_OBSERVER = """
from conveyor.plugin import hookimpl

@hookimpl
async def conveyor_run_finished(run):
    raise RuntimeError("webhook unreachable")

@hookimpl
def conveyor_stage_finished(run, stage):
    raise KeyError("nope")
"""


@pytest.fixture
def plugin_daemon(daemon_home: Path, tmp_path: Path) -> Iterator[DaemonProcess]:
    site = tmp_path / "site"
    write_distribution(
        site,
        "broken-import",
        {"broken_import": "broken_import_plugin"},
        {"broken_import_plugin": BROKEN_IMPORT},
    )
    write_distribution(
        site,
        "broken-registration",
        {"notify": "broken_registration_plugin"},
        {"broken_registration_plugin": BROKEN_REGISTRATION},
    )
    write_distribution(
        site,
        "crashing-stage",
        {"crashing_stage": "crashing_stage_plugin"},
        {"crashing_stage_plugin": CRASHING_STAGE},
    )
    write_distribution(
        site, "half-broken", {"half": "half_broken_plugin"}, {"half_broken_plugin": HALF_BROKEN}
    )
    write_distribution(
        site, "misspelled", {"misspelled": "misspelled_plugin"}, {"misspelled_plugin": MISSPELLED}
    )
    write_distribution(
        site,
        "noisy-observer",
        {"noisy_observer": "noisy_observer_plugin"},
        {"noisy_observer_plugin": NOISY_OBSERVER},
    )
    daemon = DaemonProcess(daemon_home, env={"PYTHONPATH": str(site)}).start()
    try:
        yield daemon
    finally:
        daemon.stop()


def _plugins(daemon: DaemonProcess) -> dict[str, server_pb2.Plugin]:
    reply = daemon.stub.ListPlugins(server_pb2.ListPluginsRequest())
    return {p.name: p for p in reply.plugins}


def test_plugins_that_fail_to_load_are_reported_by_name(plugin_daemon: DaemonProcess) -> None:
    plugins = _plugins(plugin_daemon)
    assert "libfoo.so" in plugins["broken_import"].error
    assert "failed to import" in plugins["broken_import"].error
    assert plugins["broken_import"].distribution == "broken-import"
    assert "config file /etc/notify.toml missing" in plugins["notify"].error
    assert plugins["notify"].provides == []
    assert plugins["crashing_stage"].error == ""
    assert plugins["crashing_stage"].provides == ["stage kind: crash"]
    assert plugins["run"].error == "" and plugins["local_executor"].error == ""
    assert set(plugins["noisy_observer"].hooks) == {
        "conveyor_run_finished",
        "conveyor_stage_finished",
    }


def test_a_plugin_keeps_what_did_not_fail_and_a_misspelled_hook_is_refused(
    plugin_daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    plugins = _plugins(plugin_daemon)
    half = plugins["half"]
    assert half.error == "conveyor_executors raised ValueError: no executors today"
    assert half.provides == ["stage kind: half"]
    assert set(half.hooks) == {"conveyor_stage_kinds", "conveyor_executors"}
    misspelled = plugins["misspelled"]
    assert misspelled.error.startswith(
        "unknown hook conveyor_stage_finish (did you mean conveyor_stage_finished?)"
    )
    assert misspelled.provides == [] and misspelled.hooks == []

    run = plugin_daemon.wait(
        plugin_daemon.submit(pipeline_repo("name: h\nstages:\n  a:\n    uses: half\n").path).id
    )
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED
    assert stage(run, "a").reason == "half works"
    with pytest.raises(grpc.RpcError) as err:
        plugin_daemon.submit(pipeline_repo("name: n\nstages:\n  a:\n    uses: never\n").path)
    assert "unknown stage kind 'never'" in (err.value.details() or "")


def test_a_stage_whose_plugin_raises_fails_alone_with_the_traceback_in_its_log(
    plugin_daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo(
        "name: mixed\nstages:\n  ok:\n    run: echo fine\n"
        "  bad:\n    uses: crash\n  after:\n    needs: [bad]\n    run: echo never\n"
    )
    run = plugin_daemon.wait(plugin_daemon.submit(repo.path).id)
    assert run.status == runs_pb2.RUN_STATUS_FAILED
    bad = stage(run, "bad")
    assert bad.status == runs_pb2.STAGE_STATUS_FAILED
    assert "crashing_stage" in bad.reason and "ValueError: boom from the plugin" in bad.reason
    assert stage(run, "ok").status == runs_pb2.STAGE_STATUS_SUCCEEDED
    assert stage(run, "after").status == runs_pb2.STAGE_STATUS_SKIPPED
    log = plugin_daemon.logs(run.id, "bad").decode()
    assert "about to fail" in log
    assert "Traceback (most recent call last)" in log and "crashing_stage_plugin.py" in log
    # the raising lifecycle hooks did not disturb the run either, and it keeps serving
    again = plugin_daemon.wait(plugin_daemon.submit(repo.path).id)
    assert again.number == 2 and stage(again, "ok").status == runs_pb2.STAGE_STATUS_SUCCEEDED


def test_a_pipeline_using_a_kind_of_a_broken_plugin_is_rejected_with_a_hint(
    plugin_daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo("name: n\nstages:\n  tell:\n    uses: notify\n")
    with pytest.raises(grpc.RpcError) as err:
        plugin_daemon.submit(repo.path)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details() or ""
    assert "conveyor.yaml:4:" in details and "unknown stage kind 'notify'" in details
    assert "notify (conveyor_stage_kinds raised RuntimeError" in details


HUNG_OBSERVER = """
import trio
from conveyor.plugin import hookimpl

@hookimpl
async def conveyor_stage_finished(run, stage):
    await trio.sleep_forever()

@hookimpl
async def conveyor_run_finished(run):
    await trio.sleep_forever()
"""


def test_a_hung_lifecycle_hook_is_abandoned_after_hook_timeout(
    daemon_home: Path, tmp_path: Path, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    site = tmp_path / "site"
    write_distribution(
        site,
        "hung-observer",
        {"hung": "hung_observer_plugin"},
        {"hung_observer_plugin": HUNG_OBSERVER},
    )
    daemon = DaemonProcess(
        daemon_home, env={"PYTHONPATH": str(site)}, args=["--hook-timeout", "0.3"]
    ).start()
    try:
        repo = pipeline_repo(
            "name: h\nstages:\n  a:\n    run: 'true'\n  b:\n    needs: [a]\n    run: 'true'\n"
        )
        run = daemon.wait(daemon.submit(repo.path).id, timeout=20)
        assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED
    finally:
        assert daemon.stop(timeout=15) == 0
    assert "took longer than 0.3s; abandoned" in daemon.log_path.read_text()


HANGING_HOOKS = """
import trio
from conveyor.plugin import hookimpl

@hookimpl
async def conveyor_run_started(run):
    await trio.sleep_forever()

@hookimpl
async def conveyor_stage_finished(run, stage):
    await trio.sleep_forever()

@hookimpl
async def conveyor_run_finished(run):
    await trio.sleep_forever()
"""

SHUTDOWN_TIMEOUT = 2
#: With hooks inline, each hung call held its run (and shutdown) this long.
HOOK_TIMEOUT = 60


def test_hung_hooks_hold_up_neither_runs_nor_shutdown(
    daemon_home: Path, tmp_path: Path, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    site = tmp_path / "site"
    write_distribution(
        site, "hanging", {"hanging": "hanging_plugin"}, {"hanging_plugin": HANGING_HOOKS}
    )
    daemon = DaemonProcess(
        daemon_home,
        env={"PYTHONPATH": str(site)},
        args=[
            "--hook-timeout",
            str(HOOK_TIMEOUT),
            "--shutdown-timeout",
            str(SHUTDOWN_TIMEOUT),
            "--kill-grace",
            "1",
        ],
    ).start()
    try:
        chain = pipeline_repo(
            "name: chain\nstages:\n  a:\n    run: 'true'\n"
            "  b:\n    needs: [a]\n    run: 'true'\n  c:\n    needs: [b]\n    run: 'true'\n"
        )
        # every hook of this run hangs, and the run does not wait for any of them
        run = daemon.wait(daemon.submit(chain.path).id, timeout=HOOK_TIMEOUT / 2)
        assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED
        slow = daemon.submit(pipeline_repo("name: slow\nstages:\n  a:\n    run: sleep 60\n").path)
        for event in daemon.events(slow.id):
            if event.stage_status == runs_pb2.STAGE_STATUS_RUNNING:
                break
    finally:
        # SIGTERM with a run in progress and hung notifications queued: one
        # grace period, then a hard cancel (generous margin; the point is
        # not HOOK_TIMEOUT x hooks)
        code = daemon.stop(timeout=SHUTDOWN_TIMEOUT + 10)
    assert code == 0
    log = daemon.log_path.read_text()
    assert "notification(s) not delivered: the shutdown grace period ended" in log


SLOW_OBSERVER = """
import trio
from conveyor.plugin import hookimpl

@hookimpl
async def conveyor_stage_finished(run, stage):
    if stage.name != "a":
        return
    # hold a's notification until the stage that needs a has started
    with trio.move_on_after(15):
        while not await trio.Path({marker!r}).exists():
            await trio.sleep(0.05)
        await trio.Path({seen!r}).write_text("b started while a's hook ran")
"""


def test_a_slow_stage_finished_hook_does_not_delay_the_stages_that_need_it(
    daemon_home: Path, tmp_path: Path, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    marker, seen = tmp_path / "b-started", tmp_path / "seen"
    site = tmp_path / "site"
    source = SLOW_OBSERVER.format(marker=str(marker), seen=str(seen))
    write_distribution(site, "slow-observer", {"slow": "slow_plugin"}, {"slow_plugin": source})
    daemon = DaemonProcess(daemon_home, env={"PYTHONPATH": str(site)}).start()
    try:
        repo = pipeline_repo(
            "name: order\nstages:\n  a:\n    run: 'true'\n"
            f"  b:\n    needs: [a]\n    run: touch {marker}\n"
        )
        run = daemon.wait(daemon.submit(repo.path).id)
        assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED
        # the hook is delivered apart from the run: it may end after the run
        deadline = time.monotonic() + 15
        while not seen.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen.exists(), "stage b did not start until a's hook gave up"
    finally:
        daemon.stop()
