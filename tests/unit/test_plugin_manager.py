"""The plugin manager in-process: registration through pluggy, refusals,
failure isolation (every row of docs/plugins.md's failure table), and
lifecycle notifications delivered off the runs' path.

Throwaway plugins are registered into a manager that loaded the real
entry points, and unregistered in ``finally`` (as datasette's tests do).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from conveyor.daemon.pipeline import check_pipeline
from conveyor.daemon.plugins import PluginInfo, Plugins
from conveyor.daemon.records import RunStatus, StageStatus
from conveyor.plugin import (
    FILE,
    REPLICA_ROLLOUT,
    DeployTarget,
    Replica,
    ReplicaRequest,
    Run,
    Stage,
    StageContext,
    StageOutcome,
    StageSpec,
    TargetContext,
    hookimpl,
)
from tests.support.plugins import run_record, write_distribution

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def plugins() -> Plugins:
    """A manager with the installed plugins (the built-ins) loaded."""
    manager = Plugins(hook_timeout=5.0)
    manager.load_entry_points()
    return manager


@contextmanager
def registered(plugins: Plugins, plugin: object, name: str) -> Iterator[PluginInfo]:
    info = plugins.register(plugin, name)
    try:
        yield info
    finally:
        plugins.unregister(name)


class Kind:
    """A stage kind that does nothing."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.description = f"the {name} kind"

    def validate(self, spec: StageSpec) -> Iterable[tuple[str, str]]:
        return ()

    async def run(self, ctx: StageContext) -> StageOutcome:
        raise AssertionError("not run in these tests")


class Recorder:
    """Records the lifecycle notifications it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.got = trio.Event()

    @hookimpl
    async def conveyor_run_finished(self, run: Run) -> None:
        self.calls.append(("run_finished", run))
        self.got.set()

    @hookimpl
    def conveyor_stage_finished(self, run: Run, stage: Stage) -> None:
        self.calls.append(("stage_finished", stage))


async def deliver(plugins: Plugins, post: Any, *, until: trio.Event) -> None:
    """Serve the notifier, post, wait for ``until``, then close it."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(plugins.notifier.serve)
            post()
            await until.wait()
            await plugins.notifier.aclose(trio.current_time() + 5)


# -- registration -----------------------------------------------------------------


def test_a_plugin_registers_its_contributions_and_hooks(plugins: Plugins) -> None:
    class Good:
        @hookimpl
        def conveyor_stage_kinds(self) -> list[Kind]:
            return [Kind("good")]

        @hookimpl
        def conveyor_run_finished(self, run: Run) -> None: ...

    with registered(plugins, Good(), "good") as info:
        assert info.error == ""
        assert info.provides == ["stage kind: good"]
        assert info.hooks == ["conveyor_run_finished", "conveyor_stage_kinds"]
        assert plugins.owner_of("good") == "good"
        assert {"run", "lint", "test", "scan"} <= set(plugins.stage_kinds)
    assert "good" not in plugins.stage_kinds and "good" not in plugins.infos


def test_registration_hooks_are_called_once_per_plugin(plugins: Plugins) -> None:
    calls: list[str] = []

    def plugin(name: str) -> object:
        class P:
            @hookimpl
            def conveyor_stage_kinds(self) -> list[Kind]:
                calls.append(name)
                return [Kind(name)]

        return P()

    with registered(plugins, plugin("a"), "a"), registered(plugins, plugin("b"), "b"):
        assert calls == ["a", "b"]
        assert {"a", "b"} <= set(plugins.stage_kinds)


def test_a_wrapper_on_a_registration_hook_runs(plugins: Plugins) -> None:
    class Wrapping:
        @hookimpl(wrapper=True)
        def conveyor_stage_kinds(self) -> Generator[None, list[list[Kind]], list[list[Kind]]]:
            results = yield
            return [*results, [Kind("from-wrapper")]]

        @hookimpl
        def conveyor_executors(self) -> list[object]:
            return []

    with registered(plugins, Wrapping(), "wrapping") as info:
        assert info.error == ""
        assert "from-wrapper" in plugins.stage_kinds


