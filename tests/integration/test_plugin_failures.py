"""A plugin that breaks fails only what it touched; the daemon keeps serving."""

from __future__ import annotations

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
