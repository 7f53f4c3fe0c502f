"""Metrics after the CICD semantic conventions, plus stage durations."""

from __future__ import annotations

from opentelemetry.metrics import Meter

from conveyor.daemon.telemetry import attributes as a

#: Histogram buckets in seconds, from a quick stage to a long build.
DURATION_BUCKETS = [
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
]


class Instruments:
    def __init__(self, meter: Meter) -> None:
        self.run_duration = meter.create_histogram(
            "cicd.pipeline.run.duration",
            unit="s",
            description="Duration of a pipeline run grouped by pipeline, state and result.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.runs_active = meter.create_up_down_counter(
            "cicd.pipeline.run.active",
            unit="{run}",
            description="The number of pipeline runs currently active by state "
            "(pending = queued, executing = running).",
        )
        self.run_errors = meter.create_counter(
            "cicd.pipeline.run.errors",
            unit="{error}",
            description="The number of errors encountered in pipeline runs.",
        )
        self.task_duration = meter.create_histogram(
            "conveyor.pipeline.task.duration",
            unit="s",
            description="Duration of a stage (task) run, all attempts included.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    def run_queued(self, pipeline: str) -> None:
        self.runs_active.add(1, {a.PIPELINE_NAME: pipeline, a.PIPELINE_RUN_STATE: "pending"})

    def run_started(self, pipeline: str, waited: float) -> None:
        pending = {a.PIPELINE_NAME: pipeline, a.PIPELINE_RUN_STATE: "pending"}
        self.runs_active.add(-1, pending)
        self.run_duration.record(waited, pending)
        self.runs_active.add(1, {a.PIPELINE_NAME: pipeline, a.PIPELINE_RUN_STATE: "executing"})

    def run_finished(
        self, pipeline: str, *, started: bool, duration: float, result: str, error_type: str
    ) -> None:
        state = "executing" if started else "pending"
        self.runs_active.add(-1, {a.PIPELINE_NAME: pipeline, a.PIPELINE_RUN_STATE: state})
        attrs = {a.PIPELINE_NAME: pipeline, a.PIPELINE_RUN_STATE: state, a.PIPELINE_RESULT: result}
        if error_type:
            attrs[a.ERROR_TYPE] = error_type
            self.run_errors.add(1, {a.PIPELINE_NAME: pipeline, a.ERROR_TYPE: error_type})
        self.run_duration.record(duration, attrs)

    def task_finished(
        self, pipeline: str, task: str, task_type: str, result: str, duration: float
    ) -> None:
        self.task_duration.record(
            duration,
            {
                a.PIPELINE_NAME: pipeline,
                a.TASK_NAME: task,
                a.TASK_TYPE: task_type,
                a.TASK_RUN_RESULT: result,
            },
        )
