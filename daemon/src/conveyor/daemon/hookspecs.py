"""Hook specifications: the contract between Conveyor and its plugins.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose
names match the specs below, registered under the ``conveyor`` entry-point
group. Built-in plugins are registered exactly the same way.

Two families:

* **Registration hooks** say what a plugin contributes (stage kinds,
  executors). Each is called once per plugin when the daemon loads plugins;
  a plugin that raises there is reported by ``ListPlugins`` and its
  contribution is left out — the other plugins load.
* **Lifecycle hooks** observe runs. They may be plain functions or return an
  awaitable, which the daemon awaits. Every implementation is called, in
  turn; one that raises is logged with its plugin's name, one that takes
  longer than ``hook_timeout`` seconds is abandoned, and the rest still run.
  They run inside the daemon's trio loop: do not block — use
  ``trio.to_thread.run_sync`` for blocking work.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from conveyor.daemon.executors.base import Executor
    from conveyor.daemon.records import RunRecord, StageRecord
    from conveyor.daemon.stages import StageKind

PROJECT = "conveyor"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -------------------------------------------------------------------------
# Registration hooks
# -------------------------------------------------------------------------


@hookspec
def conveyor_stage_kinds() -> list[StageKind]:
    """Return the stage kinds this plugin provides.

    Called once when plugins load. Each item follows
    :class:`conveyor.daemon.stages.StageKind`: a ``name`` (what ``uses:``
    names in a pipeline file), a ``description``, ``validate(spec)`` to check
    a stage's parameters at load time, and ``async run(ctx)`` to do the work.

    If two plugins provide the same name, the one registered last wins and
    the clash is reported in the daemon log.
    """


@hookspec
def conveyor_executors() -> list[Executor]:
    """Return the executors this plugin provides.

    Called once when plugins load. Each item follows
    :class:`conveyor.daemon.executors.base.Executor`: a ``name`` (what
    ``executor:`` names in a pipeline file) and ``async run(request, log)``
    which runs one process and returns its exit code.
    """


# -------------------------------------------------------------------------
# Lifecycle hooks
# -------------------------------------------------------------------------


@hookspec
def conveyor_run_started(run: RunRecord) -> Awaitable[None] | None:
    """Called when a run leaves the queue and starts (status ``running``).

    :param run: the run, with its stages (all ``pending``).
    May return an awaitable; its result is ignored.
    """


@hookspec
def conveyor_stage_finished(run: RunRecord, stage: StageRecord) -> Awaitable[None] | None:
    """Called when a stage reaches a final status (succeeded, failed,
    cancelled, timed out or skipped), after it is stored.

    :param run: the run as it is at that moment.
    :param stage: the finished stage, with its status, exit code, reason and
        timings.
    May return an awaitable; its result is ignored.
    """


@hookspec
def conveyor_run_finished(run: RunRecord) -> Awaitable[None] | None:
    """Called when a run reaches a final status, after it is stored —
    including a run cancelled while queued and, at start-up, runs that a
    stopped daemon left in flight (marked ``interrupted``).

    :param run: the finished run with all its stages.
    May return an awaitable; its result is ignored.
    """
