"""The ``conveyor.yaml`` pipeline file: models, loading, validation and JSON Schema."""

from conveyor.daemon.pipeline.checks import Limits, StageValidator, TargetCheck
from conveyor.daemon.pipeline.diagnostics import Diagnostic, PipelineError, PipelineTooLarge
from conveyor.daemon.pipeline.durations import parse_duration
from conveyor.daemon.pipeline.loader import check_pipeline, load_pipeline
from conveyor.daemon.pipeline.model import (
    ConcurrencySpec,
    EnvironmentSpec,
    HealthSpec,
    PipelineSpec,
    RetryPolicy,
    StageSpec,
)

__all__ = [
    "ConcurrencySpec",
    "Diagnostic",
    "EnvironmentSpec",
    "HealthSpec",
    "Limits",
    "PipelineError",
    "PipelineSpec",
    "PipelineTooLarge",
    "RetryPolicy",
    "StageSpec",
    "StageValidator",
    "TargetCheck",
    "check_pipeline",
    "load_pipeline",
    "parse_duration",
]
