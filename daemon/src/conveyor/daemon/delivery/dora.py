"""The four DORA figures of an environment, from its deployment history.

Computed over a window ``[end - window, end]`` from the deployments store
(docs/delivery.md, "DORA figures", has the same definitions for users):

* a **change** is a deployment of kind ``deploy`` or ``promote`` that
  finished in the window as ``healthy``, ``failed`` or ``rolled_back``.
  Rollbacks and automatic restores are remediations, not changes;
  interrupted, rejected and expired deployments never went out as a whole;
* a change **failed** when it ended ``failed`` or ``rolled_back``, or when
  it became healthy and a manual rollback later went back from it (a
  rollback whose ``previous_id`` is the change, unless the rollback was
  rejected, expired or still waits for approval);
* **deployment frequency**: the changes that became healthy, and that
  number per day of the window;
* **lead time for changes**: for each change that became healthy, its
  ``healthy_at`` minus the committer time of its commit (never below 0);
  the median and the 90th percentile;
* **change failure rate**: failed changes / changes (none when there was
  no change);
* **time to restore**: for each failed change, from its start
  (``started_at``, else ``created_at``) to the moment the first later
  deployment of the environment became healthy (``healthy_at``: the
  automatic restore, a manual rollback, or a fix deployed forward); the
  median and the 90th percentile. A failed change that nothing healthy
  followed yet is counted as not restored.

Percentiles interpolate linearly between the two nearest ranks (numpy's
default, Python's ``statistics.quantiles(method="inclusive")``): the
median of 1, 2, 3, 10 is 2.5 and its 90th percentile is 7.9.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from conveyor.daemon.delivery.records import DeploymentKind, DeploymentRecord, DeploymentStatus
from conveyor.daemon.store.deployments import DeploymentStore

S = DeploymentStatus
DAY = 86400.0

#: Kinds of deployments that are changes.
CHANGE_KINDS = frozenset({DeploymentKind.DEPLOY, DeploymentKind.PROMOTE})
#: Final statuses of a change that went out (or tried to).
CHANGE_OUTCOMES = frozenset({S.HEALTHY, S.FAILED, S.ROLLED_BACK})
#: A manual rollback in one of these never went back from anything.
_NOT_ROLLED_BACK = frozenset({S.PENDING_APPROVAL, S.REJECTED, S.EXPIRED})


def quantile(values: Iterable[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values``, interpolating linearly
    between the two nearest ranks; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class DoraFigures:
    """The DORA figures of one environment over one window (see the module
    docstring for the definitions). Durations are seconds."""

    environment: str
    #: Unix seconds.
    window_start: float
    window_end: float
    #: Changes that became healthy (deployment frequency).
    deployments: int
    #: Changes that finished in the window, and those that failed.
    changes: int
    failed_changes: int
    #: Lead time for changes: how many, their median and 90th percentile.
    lead_time_samples: int
    lead_time_median: float | None
    lead_time_p90: float | None
    #: Time to restore: failed changes restored, their median and 90th
    #: percentile; failed changes nothing healthy followed yet.
    restored: int
    time_to_restore_median: float | None
    time_to_restore_p90: float | None
    unrestored: int

    @property
    def window(self) -> float:
        return self.window_end - self.window_start

    @property
    def deployments_per_day(self) -> float:
        return self.deployments / (self.window / DAY) if self.window > 0 else 0.0

    @property
    def change_failure_rate(self) -> float | None:
        """Failed changes / changes; None when there was no change."""
        return self.failed_changes / self.changes if self.changes else None


def figures(
    environment: str, records: Sequence[DeploymentRecord], start: float, end: float
) -> DoraFigures:
    """The figures of ``environment`` over ``[start, end]`` from its
    deployments ``records``: every deployment of the environment from the
    oldest one that finished in the window on (more do no harm)."""
    records = sorted((r for r in records if r.environment == environment), key=lambda r: r.id)
    rolled_back_from = {
        r.previous_id
        for r in records
        if r.kind is DeploymentKind.ROLLBACK and r.previous_id and r.status not in _NOT_ROLLED_BACK
    }
    changes = [
        r
        for r in records
        if r.kind in CHANGE_KINDS
        and r.status in CHANGE_OUTCOMES
        and r.finished_at is not None
        and start <= r.finished_at <= end
    ]
    healthy = [r for r in changes if r.status is S.HEALTHY]
    failed = [r for r in changes if r.status is not S.HEALTHY or r.id in rolled_back_from]
    lead_times = [
        max(0.0, r.healthy_at - r.commit_time)
        for r in healthy
        if r.healthy_at is not None and r.commit_time is not None
    ]
    restore_times: list[float] = []
    for change in failed:
        restored_at = min(
            (
                later.healthy_at
                for later in records
                if later.id > change.id
                and later.status is S.HEALTHY
                and later.healthy_at is not None
            ),
            default=None,
        )
        if restored_at is not None:
            began = change.started_at if change.started_at is not None else change.created_at
            restore_times.append(max(0.0, restored_at - began))
    return DoraFigures(
        environment=environment,
        window_start=start,
        window_end=end,
        deployments=len(healthy),
        changes=len(changes),
        failed_changes=len(failed),
        lead_time_samples=len(lead_times),
        lead_time_median=quantile(lead_times, 0.5),
        lead_time_p90=quantile(lead_times, 0.9),
        restored=len(restore_times),
        time_to_restore_median=quantile(restore_times, 0.5),
        time_to_restore_p90=quantile(restore_times, 0.9),
        unrestored=len(failed) - len(restore_times),
    )


async def compute(
    store: DeploymentStore, environment: str, *, window: float, end: float
) -> DoraFigures:
    """The figures of ``environment`` over the ``window`` seconds up to
    ``end`` (Unix seconds), read from the store (in a worker thread)."""
    start = end - window
    records = await store.since_finished(environment, start)
    return figures(environment, records, start, end)
