"""The ``conveyor.yaml`` pipeline file: models, loading, validation and JSON Schema."""

from conveyor.daemon.pipeline.durations import parse_duration
from conveyor.daemon.pipeline.loader import (
    Diagnostic,
    PipelineError,
    StageValidator,
    check_pipeline,
    load_pipeline,
)
from conveyor.daemon.pipeline.model import (
    ConcurrencySpec,
    Duration,
    PipelineSpec,
    PositiveDuration,
    RetryPolicy,
    StageSpec,
)

__all__ = [
    "ConcurrencySpec",
    "Diagnostic",
    "Duration",
    "PipelineError",
    "PipelineSpec",
    "PositiveDuration",
    "RetryPolicy",
    "StageSpec",
    "StageValidator",
    "check_pipeline",
    "load_pipeline",
    "parse_duration",
]
