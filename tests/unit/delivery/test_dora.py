"""The DORA figures of an environment, computed from a history whose
every figure is known by hand: frequency, lead time, change failure rate
and time to restore (see conveyor.daemon.delivery.dora for the rules)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from conveyor.client import delivery, render
from conveyor.daemon.api import convert
from conveyor.daemon.delivery import dora
from conveyor.daemon.delivery.records import DeploymentKind, DeploymentRecord, DeploymentStatus
from conveyor.daemon.store import Database
from conveyor.daemon.store.deployments import DeploymentStore
from conveyor.daemon.telemetry.dora import DoraGauges
from tests.unit.delivery.support import record
from tests.unit.delivery.test_store import with_artifacts

S = DeploymentStatus
K = DeploymentKind
DAY = 86400.0
END = 1_800_000_000.0
WINDOW = 10 * DAY


def deployment(
    n: int,
    kind: DeploymentKind,
    status: DeploymentStatus,
    *,
    started: float,
    took: float,
    commit_age: float | None = None,
    previous: str = "",
    environment: str = "production",
) -> DeploymentRecord:
    """Deployment number ``n`` (ids sort by n), started at ``started``,
    finished ``took`` seconds later (healthy then, if it became healthy);
    its commit ``commit_age`` seconds older than its start."""
    base = record(environment, status)
    finished = started + took
    return replace(
        base,
        id=f"{n:012x}00000000",
        kind=kind,
        created_at=started - 1,
        started_at=started,
        finished_at=finished if status.finished else None,
        healthy_at=finished if status is S.HEALTHY else None,
        commit_time=started - commit_age if commit_age is not None else None,
        previous_id=previous,
    )


def history() -> list[DeploymentRecord]:
    def ago(days: float) -> float:
        return END - days * DAY

    return [
        # before the window: not counted
        deployment(1, K.DEPLOY, S.HEALTHY, started=ago(20), took=60, commit_age=60),
        # lead time 3600 + 60
        deployment(2, K.DEPLOY, S.HEALTHY, started=ago(9), took=60, commit_age=3600),
        # lead time 7200 + 120; rolled back by hand a day later: a failed change
        deployment(3, K.PROMOTE, S.HEALTHY, started=ago(8), took=120, commit_age=7200),
        deployment(4, K.ROLLBACK, S.HEALTHY, started=ago(7), took=30, previous=f"{3:012x}00000000"),
        # failed, restored automatically 45 s after it started
        deployment(5, K.DEPLOY, S.ROLLED_BACK, started=ago(5), took=50, commit_age=10),
        deployment(6, K.RESTORE, S.HEALTHY, started=ago(5) + 40, took=5),
        # failed with nothing to restore; a fix went out a day later
        deployment(7, K.DEPLOY, S.FAILED, started=ago(3), took=20),
        deployment(8, K.DEPLOY, S.HEALTHY, started=ago(2), took=100, commit_age=600),
        # never went out as a whole: not a change
        deployment(9, K.DEPLOY, S.INTERRUPTED, started=ago(1), took=5),
        # a rollback from 8 that was rejected: 8 did not fail
        deployment(
            10, K.ROLLBACK, S.REJECTED, started=ago(0.8), took=1, previous=f"{8:012x}00000000"
        ),
        # failed just now, nothing healthy since
        deployment(11, K.DEPLOY, S.FAILED, started=ago(0.5), took=10),
        # another environment's
        deployment(12, K.DEPLOY, S.FAILED, started=ago(4), took=10, environment="staging"),
        # still in progress: not counted
        deployment(13, K.DEPLOY, S.PROGRESSING, started=ago(0.1), took=1),
    ]


EXPECTED = dora.DoraFigures(
    environment="production",
    window_start=END - WINDOW,
    window_end=END,
    deployments=3,  # 2, 3, 8
    changes=6,  # 2, 3, 5, 7, 8, 11
    failed_changes=4,  # 3 (rolled back by hand), 5, 7, 11
    lead_time_samples=3,
    lead_time_median=3660.0,  # of 700, 3660, 7320
    lead_time_p90=6588.0,  # 3660 + 0.8 * (7320 - 3660)
    restored=3,
    time_to_restore_median=86430.0,  # of 45 (5), 86430 (3 -> 4), 86500 (7 -> 8)
    time_to_restore_p90=86486.0,  # 86430 + 0.8 * 70
    unrestored=1,  # 11
)


def test_the_figures_of_a_known_history() -> None:
    found = dora.figures("production", history(), END - WINDOW, END)
    assert found == EXPECTED
    assert found.deployments_per_day == pytest.approx(0.3)
    assert found.change_failure_rate == pytest.approx(4 / 6)
    assert found.window == WINDOW


def test_an_environment_without_changes_has_no_rate_and_no_times() -> None:
    found = dora.figures("qa", history(), END - WINDOW, END)
    assert (found.deployments, found.changes, found.deployments_per_day) == (0, 0, 0.0)
    assert found.change_failure_rate is None
    assert found.lead_time_median is found.time_to_restore_p90 is None


def test_quantiles_interpolate_between_the_nearest_ranks() -> None:
    assert dora.quantile([10, 1, 3, 2], 0.5) == 2.5
    assert dora.quantile([1, 2, 3, 10], 0.9) == pytest.approx(7.9)
    assert dora.quantile([5], 0.9) == 5
    assert dora.quantile([], 0.5) is None


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "conveyor.db")
    try:
        yield database
    finally:
        database.close()


async def test_the_figures_read_from_the_store_are_the_same(db: Database, tmp_path: Path) -> None:
    await with_artifacts(db, tmp_path, 1)
    store = DeploymentStore(db)
    for item in history():
        await store.create(item, "test")
    found = await dora.compute(store, "production", window=WINDOW, end=END)
    assert found == EXPECTED
    # only what the window needs is read: from deployment 2 (the oldest
    # that finished in it) on
    read = await store.since_finished("production", END - WINDOW)
    assert [int(r.id[:12], 16) for r in read] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]


def _points(reader: InMemoryMetricReader) -> dict[tuple[str, str], float]:
    data = reader.get_metrics_data()
    assert data is not None
    found = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = point.attributes or {}
                    environment = str(attributes["deployment.environment.name"])
                    found[metric.name, environment] = point.value  # type: ignore[union-attr]
    return found


async def test_the_figures_are_observable_gauges_per_environment(
    db: Database, tmp_path: Path
) -> None:
    await with_artifacts(db, tmp_path, 1)
    store = DeploymentStore(db)
    for item in history():
        await store.create(item, "test")
    reader = InMemoryMetricReader()
    gauges = DoraGauges(MeterProvider(metric_readers=[reader]).get_meter("test"), window=WINDOW)
    await gauges.refresh_now(store, end=END)
    points = _points(reader)
    assert points["conveyor.dora.deployment.frequency", "production"] == pytest.approx(0.3)
    assert points["conveyor.dora.change_failure_rate", "production"] == pytest.approx(4 / 6)
    assert points["conveyor.dora.lead_time.median", "production"] == 3660.0
    assert points["conveyor.dora.lead_time.p90", "production"] == 6588.0
    assert points["conveyor.dora.time_to_restore.median", "production"] == 86430.0
    assert points["conveyor.dora.time_to_restore.p90", "production"] == 86486.0
    # staging had one failed change: a rate, no lead time, nothing restored
    assert points["conveyor.dora.change_failure_rate", "staging"] == 1.0
    assert points["conveyor.dora.deployment.frequency", "staging"] == 0.0
    assert ("conveyor.dora.lead_time.median", "staging") not in points


def test_the_cli_prints_the_figures_and_what_is_missing() -> None:
    message = convert.dora_message(EXPECTED)
    assert delivery.dora_lines(message) == [
        "DORA figures of production, the last 10 days"
        f" ({render.format_time(message.window_start)} to"
        f" {render.format_time(message.window_end)})",
        "  deployment frequency:   3 deployments, 0.30/day",
        "  lead time for changes:  median 1h01m, p90 1h49m (3 changes)",
        "  change failure rate:    67% (4 of 6 changes failed)",
        "  time to restore:        median 24h00m, p90 24h01m (3 restored, 1 not restored)",
    ]
    empty = convert.dora_message(dora.figures("qa\x1b[2J", [], END - WINDOW, END))
    lines = delivery.dora_lines(empty)
    assert "\x1b" not in "".join(lines) and "qa\\x1b[2J" in lines[0]
    assert lines[1:] == [
        "  deployment frequency:   0 deployments, 0.00/day",
        "  lead time for changes:  - (no change became healthy)",
        "  change failure rate:    - (no change)",
        "  time to restore:        - (no failed change)",
    ]
