"""Hook specifications: the contract between Conveyor and its plugins.

A plugin is a module (or object) with functions marked ``@hookimpl``
(``from conveyor.plugin import hookimpl``) whose names match the specs below,
registered under the ``conveyor`` entry-point group. Built-in plugins are
registered exactly the same way. A marked function whose name is not one of
these specs makes the plugin fail to load (a misspelled hook is an error, not
a hook that is silently never called).

Three families:

* **Configuration**: ``conveyor_configure`` hands each plugin its own
  settings (the ``[plugin_settings.NAME]`` table of the daemon's
  configuration) when it is registered, before anything else of it is used.
* **Registration hooks** say what a plugin contributes (stage kinds,
  executors, deploy targets). Each is called once per plugin when the daemon loads plugins;
  a plugin that raises there is reported by ``ListPlugins`` and that
  contribution is left out — the rest of the plugin, and the other plugins,
  load.
* **Lifecycle hooks** observe runs and deployments. They are called off the runs' path: the
  daemon queues a notification (with frozen :class:`~conveyor.plugin.Run`
  and :class:`~conveyor.plugin.Stage` snapshots) and goes on; one task
  delivers notifications in order. Implementations may be plain functions or
  return an awaitable, which the daemon awaits. Each plugin's
  implementations are called in turn, through pluggy (wrappers included);
  one that raises is logged with its plugin's name, one that takes longer
  than ``hook_timeout`` seconds is abandoned, and the other plugins are still
  called. They run inside the daemon's trio loop: do not block — use
  ``trio.to_thread.run_sync`` for blocking work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from conveyor.daemon.artifacts.model import Artifact
    from conveyor.daemon.delivery.target import DeployTarget
    from conveyor.daemon.executors.base import Executor
    from conveyor.daemon.stages import StageKind
    from conveyor.daemon.views import Deployment, Run, Stage

PROJECT = "conveyor"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Marks a hook implementation; plugins import it from :mod:`conveyor.plugin`.
hookimpl = pluggy.HookimplMarker(PROJECT)


# -------------------------------------------------------------------------
# Configuration
# -------------------------------------------------------------------------


@hookspec
def conveyor_configure(settings: Mapping[str, Any]) -> None:
    """Take the plugin's own settings.

    Called once per plugin when it is registered (at start-up, in a worker
    thread, so reading a file is fine), before its registration hooks and
    before any lifecycle hook.

    :param settings: the ``[plugin_settings.NAME]`` table of the daemon's
        configuration, ``NAME`` being the plugin's entry-point name (JSON in
        ``CONVEYOR_PLUGIN_SETTINGS`` and ``--plugin-settings``), as plain
        TOML values (strings, numbers, booleans, lists, tables), read-only;
        empty when there is none. Check them here (a
        :class:`~conveyor.plugin.Parameters` model does it well).

    Raise to refuse them: the plugin is then taken out (none of its hooks
    is called and nothing it contributes exists) and ``conveyor plugins``
    shows ``conveyor_configure raised ...`` as its error; the daemon and
    the other plugins go on. Not ``async def``.
    """


# -------------------------------------------------------------------------
# Registration hooks
# -------------------------------------------------------------------------


@hookspec
def conveyor_stage_kinds() -> list[StageKind]:
    """Return the stage kinds this plugin provides.

    Called once per plugin when plugins load, in a worker thread. Each item
    follows :class:`conveyor.plugin.StageKind`: a ``name`` (what ``uses:``
    names in a pipeline file), a ``description``, ``validate(spec)`` to check
    a stage's parameters at load time, and ``async run(ctx)`` to do the work.

    If two plugins provide the same name, the one registered last wins and
    the clash is reported in the daemon log.
    """


@hookspec
def conveyor_executors() -> list[Executor]:
    """Return the executors this plugin provides.

    Called once per plugin when plugins load, in a worker thread. Each item
    follows :class:`conveyor.plugin.Executor`: a ``name`` (what
    ``executor:`` names in a pipeline file) and ``async run(request,
    output)``, which runs one process and returns its exit code.
    """


@hookspec
def conveyor_deploy_targets() -> list[DeployTarget]:
    """Return the deploy targets this plugin provides.

    Called once per plugin when plugins load, in a worker thread. Each item
    follows :class:`conveyor.plugin.DeployTarget`: a ``name`` (what an
    environment's ``target:`` names), a ``description``, a ``rollout``
    (``"replica"``: it follows :class:`conveyor.plugin.ReplicaTarget`, whose
    replicas the daemon rolls one at a time behind the environment's front
    proxy; ``"service"``: it follows :class:`conveyor.plugin.ServiceTarget`
    and updates a whole service itself), the ``artifact_kinds`` it runs and
    ``validate(options)`` to check an environment's ``with:`` options.

    If two plugins provide the same name, the one registered last wins and
    the clash is reported in the daemon log.
    """


# -------------------------------------------------------------------------
# Lifecycle hooks
# -------------------------------------------------------------------------


@hookspec
def conveyor_run_started(run: Run) -> Awaitable[None] | None:
    """Called after a run leaves the queue and starts (status ``running``).

    :param run: the run, with its stages (all ``pending``).
    May return an awaitable; its result is ignored.
    """


@hookspec
def conveyor_stage_finished(run: Run, stage: Stage) -> Awaitable[None] | None:
    """Called after a stage reaches a final status (succeeded, failed,
    cancelled, timed out, skipped or interrupted) and it is stored.

    :param run: the run as it was at that moment.
    :param stage: the finished stage, with its status, exit code, reason and
        timings.
    May return an awaitable; its result is ignored.
    """


@hookspec
def conveyor_run_finished(run: Run) -> Awaitable[None] | None:
    """Called after a run reaches a final status and it is stored —
    including a run cancelled while queued and, at start-up, runs that a
    stopped daemon left in flight (marked ``interrupted``).

    :param run: the finished run with all its stages.
    May return an awaitable; its result is ignored.
    """


@hookspec
def conveyor_artifact_produced(run: Run, artifact: Artifact) -> Awaitable[None] | None:
    """Called after a stage's artifact is recorded: a new digest, or a known
    one a later stage updated (pushed to a registry). Not called for a cache
    hit, which reuses an artifact already announced.

    :param run: the producing run as it is at that moment.
    :param artifact: the artifact with its digest, version, tags, commit,
        stage timings and signed provenance.
    May return an awaitable; its result is ignored.
    """


@hookspec
def conveyor_deployment_finished(deployment: Deployment) -> Awaitable[None] | None:
    """Called after a deployment reaches a final status and it is stored:
    ``healthy``, ``failed``, ``rolled_back`` (the previous version was
    restored, by a ``restore`` deployment reported on its own),
    ``rejected``, ``expired`` or ``interrupted``.

    :param deployment: the finished deployment (frozen): environment,
        status and reason, the artifact, the deployer, the previous
        deployment, the commits since it, the configuration hash.
    May return an awaitable; its result is ignored.
    """
