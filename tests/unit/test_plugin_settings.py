"""Plugins' own settings: ``[plugin_settings.NAME]`` in the daemon's
configuration, handed to each plugin by ``conveyor_configure``; a plugin
that refuses its settings is taken out, not the daemon."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from conveyor.daemon.config import ConfigError, load_config
from conveyor.daemon.plugins import Plugins
from conveyor.plugin import FILE, REPLICA_ROLLOUT, hookimpl


class Recorder:
    def __init__(self) -> None:
        self.settings: list[Mapping[str, Any]] = []

    @hookimpl
    def conveyor_configure(self, settings: Mapping[str, Any]) -> None:
        self.settings.append(settings)


def test_each_plugin_gets_its_own_settings_read_only() -> None:
    table = {"pager": {"url": "http://127.0.0.1:9/x", "tags": ["a"]}}
    plugins = Plugins(settings=table)
    pager, other = Recorder(), Recorder()
    assert not plugins.register(pager, "pager").error
    assert not plugins.register(other, "other").error
    assert pager.settings == [table["pager"]] and other.settings == [{}]
    with pytest.raises(TypeError):
        pager.settings[0]["url"] = "changed"  # type: ignore[index]
    pager.settings[0]["tags"].append("b")  # a copy: the configuration stays as it was
    assert table["pager"]["tags"] == ["a"]


class Refuses:
    called = False

    @hookimpl
    def conveyor_configure(self, settings: Mapping[str, Any]) -> None:
        raise ValueError("plugin_settings.strict.url: required")

    @hookimpl
    def conveyor_deploy_targets(self) -> list[object]:
        Refuses.called = True
        return []

    @hookimpl
    def conveyor_run_finished(self) -> None:
        Refuses.called = True


def test_a_plugin_that_refuses_its_settings_is_taken_out_and_says_why() -> None:
    plugins = Plugins()
    info = plugins.register(Refuses(), "strict")
    assert info.error == (
        "conveyor_configure raised ValueError: plugin_settings.strict.url: required;"
        " the plugin is not used"
    )
    assert info.hooks == [] and not Refuses.called
    assert plugins.pm.get_plugin("strict") is None
    assert not plugins._implemented("conveyor_run_finished")


def test_an_async_configure_is_refused() -> None:
    class Async:
        @hookimpl
        async def conveyor_configure(self, settings: Mapping[str, Any]) -> None:
            return None

    info = Plugins().register(Async(), "async")
    assert "must not be async def" in info.error


def test_settings_for_a_plugin_that_is_not_loaded_are_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plugins = Plugins(settings={"webhok": {"url": "http://127.0.0.1:9/"}})
    with caplog.at_level(logging.WARNING, logger="conveyor.daemon.plugins"):
        plugins.load_entry_points()
    assert "plugin_settings has settings for 'webhok', which is not a loaded plugin" in caplog.text
    assert "did you mean 'webhook'?" in caplog.text


def test_the_daemons_configuration_holds_plugin_settings(tmp_path: Path) -> None:
    path = tmp_path / "conveyord.toml"
    path.write_text('[plugin_settings.webhook]\nurl = "http://127.0.0.1:9/x"\nattempts = 2\n')
    config = load_config(path=path, environ={"CONVEYOR_HOME": str(tmp_path)})
    assert config.plugin_settings == {"webhook": {"url": "http://127.0.0.1:9/x", "attempts": 2}}
    from_env = load_config(
        environ={
            "CONVEYOR_HOME": str(tmp_path / "other"),
            "CONVEYOR_PLUGIN_SETTINGS": '{"webhook": {"events": "all"}}',
        }
    )
    assert from_env.plugin_settings == {"webhook": {"events": "all"}}
    path.write_text('[plugin_settings]\nwebhook = "http://127.0.0.1:9/x"\n')
    with pytest.raises(ConfigError, match=r"plugin_settings\.webhook: "):
        load_config(path=path, environ={"CONVEYOR_HOME": str(tmp_path)})


def test_configure_comes_before_what_a_plugin_contributes() -> None:
    order: list[str] = []

    class Target:
        name = "later"
        description = ""
        rollout = REPLICA_ROLLOUT
        artifact_kinds = (FILE,)

        def validate(self, options: Mapping[str, Any]) -> list[tuple[str, str]]:
            return []

        async def start(self) -> None: ...
        async def stop(self) -> None: ...
        async def alive(self) -> None: ...
        async def list_replicas(self) -> None: ...

    class Plugin:
        @hookimpl
        def conveyor_configure(self, settings: Mapping[str, Any]) -> None:
            order.append(f"configure {dict(settings)}")

        @hookimpl
        def conveyor_deploy_targets(self) -> list[object]:
            order.append("targets")
            return [Target()]

    plugins = Plugins(settings={"p": {"a": 1}})
    plugins.register(Plugin(), "p")
    assert order == ["configure {'a': 1}", "targets"]
    assert "later" in plugins.deploy_targets