def test_a_misspelled_hook_is_refused_naming_the_plugin_and_the_hook(
    plugins: Plugins, caplog: pytest.LogCaptureFixture
) -> None:
    class Typo:
        @hookimpl
        def conveyor_stage_kinds(self) -> list[Kind]:
            return [Kind("typo")]

        @hookimpl
        def conveyor_stage_finish(self, stage: Stage) -> None: ...

    with registered(plugins, Typo(), "typo") as info:
        assert "unknown hook conveyor_stage_finish" in info.error
        assert "did you mean conveyor_stage_finished?" in info.error
        assert info.hooks == [] and info.provides == []
        assert plugins.pm.get_plugin("typo") is None, "a refused plugin is not registered"
        assert "typo" not in plugins.stage_kinds
        assert [p.name for p in plugins.describe() if p.error] == ["typo"]
    assert "plugin typo: unknown hook conveyor_stage_finish" in caplog.text


def test_an_optional_hook_of_another_version_is_not_refused(plugins: Plugins) -> None:
    class Newer:
        @hookimpl(optionalhook=True)
        def conveyor_artifact_built(self, artifact: object) -> None: ...

    with registered(plugins, Newer(), "newer") as info:
        assert info.error == ""


# -- the failure table of docs/plugins.md, row by row --------------------------------


