"""The plugin manager: loads plugins from the ``conveyor`` entry-point group
(built-in ones included), collects what they contribute and calls lifecycle
hooks without letting a failing plugin take the daemon down."""

from __future__ import annotations

import inspect
import logging
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy
import trio

from conveyor.daemon import hookspecs
from conveyor.daemon.executors.base import Executor
from conveyor.daemon.stages import StageKind

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "conveyor"
#: Comma-separated entry-point names; when set, only these plugins load.
ALLOW_ENV = "CONVEYOR_PLUGINS"


@dataclass
class PluginInfo:
    name: str
    distribution: str = ""
    version: str = ""
    hooks: list[str] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)
    error: str = ""


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


class Plugins:
    """Owns the pluggy manager and what the plugins contributed."""

    def __init__(self, *, hook_timeout: float = 30.0) -> None:
        self.hook_timeout = hook_timeout
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.stage_kinds: dict[str, StageKind] = {}
        self.executors: dict[str, Executor] = {}
        #: "kind" or "executor:name" -> the plugin that provided it
        self._owner: dict[str, str] = {}

    def load_entry_points(self) -> None:
        """Import and register every plugin of the entry-point group.

        A plugin that fails to import is recorded with its error (see
        :meth:`describe`) and skipped.
        """
        allow = {n.strip() for n in os.environ.get(ALLOW_ENV, "").split(",") if n.strip()}
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if allow and ep.name not in allow:
                continue
            dist = ep.dist
            info = PluginInfo(
                name=ep.name,
                distribution=dist.name if dist else "",
                version=dist.version if dist else "",
            )
            self.infos[ep.name] = info
            try:
                plugin = ep.load()
            except Exception as exc:
                info.error = f"failed to import {ep.value}: {_describe(exc)}"
                log.error("plugin %s: %s", ep.name, info.error)
                continue
            self.register(plugin, ep.name, info)

    def register(self, plugin: object, name: str, info: PluginInfo | None = None) -> None:
        """Register one plugin object and collect its contributions."""
        info = info or self.infos.setdefault(name, PluginInfo(name=name))
        self.infos[name] = info
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            info.error = f"failed to register: {_describe(exc)}"
            log.error("plugin %s: %s", name, info.error)
            return
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
        self._collect(name, info)
        if info.error:
            self._disable(name, info)

    def _disable(self, name: str, info: PluginInfo) -> None:
        """Take a plugin whose registration failed out entirely: none of its
        hooks are called and nothing it contributed is used."""
        self.pm.unregister(name=name)
        self.stage_kinds = {k: v for k, v in self.stage_kinds.items() if self._owner.get(k) != name}
        self.executors = {
            k: v for k, v in self.executors.items() if self._owner.get(f"executor:{k}") != name
        }
        info.provides = []

    def _collect(self, name: str, info: PluginInfo) -> None:
        plugin = self.pm.get_plugin(name)
        for impl in self.pm.hook.conveyor_stage_kinds.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            for kind in self._call_registration(info, impl.function) or []:
                if kind.name in self.stage_kinds:
                    log.warning("stage kind %r from %s replaces an earlier one", kind.name, name)
                self.stage_kinds[kind.name] = kind
                self._owner[kind.name] = name
                info.provides.append(f"stage kind: {kind.name}")
        for impl in self.pm.hook.conveyor_executors.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            for executor in self._call_registration(info, impl.function) or []:
                if executor.name in self.executors:
                    log.warning("executor %r from %s replaces an earlier one", executor.name, name)
                self.executors[executor.name] = executor
                self._owner[f"executor:{executor.name}"] = name
                info.provides.append(f"executor: {executor.name}")

    def _call_registration(self, info: PluginInfo, fn: Callable[[], Any]) -> list[Any] | None:
        try:
            return list(fn() or [])
        except Exception as exc:
            info.error = f"{fn.__name__} raised {_describe(exc)}"
            log.error("plugin %s: %s", info.name, info.error)
            return None

    def owner_of(self, stage_kind: str) -> str:
        """The name of the plugin that provided a stage kind."""
        return self._owner.get(stage_kind, "?")

    def describe(self) -> list[PluginInfo]:
        return [self.infos[name] for name in sorted(self.infos)]

    async def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation of a lifecycle hook, awaiting awaitables.

        A failing implementation is logged with its plugin's name, one that
        takes longer than :attr:`hook_timeout` seconds is abandoned; the others
        still run.
        """
        timeout = self.hook_timeout
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            with trio.move_on_after(timeout) as scope:
                try:
                    result = impl.function(**{a: kwargs[a] for a in impl.argnames})
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("plugin %s: %s failed", impl.plugin_name, hook_name)
            if scope.cancelled_caught:
                log.error(
                    "plugin %s: %s took longer than %gs; abandoned",
                    impl.plugin_name,
                    hook_name,
                    timeout,
                )
