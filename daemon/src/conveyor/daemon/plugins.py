"""The plugin manager: loads plugins from the ``conveyor`` entry-point group
(built-in ones included), collects what they contribute and notifies them of
runs, without letting a failing plugin take the daemon down.

Every hook is called through pluggy, one plugin at a time (a subset hook
caller holding only that plugin's implementations, wrappers included), so
one plugin's exception or hang is that plugin's alone. What goes wrong, and
what it costs the plugin, is the failure table of docs/plugins.md.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import logging
import os
import traceback
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import MappingProxyType
from typing import Any

import pluggy
import trio

from conveyor.daemon import hookspecs
from conveyor.daemon.artifacts.model import Artifact
from conveyor.daemon.delivery.records import DeploymentRecord
from conveyor.daemon.delivery.target import REPLICA_ROLLOUT, SERVICE_ROLLOUT, DeployTarget
from conveyor.daemon.executors.base import Executor
from conveyor.daemon.notifier import QUEUE_SIZE, Notification, Notifier
from conveyor.daemon.records import RunRecord, StageRecord
from conveyor.daemon.stages import StageKind
from conveyor.daemon.views import deployment_view, run_view, stage_view

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

    def add_error(self, error: str) -> None:
        """Record a problem (several are joined with ``; ``) and log it."""
        self.error = f"{self.error}; {error}" if self.error else error
        log.error("plugin %s: %s", self.name, error)


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _spec_names() -> list[str]:
    marker = f"{hookspecs.PROJECT}_spec"
    return sorted(
        name for name, obj in vars(hookspecs).items() if getattr(obj, marker, None) is not None
    )


def _is_stage_kind(item: object) -> bool:
    return (
        isinstance(getattr(item, "name", None), str)
        and callable(getattr(item, "validate", None))
        and callable(getattr(item, "run", None))
    )


def _is_executor(item: object) -> bool:
    return isinstance(getattr(item, "name", None), str) and callable(getattr(item, "run", None))


#: The methods a deploy target of each rollout must have.
_TARGET_METHODS = {
    REPLICA_ROLLOUT: ("validate", "start", "stop", "alive", "list_replicas"),
    SERVICE_ROLLOUT: ("validate", "update", "replicas"),
}


def _is_deploy_target(item: object) -> bool:
    rollout = getattr(item, "rollout", None)
    methods = _TARGET_METHODS.get(rollout, ()) if isinstance(rollout, str) else ()
    return (
        isinstance(getattr(item, "name", None), str)
        and bool(methods)
        and all(callable(getattr(item, method, None)) for method in methods)
        and isinstance(getattr(item, "artifact_kinds", None), tuple | list)
    )


class Plugins:
    """Owns the pluggy manager, what the plugins contributed, and the
    :class:`Notifier` that delivers lifecycle hooks."""

    def __init__(
        self,
        *,
        hook_timeout: float = 30.0,
        queue_size: int = QUEUE_SIZE,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.hook_timeout = hook_timeout
        #: Each plugin's own settings, by plugin name (``plugin_settings``).
        self.settings: Mapping[str, Mapping[str, Any]] = settings or {}
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.stage_kinds: dict[str, StageKind] = {}
        self.executors: dict[str, Executor] = {}
        self.deploy_targets: dict[str, DeployTarget] = {}
        #: "kind", "executor:name" or "target:name" -> the plugin that provided it
        self._owner: dict[str, str] = {}
        self.notifier = Notifier(self._deliver, capacity=queue_size)

    # -- loading -------------------------------------------------------------

    def load_entry_points(self) -> None:
        """Import and register every plugin of the entry-point group.

        Blocking (imports modules and calls registration hooks): run it in a
        worker thread. A plugin that fails to import is recorded with its
        error (see :meth:`describe`) and skipped.
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
                info.add_error(f"failed to import {ep.value}: {_describe(exc)}")
                continue
            self.register(plugin, ep.name, info)
        for name in sorted(set(self.settings) - set(self.infos)):
            close = difflib.get_close_matches(name, list(self.infos), n=1)
            log.warning(
                "plugin_settings has settings for %r, which is not a loaded plugin%s",
                name,
                f" (did you mean {close[0]!r}?)" if close else "",
            )

    def register(self, plugin: object, name: str, info: PluginInfo | None = None) -> PluginInfo:
        """Register one plugin object and collect its contributions.

        A plugin pluggy refuses (a hook with an unknown argument) or that
        implements a hook Conveyor does not have is recorded with the error
        and not registered; a registration hook that raises leaves that
        contribution out, and the rest of the plugin is used.
        """
        info = info or PluginInfo(name=name)
        self.infos[name] = info
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            info.add_error(f"failed to register: {_describe(exc)}")
            return info
        unknown = self._unknown_hooks(plugin)
        if unknown:
            self.pm.unregister(plugin)
            info.add_error(unknown)
            return info
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
        if not self._configure(plugin, name, info):
            self.pm.unregister(plugin)
            info.hooks = []
            return info
        for kind in self._registered(plugin, info, "conveyor_stage_kinds", _is_stage_kind):
            if kind.name in self.stage_kinds:
                log.warning("stage kind %r from %s replaces an earlier one", kind.name, name)
            self.stage_kinds[kind.name] = kind
            self._owner[kind.name] = name
            info.provides.append(f"stage kind: {kind.name}")
        for executor in self._registered(plugin, info, "conveyor_executors", _is_executor):
            if executor.name in self.executors:
                log.warning("executor %r from %s replaces an earlier one", executor.name, name)
            self.executors[executor.name] = executor
            self._owner[f"executor:{executor.name}"] = name
            info.provides.append(f"executor: {executor.name}")
        for target in self._registered(plugin, info, "conveyor_deploy_targets", _is_deploy_target):
            if target.name in self.deploy_targets:
                log.warning("deploy target %r from %s replaces an earlier one", target.name, name)
            self.deploy_targets[target.name] = target
            self._owner[f"target:{target.name}"] = name
            info.provides.append(f"deploy target: {target.name}")
        return info

    def unregister(self, name: str) -> None:
        """Take a plugin out: its hooks are no longer called and what it
        contributed is gone (a clash it won does not bring back the loser)."""
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        self.infos.pop(name, None)
        for key in [k for k, owner in self._owner.items() if owner == name]:
            del self._owner[key]
            if key.startswith("executor:"):
                self.executors.pop(key.removeprefix("executor:"), None)
            elif key.startswith("target:"):
                self.deploy_targets.pop(key.removeprefix("target:"), None)
            else:
                self.stage_kinds.pop(key, None)

    def _unknown_hooks(self, plugin: object) -> str:
        """Why the newly registered ``plugin`` implements hooks that do not
        exist ("" when it does not), found with pluggy's ``check_pending``
        as pytest does."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError:
            specs = _spec_names()
            problems = []
            for caller in self.pm.get_hookcallers(plugin) or []:
                if caller.has_spec() or all(
                    impl.optionalhook for impl in caller.get_hookimpls() if impl.plugin is plugin
                ):
                    continue
                close = difflib.get_close_matches(caller.name, specs, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]}?)" if close else ""
                problems.append(f"{caller.name}{hint}")
            if problems:
                return (
                    f"unknown hook {', '.join(problems)}: not a Conveyor hook"
                    f" (the hooks are: {', '.join(specs)})"
                )
        return ""

    def _configure(self, plugin: object, name: str, info: PluginInfo) -> bool:
        """Hand ``plugin`` its settings (``conveyor_configure``); False, with
        the error recorded, when it refuses them."""
        caller: pluggy.HookCaller = self.pm.hook.conveyor_configure
        if not any(impl.plugin is plugin for impl in caller.get_hookimpls()):
            return True
        settings = MappingProxyType(copy.deepcopy(dict(self.settings.get(name, {}))))
        try:
            results = self._only(plugin, "conveyor_configure")(settings=settings)
        except Exception as exc:
            info.add_error(f"conveyor_configure raised {_describe(exc)}; the plugin is not used")
            return False
        for result in results:
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                info.add_error(
                    "conveyor_configure returned an awaitable (it must not be async def);"
                    " the plugin is not used"
                )
                return False
        return True

    def _only(self, plugin: object, hook_name: str) -> pluggy.HookCaller:
        """A caller of ``hook_name`` with only ``plugin``'s implementations."""
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        return self.pm.subset_hook_caller(hook_name, remove_plugins=others)

    def _registered(
        self,
        plugin: object,
        info: PluginInfo,
        hook_name: str,
        looks_right: Callable[[object], bool],
    ) -> list[Any]:
        """What ``plugin``'s implementation of a registration hook returns:
        its items that look right; nothing when it raises or returns
        something else than a list (the error is recorded)."""
        caller: pluggy.HookCaller = getattr(self.pm.hook, hook_name)
        if not any(impl.plugin is plugin for impl in caller.get_hookimpls()):
            return []
        try:
            results = self._only(plugin, hook_name)()
        except Exception as exc:
            info.add_error(f"{hook_name} raised {_describe(exc)}")
            return []
        items: list[Any] = []
        what = {
            "conveyor_stage_kinds": "stage kind",
            "conveyor_executors": "executor",
            "conveyor_deploy_targets": "deploy target",
        }[hook_name]
        for result in results:
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                info.add_error(
                    f"{hook_name} returned an awaitable; registration hooks return"
                    " their list directly (not async def)"
                )
                continue
            if isinstance(result, str | bytes) or not isinstance(result, Iterable):
                info.add_error(f"{hook_name} returned {type(result).__name__}, expected a list")
                continue
            for item in result:
                if looks_right(item):
                    items.append(item)
                else:
                    info.add_error(f"{hook_name} returned {item!r}, which is not a {what}")
        return items

    # -- what plugins provide --------------------------------------------------

    def owner_of(self, stage_kind: str) -> str:
        """The name of the plugin that provided a stage kind."""
        return self._owner.get(stage_kind, "?")

    def owner_of_target(self, target: str) -> str:
        """The name of the plugin that provided a deploy target."""
        return self._owner.get(f"target:{target}", "?")

    def describe(self) -> list[PluginInfo]:
        return [self.infos[name] for name in sorted(self.infos)]

    # -- executors' clean-up ----------------------------------------------------

    async def cleanup_executors(self, daemon_id: str, live_runs: Collection[str] = ()) -> int:
        """Let every executor with a ``cleanup`` method remove what it made
        for this daemon's runs that are not in ``live_runs`` (containers,
        services, volumes of runs a killed daemon left in flight); returns
        how many things they removed.

        Each executor gets at most ``hook_timeout`` seconds; one that raises
        or takes longer is logged and skipped, never fatal.
        """
        removed = 0
        for name, executor in sorted(self.executors.items()):
            cleanup = getattr(executor, "cleanup", None)
            if not callable(cleanup):
                continue
            owner = self._owner.get(f"executor:{name}", "?")
            with trio.move_on_after(self.hook_timeout) as scope:
                try:
                    count = await cleanup(daemon_id, frozenset(live_runs))
                except Exception as exc:
                    log.warning(
                        "executor %r (plugin %s) failed to clean up: %s",
                        name,
                        owner,
                        _describe(exc),
                    )
                    continue
            if scope.cancelled_caught:
                log.warning(
                    "executor %r (plugin %s) did not clean up within %g s",
                    name,
                    owner,
                    self.hook_timeout,
                )
                continue
            if isinstance(count, int) and count:
                log.warning(
                    "executor %r removed %d thing(s) left behind by interrupted runs", name, count
                )
                removed += count
        return removed

    # -- lifecycle notifications ----------------------------------------------

    def run_started(self, run: RunRecord) -> None:
        """Notify ``conveyor_run_started`` (queued; never blocks)."""
        self._post("conveyor_run_started", f"run {run.id}", lambda: {"run": run_view(run)})

    def stage_finished(self, run: RunRecord, stage: StageRecord) -> None:
        """Notify ``conveyor_stage_finished`` (queued; never blocks)."""
        self._post(
            "conveyor_stage_finished",
            f"run {run.id} stage {stage.name}",
            lambda: {"run": run_view(run), "stage": stage_view(stage)},
        )

    def run_finished(self, run: RunRecord) -> None:
        """Notify ``conveyor_run_finished`` (queued; never blocks)."""
        self._post("conveyor_run_finished", f"run {run.id}", lambda: {"run": run_view(run)})

    def artifact_produced(self, run: RunRecord, artifact: Artifact) -> None:
        """Notify ``conveyor_artifact_produced`` (queued; never blocks).
        ``artifact`` is already a frozen snapshot."""
        self._post(
            "conveyor_artifact_produced",
            f"run {run.id} artifact {artifact.digest}",
            lambda: {"run": run_view(run), "artifact": artifact},
        )

    def deployment_finished(self, deployment: DeploymentRecord) -> None:
        """Notify ``conveyor_deployment_finished`` (queued; never blocks)."""
        self._post(
            "conveyor_deployment_finished",
            f"deployment {deployment.id} ({deployment.environment})",
            lambda: {"deployment": deployment_view(deployment)},
        )

    def _post(self, hook_name: str, about: str, arguments: Callable[[], dict[str, Any]]) -> None:
        """Queue a notification with frozen views of the records as they are
        now; nothing (not even the views) when no plugin implements the hook."""
        if self._implemented(hook_name):
            self.notifier.post(Notification(hook_name, arguments(), about))

    def _implemented(self, hook_name: str) -> bool:
        caller: pluggy.HookCaller = getattr(self.pm.hook, hook_name)
        return bool(caller.get_hookimpls())

    async def _deliver(self, note: Notification) -> None:
        """Call every plugin's implementations of a lifecycle hook, one
        plugin at a time, in pluggy's order (last registered first).

        A failing plugin is logged with its name; one that takes longer than
        :attr:`hook_timeout` seconds is abandoned; the others are still called.
        """
        caller: pluggy.HookCaller = getattr(self.pm.hook, note.hook)
        names: dict[str, None] = {}
        for impl in reversed(caller.get_hookimpls()):
            names.setdefault(impl.plugin_name)
        for name in names:
            plugin = self.pm.get_plugin(name)
            if plugin is not None:
                await self._call_plugin(plugin, name, note)

    async def _call_plugin(self, plugin: object, name: str, note: Notification) -> None:
        timeout = self.hook_timeout
        results: list[Any] = []
        with trio.move_on_after(timeout) as scope:
            try:
                results = list(self._only(plugin, note.hook)(**note.kwargs))
                for index, result in enumerate(results):
                    if inspect.isawaitable(result):
                        results[index] = None
                        await result
            except Exception:
                log.exception("plugin %s: %s failed (%s)", name, note.hook, note.about)
            finally:
                for result in results:  # not awaited: failed or abandoned
                    if inspect.iscoroutine(result):
                        result.close()
        if scope.cancelled_caught:
            log.error(
                "plugin %s: %s took longer than %gs; abandoned (%s)",
                name,
                note.hook,
                timeout,
                note.about,
            )