def test_row_the_module_fails_to_import(
    plugins: Plugins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_distribution(
        tmp_path,
        "conveyor-broken",
        {"broken": "conveyor_broken"},
        {"conveyor_broken": "import does_not_exist\n"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CONVEYOR_PLUGINS", "broken,run")
    manager = Plugins()
    manager.load_entry_points()
    info = manager.infos["broken"]
    assert info.error.startswith("failed to import conveyor_broken: ModuleNotFoundError")
    assert "does_not_exist" in info.error
    assert (info.distribution, info.version) == ("conveyor-broken", "0.1")
    assert "run" in manager.stage_kinds, "everything else loads"


def test_row_pluggy_refuses_it(plugins: Plugins) -> None:
    class BadArgument:
        @hookimpl
        def conveyor_stage_kinds(self) -> list[Kind]:
            return [Kind("never")]

        @hookimpl
        def conveyor_run_finished(self, run: Run, colour: str) -> None: ...

    with registered(plugins, BadArgument(), "bad") as info:
        assert info.error.startswith("failed to register: ")
        assert "colour" in info.error
        assert plugins.pm.get_plugin("bad") is None and "never" not in plugins.stage_kinds


def test_row_a_hook_conveyor_does_not_have(plugins: Plugins) -> None:
    class Unknown:
        @hookimpl
        def conveyor_deploy(self) -> None: ...

    with registered(plugins, Unknown(), "unknown") as info:
        assert info.error.startswith("unknown hook conveyor_deploy")
        assert "not a Conveyor hook (the hooks are: " in info.error
        assert "conveyor_executors, " in info.error
        assert plugins.pm.get_plugin("unknown") is None


async def test_row_a_registration_hook_raises_one_good_one_failing(plugins: Plugins) -> None:
    """The plugin stays registered: its good contribution and its lifecycle
    hooks are used, the failing hook's contribution is left out."""

    class Half:
        def __init__(self) -> None:
            self.finished = trio.Event()

        @hookimpl
        def conveyor_stage_kinds(self) -> list[Kind]:
            return [Kind("half")]

        @hookimpl
        def conveyor_executors(self) -> list[object]:
            raise ValueError("no executors today")

        @hookimpl
        def conveyor_run_finished(self, run: Run) -> None:
            self.finished.set()

    half = Half()
    with registered(plugins, half, "half") as info:
        assert info.error == "conveyor_executors raised ValueError: no executors today"
        assert info.provides == ["stage kind: half"]
        assert "half" in plugins.stage_kinds and plugins.owner_of("half") == "half"
        assert plugins.pm.get_plugin("half") is half
        assert "conveyor_executors" in info.hooks
        await deliver(plugins, lambda: plugins.run_finished(run_record()), until=half.finished)


def test_row_a_registration_hook_returns_something_else(plugins: Plugins) -> None:
    class Wrong:
        @hookimpl
        def conveyor_stage_kinds(self) -> list[object]:
            return [Kind("right"), "lint"]

        @hookimpl
        def conveyor_executors(self) -> object:
            return 42

        @hookimpl
        def conveyor_deploy_targets(self) -> list[object]:
            return [HalfTarget()]

    with registered(plugins, Wrong(), "wrong") as info:
        assert "conveyor_stage_kinds returned 'lint', which is not a stage kind" in info.error
        assert "conveyor_executors returned int, expected a list" in info.error
        assert "which is not a deploy target" in info.error
        assert info.provides == ["stage kind: right"]
        assert "half" not in plugins.deploy_targets


class Target:
    """A replica deploy target that is never called."""

    name = "moon"
    description = "replicas on the moon"
    rollout = REPLICA_ROLLOUT
    artifact_kinds = (FILE,)

    def validate(self, options: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
        return ()

    async def start(self, ctx: TargetContext, request: ReplicaRequest) -> Replica:
        raise AssertionError("not called")

    async def stop(self, ctx: TargetContext, replica: Replica, grace: float) -> None:
        raise AssertionError("not called")

    async def alive(self, ctx: TargetContext, replica: Replica) -> bool:
        raise AssertionError("not called")

    async def list_replicas(self, ctx: TargetContext, environment: str) -> list[Replica]:
        raise AssertionError("not called")


class HalfTarget:
    """Says it rolls replicas, but cannot start one."""

    name = "half"
    description = "half a target"
    rollout = REPLICA_ROLLOUT
    artifact_kinds = (FILE,)

    def validate(self, options: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
        return ()


def test_deploy_targets_are_collected_and_go_with_their_plugin(plugins: Plugins) -> None:
    class Moon:
        @hookimpl
        def conveyor_deploy_targets(self) -> list[DeployTarget]:
            return [Target()]

    with registered(plugins, Moon(), "moon-plugin") as info:
        assert info.error == ""
        assert info.provides == ["deploy target: moon"]
        assert isinstance(plugins.deploy_targets["moon"], Target)
        assert plugins.owner_of_target("moon") == "moon-plugin"
    assert "moon" not in plugins.deploy_targets


def test_row_a_registration_hook_is_async(plugins: Plugins) -> None:
    class Async:
        @hookimpl
        async def conveyor_stage_kinds(self) -> list[Kind]:
            return [Kind("async")]

    with registered(plugins, Async(), "async") as info:
        assert "conveyor_stage_kinds returned an awaitable" in info.error
        assert "async" not in plugins.stage_kinds


def test_row_validate_raises(plugins: Plugins) -> None:
    class Fragile(Kind):
        def validate(self, spec: StageSpec) -> Iterable[tuple[str, str]]:
            raise RuntimeError("validator bug")

    class Provider:
        @hookimpl
        def conveyor_stage_kinds(self) -> list[Kind]:
            return [Fragile("fragile")]

    with registered(plugins, Provider(), "fragile"):
        spec, diagnostics = check_pipeline(
            "name: p\nstages:\n  a:\n    uses: fragile\n",
            "conveyor.yaml",
            stage_kinds={n: k.validate for n, k in plugins.stage_kinds.items()},
            executors=plugins.executors.keys(),
        )
    assert spec is None
    assert [(d.path, d.message) for d in diagnostics] == [
        (
            "stages.a",
            "stage kind 'fragile' failed to validate the stage: RuntimeError('validator bug')",
        )
    ]


async def test_row_a_lifecycle_hook_raises_the_others_still_run(
    plugins: Plugins, caplog: pytest.LogCaptureFixture
) -> None:
    class SyncRaiser:
        @hookimpl
        def conveyor_run_finished(self, run: Run) -> None:
            raise KeyError("sync")

    class AsyncRaiser:
        @hookimpl
        async def conveyor_run_finished(self, run: Run) -> None:
            raise RuntimeError("webhook unreachable")

    recorder = Recorder()
    # the last registered is called first: the recorder comes after both raisers
    with (
        registered(plugins, recorder, "recorder"),
        registered(plugins, SyncRaiser(), "sync"),
        registered(plugins, AsyncRaiser(), "async"),
    ):
        await deliver(plugins, lambda: plugins.run_finished(run_record()), until=recorder.got)
    assert [name for name, _ in recorder.calls] == ["run_finished"]
    assert "plugin async: conveyor_run_finished failed" in caplog.text
    assert "RuntimeError: webhook unreachable" in caplog.text
    assert "plugin sync: conveyor_run_finished failed" in caplog.text


async def test_row_a_lifecycle_hook_hangs_it_is_abandoned(
    plugins: Plugins, caplog: pytest.LogCaptureFixture, autojump_clock: trio.abc.Clock
) -> None:
    class Hung:
        @hookimpl
        async def conveyor_run_finished(self, run: Run) -> None:
            await trio.sleep_forever()

    recorder = Recorder()
    with registered(plugins, recorder, "recorder"), registered(plugins, Hung(), "hung"):
        await deliver(plugins, lambda: plugins.run_finished(run_record()), until=recorder.got)
    assert "plugin hung: conveyor_run_finished took longer than 5s; abandoned" in caplog.text


def test_row_the_notification_queue_is_full(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = Plugins(queue_size=2)
    recorder = Recorder()
    with registered(manager, recorder, "recorder"):
        for _ in range(5):
            manager.run_finished(run_record())
        assert manager.notifier.pending == 2 and manager.notifier.dropped == 3
    assert "dropped conveyor_run_finished for run 0123456789abcdef" in caplog.text
    assert "(3 dropped so far)" in caplog.text


def test_every_row_of_the_failure_table_has_a_test() -> None:
    """Adding a row to docs/plugins.md's failure table needs a test here
    (or, for what only a real daemon shows, in the integration tests)."""
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = text.split("## Failure isolation", 1)[1].split("\n## ", 1)[0]
    rows = [
        line.split("|")[1].strip()
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| What goes wrong")
    ]
    tested = {
        "The module fails to import": test_row_the_module_fails_to_import,
        "pluggy refuses it (a hook with an unknown argument)": test_row_pluggy_refuses_it,
        "It implements a hook Conveyor does not have (a misspelled name)": (
            test_row_a_hook_conveyor_does_not_have
        ),
        "`conveyor_configure` raises (bad settings)": (
            "tests/unit/test_plugin_settings.py::"
            "test_a_plugin_that_refuses_its_settings_is_taken_out_and_says_why"
        ),
        "A registration hook raises": test_row_a_registration_hook_raises_one_good_one_failing,
        "A registration hook returns something else than a list of stage kinds, executors or"
        " deploy targets": (test_row_a_registration_hook_returns_something_else),
        "`validate` raises": test_row_validate_raises,
        "`run` raises an exception": "tests/integration/test_plugin_failures.py",
        "A lifecycle hook raises": test_row_a_lifecycle_hook_raises_the_others_still_run,
        "A lifecycle hook hangs": test_row_a_lifecycle_hook_hangs_it_is_abandoned,
        "Notifications arrive faster than the hooks take them": (
            test_row_the_notification_queue_is_full
        ),
        "The daemon stops while notifications are pending": (
            "test_pending_notifications_get_what_is_left_of_the_grace_period"
        ),
    }
    assert rows == list(tested)


# -- lifecycle notifications ---------------------------------------------------------


async def test_wrappers_of_lifecycle_hooks_run(plugins: Plugins) -> None:
    order: list[str] = []
    done = trio.Event()

    class NewStyle:
        @hookimpl(wrapper=True)
        def conveyor_run_finished(self, run: Run) -> Generator[None, list[object], list[object]]:
            order.append("new: before")
            results = yield
            order.append("new: after")
            return results

        @hookimpl
        def conveyor_run_started(self, run: Run) -> None: ...

    class OldStyle:
        @hookimpl(hookwrapper=True)
        def conveyor_run_finished(self, run: Run) -> Generator[None, Any, None]:
            order.append("old: before")
            yield
            order.append("old: after")
            done.set()

        @hookimpl
        def conveyor_run_started(self, run: Run) -> None: ...

    with registered(plugins, NewStyle(), "new"), registered(plugins, OldStyle(), "old"):
        await deliver(plugins, lambda: plugins.run_finished(run_record()), until=done)
    assert order == ["old: before", "old: after", "new: before", "new: after"]


async def test_awaitables_are_awaited_and_plain_functions_called(plugins: Plugins) -> None:
    got: list[str] = []
    done = trio.Event()

    class Plain:
        @hookimpl
        def conveyor_stage_finished(self, stage: Stage) -> None:
            got.append(f"plain {stage.name}")

    class Awaits:
        @hookimpl
        async def conveyor_stage_finished(self, run: Run, stage: Stage) -> None:
            await trio.lowlevel.checkpoint()
            got.append(f"async {stage.name}")
            done.set()

    record = run_record("build")
    with registered(plugins, Awaits(), "awaits"), registered(plugins, Plain(), "plain"):
        await deliver(plugins, lambda: plugins.stage_finished(record, record.stages[0]), until=done)
    assert got == ["plain build", "async build"]


async def test_hooks_get_frozen_snapshots_taken_when_notified(plugins: Plugins) -> None:
    recorder = Recorder()
    record = run_record("build")
    record.stages[0].status = StageStatus.SUCCEEDED
    with registered(plugins, recorder, "recorder"):
        plugins.stage_finished(record, record.stages[0])
        record.status = RunStatus.SUCCEEDED
        plugins.run_finished(record)
        record.status = RunStatus.FAILED  # later changes are not seen
        record.stages[0].status = StageStatus.FAILED
        await deliver(plugins, lambda: None, until=recorder.got)
    (_, stage), (_, run) = recorder.calls
    assert isinstance(stage, Stage) and stage.status is StageStatus.SUCCEEDED
    assert isinstance(run, Run) and run.status is RunStatus.SUCCEEDED
    assert run.stage("build").status is StageStatus.SUCCEEDED
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.status = RunStatus.FAILED  # type: ignore[misc]


def test_nothing_is_queued_when_no_plugin_implements_the_hook(plugins: Plugins) -> None:
    plugins.run_finished(run_record())
    assert plugins.notifier.pending == 0


async def test_notifications_are_delivered_in_order(plugins: Plugins) -> None:
    recorder = Recorder()
    record = run_record("a", "b")
    with registered(plugins, recorder, "recorder"):
        plugins.stage_finished(record, record.stages[0])
        plugins.stage_finished(record, record.stages[1])
        plugins.run_finished(record)
        await deliver(plugins, lambda: None, until=recorder.got)
    assert [
        (name, value.name if name == "stage_finished" else "") for name, value in recorder.calls
    ] == [("stage_finished", "a"), ("stage_finished", "b"), ("run_finished", "")]


async def test_pending_notifications_get_what_is_left_of_the_grace_period(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.abc.Clock
) -> None:
    manager = Plugins(hook_timeout=1000)
    started = trio.Event()

    class Hung:
        @hookimpl
        async def conveyor_run_finished(self, run: Run) -> None:
            started.set()
            await trio.sleep_forever()

    with registered(manager, Hung(), "hung"):
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.notifier.serve)
            for _ in range(3):
                manager.run_finished(run_record())
            await started.wait()
            deadline = trio.current_time() + 2
            await manager.notifier.aclose(deadline)
            assert trio.current_time() == pytest.approx(deadline)
        manager.run_finished(run_record())  # after the close: dropped too
    assert manager.notifier.dropped == 4 and manager.notifier.delivered == 0
    assert "3 notification(s) not delivered: the shutdown grace period ended" in caplog.text
    assert "for run 0123456789abcdef: the daemon is shutting down (4 dropped" in caplog.text


@pytest.fixture(autouse=True)
def _capture_plugin_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="conveyor.daemon")


def test_describe_lists_plugins_by_name(plugins: Plugins) -> None:
    names = [info.name for info in plugins.describe()]
    assert names == sorted(names) and {"local_executor", "run"} <= set(names)
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", plugins.infos["run"].version)
