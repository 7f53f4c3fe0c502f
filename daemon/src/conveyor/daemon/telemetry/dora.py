"""The DORA figures of every environment as OpenTelemetry gauges.

Observable gauges, one time series per environment
(``deployment.environment.name``), over the daemon's ``dora_window_days``:

==========================================  =================  ==========================
``conveyor.dora.deployment.frequency``      ``{deployment}/d``  changes that became healthy, per day
``conveyor.dora.lead_time.median``          ``s``              lead time for changes
``conveyor.dora.lead_time.p90``             ``s``
``conveyor.dora.change_failure_rate``       ``1``              failed changes / changes
``conveyor.dora.time_to_restore.median``    ``s``              from a failed change to healthy again
``conveyor.dora.time_to_restore.p90``       ``s``
==========================================  =================  ==========================

A figure without samples (no change, nothing restored) is not observed.
The gauges' callbacks run in the metric reader's thread and only read the
latest figures: :meth:`DoraGauges.serve` computes them on the trio side
(the store reads in worker threads) at start-up, after each deployment
that ends (:meth:`DoraGauges.changed`) and every ``interval`` seconds, as
the window moves on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import trio
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from conveyor.daemon.delivery.dora import DoraFigures, compute
from conveyor.daemon.store.deployments import DeploymentStore
from conveyor.daemon.telemetry import attributes as a

log = logging.getLogger(__name__)

#: Seconds between two computations while no deployment ends.
REFRESH_INTERVAL = 60.0


class DoraGauges:
    """The gauges, and the figures they report (by environment)."""

    def __init__(self, meter: Meter, *, window: float) -> None:
        self.window = window
        self._figures: dict[str, DoraFigures] = {}
        self._changed = trio.Event()

        def gauge(
            name: str, unit: str, description: str, value: Callable[[DoraFigures], float | None]
        ) -> None:
            def observe(options: CallbackOptions) -> Iterable[Observation]:
                for figures in list(self._figures.values()):
                    found = value(figures)
                    if found is not None:
                        yield Observation(found, {a.DEPLOYMENT_ENVIRONMENT: figures.environment})

            meter.create_observable_gauge(
                name, callbacks=[observe], unit=unit, description=description
            )

        days = f"over the last {window / 86400:g} days"
        gauge(
            "conveyor.dora.deployment.frequency",
            "{deployment}/d",
            f"DORA deployment frequency: changes that became healthy per day, {days}.",
            lambda f: f.deployments_per_day,
        )
        gauge(
            "conveyor.dora.lead_time.median",
            "s",
            f"DORA lead time for changes, commit to healthy: the median, {days}.",
            lambda f: f.lead_time_median,
        )
        gauge(
            "conveyor.dora.lead_time.p90",
            "s",
            f"DORA lead time for changes, commit to healthy: the 90th percentile, {days}.",
            lambda f: f.lead_time_p90,
        )
        gauge(
            "conveyor.dora.change_failure_rate",
            "1",
            f"DORA change failure rate: failed changes / changes, {days}.",
            lambda f: f.change_failure_rate,
        )
        gauge(
            "conveyor.dora.time_to_restore.median",
            "s",
            f"DORA time to restore, failed change to healthy again: the median, {days}.",
            lambda f: f.time_to_restore_median,
        )
        gauge(
            "conveyor.dora.time_to_restore.p90",
            "s",
            f"DORA time to restore, failed change to healthy again: the 90th percentile, {days}.",
            lambda f: f.time_to_restore_p90,
        )

    @property
    def figures(self) -> dict[str, DoraFigures]:
        """The latest figures, by environment."""
        return dict(self._figures)

    def changed(self) -> None:
        """A deployment ended: compute the figures again soon (call it on
        the trio loop; never blocks)."""
        self._changed.set()

    async def refresh_now(self, store: DeploymentStore, *, end: float | None = None) -> None:
        """Compute the figures of every environment with deployments, over
        the window up to ``end`` (default: now)."""
        end = time.time() if end is None else end
        found = {}
        for environment in await store.environments():
            found[environment] = await compute(store, environment, window=self.window, end=end)
        self._figures = found

    async def serve(
        self,
        store: DeploymentStore,
        *,
        interval: float = REFRESH_INTERVAL,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep the figures fresh until cancelled: at once, after each
        :meth:`changed`, and every ``interval`` seconds. A failed
        computation is logged and tried again at the next turn."""
        task_status.started()
        while True:
            self._changed = trio.Event()
            try:
                await self.refresh_now(store)
            except Exception:
                log.exception("computing the DORA figures failed")
            with trio.move_on_after(interval):
                await self._changed.wait()
