"""Pydantic models of a ``conveyor.yaml`` pipeline file."""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from conveyor.daemon.artifacts.versioning import parse_version
from conveyor.daemon.pipeline.durations import DURATION_HINT, DURATION_PATTERN, parse_duration
from conveyor.daemon.pipeline.graph import order_stages

__all__ = [
    "ConcurrencySpec",
    "EnvironmentSpec",
    "HealthSpec",
    "PipelineSpec",
    "RetryPolicy",
    "StageSpec",
    "describe_value",
    "inside_repository",
]

#: Pattern for pipeline and stage names.
NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
#: Largest allowed ``retries.max``.
MAX_RETRIES: Final = 10

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


def describe_value(value: Any) -> str:
    """Describe a YAML-ish value for error messages, e.g. ``"a list"``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a value of type {type(value).__name__}"


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"invalid duration {value!r}: must be greater than 0")
    return seconds


def _duration_schema(minimum: str) -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "number", minimum: 0},
            {"type": "string", "pattern": DURATION_PATTERN},
        ],
        "description": f"A duration: {DURATION_HINT}",
    }


#: Seconds (>= 0); accepts numbers and strings like ``"1h30m"``.
Duration = Annotated[
    float, BeforeValidator(parse_duration), WithJsonSchema(_duration_schema("minimum"))
]
#: Seconds (> 0); accepts numbers and strings like ``"1h30m"``.
PositiveDuration = Annotated[
    float, BeforeValidator(_positive_duration), WithJsonSchema(_duration_schema("exclusiveMinimum"))
]


def _str_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


StrList = Annotated[
    list[str],
    BeforeValidator(_str_list),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]


def _no_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError("must not contain a NUL character (a process cannot receive it)")
    return value


#: Commands to run: a NUL cannot be passed to a process, so it is refused here.
CommandList = Annotated[
    list[Annotated[str, AfterValidator(_no_nul)]],
    BeforeValidator(_str_list),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]


def _env_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return _no_nul(value)
    raise ValueError(
        f"expected a string, number or boolean as environment value, got {describe_value(value)}"
    )


def _env_name(name: str) -> str:
    if not name:
        raise ValueError("an environment variable name must not be empty")
    if "=" in name or "\0" in name:
        raise ValueError(
            f"environment variable name {name!r} must not contain '=' or a NUL character"
        )
    return name


EnvValue = Annotated[
    str, BeforeValidator(_env_value), WithJsonSchema({"type": ["string", "number", "boolean"]})
]
EnvName = Annotated[str, AfterValidator(_env_name)]
EnvMap = dict[EnvName, EnvValue]

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def inside_repository(path: str) -> str:
    """A path inside the repository, as ``git rev-parse COMMIT:PATH`` takes
    it: relative, no ``..``, no control character; ``.`` is the whole
    repository. ``./src/`` is normalised to ``src``."""
    if not path:
        raise ValueError("a path must not be empty (use '.' for the whole repository)")
    if _CONTROL_RE.search(path):
        raise ValueError(f"{path!r} must not contain control characters")
    if path.startswith("/"):
        raise ValueError(f"{path!r} must be relative to the repository root")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"{path!r} must stay inside the repository (no '..')")
    return "/".join(parts) or "."


RepositoryPaths = Annotated[
    list[Annotated[str, AfterValidator(inside_repository)]],
    BeforeValidator(_str_list),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]


def _number_as_text(value: Any) -> Any:
    """``version: 1.2`` is a number in YAML: check it as the text it was."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _semantic_version(value: str) -> str:
    parse_version(value)  # its VersionError (a ValueError) says what is wrong
    return value


SemanticVersion = Annotated[
    str, BeforeValidator(_number_as_text), AfterValidator(_semantic_version)
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RetryPolicy(_Model):
    """How often a failed stage is retried and how long to wait in between."""

    max: int = Field(default=0, ge=0, le=MAX_RETRIES, description="Maximum number of retries.")
    backoff: Duration = Field(default=1.0, description="Delay before the first retry.")
    factor: float = Field(default=2.0, ge=1.0, le=10.0, description="Delay multiplier per retry.")

    @model_validator(mode="before")
    @classmethod
    def _from_int(cls, data: Any) -> Any:
        if isinstance(data, bool) or not isinstance(data, int | dict | RetryPolicy):
            raise ValueError(
                "expected a number of retries or a mapping with max, backoff, factor; "
                f"got {describe_value(data)}"
            )
        if isinstance(data, int):
            return {"max": data}
        return data

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError(f"retry attempt must be >= 1, got {attempt}")
        return float(self.backoff * self.factor ** (attempt - 1))


class _RetriesJsonSchema:
    """Document that ``retries`` may also be a plain integer."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES},
                handler(core_schema),
            ]
        }


class ConcurrencySpec(_Model):
    """Limits concurrent runs sharing a concurrency group."""

    group: str | None = Field(
        default=None,
        min_length=1,
        description="Concurrency group; default '<pipeline>/<ref>'. May contain '{ref}'.",
    )
    cancel_in_progress: bool = Field(
        default=False, description="Cancel the running run of the group when a new one starts."
    )


class StageSpec(_Model):
    """One stage of a pipeline."""

    uses: str = Field(default="run", min_length=1, description="Stage kind.")
    run: CommandList = Field(default_factory=list, description="Command(s) to run.")
    needs: StrList = Field(default_factory=list, description="Stages that must succeed first.")
    timeout: PositiveDuration | None = Field(default=None, description="Stage timeout.")
    retries: Annotated[RetryPolicy, _RetriesJsonSchema()] = Field(
        default=RetryPolicy(), description="Retry count, or a retry policy."
    )
    env: EnvMap = Field(default_factory=dict, description="Environment variables.")
    executor: str | None = Field(
        default=None, min_length=1, description="Executor; overrides the pipeline default."
    )
    with_: dict[str, Any] = Field(
        default_factory=dict, alias="with", description="Parameters for the stage kind."
    )
    inputs: RepositoryPaths = Field(
        default_factory=list,
        description="Repository paths whose content (at the commit) makes the stage's cache"
        " key: a re-run with the same key reuses the artifact instead of building again.",
    )
    require_clean: bool = Field(
        default=False,
        description="Check before and after the stage that the workspace's tracked files equal"
        " the commit (always done for stages that produce artifacts).",
    )
    allow_dirty: bool = Field(
        default=False,
        description="Record tracked files that differ from the commit instead of failing the"
        " stage; its artifacts are marked not reproducible from the commit.",
    )
    overwrite_tags: bool = Field(
        default=False,
        description="Let the stage's artifacts take tags that already name another digest.",
    )

    @model_validator(mode="after")
    def _clean_or_dirty(self) -> StageSpec:
        if self.require_clean and self.allow_dirty:
            raise ValueError(
                "require_clean and allow_dirty contradict each other; keep one of them"
            )
        return self


#: Largest ``replicas`` of an environment.
MAX_REPLICAS: Final = 20
#: The placeholder in an environment's ``run:`` for the artifact's path.
ARTIFACT_PLACEHOLDER: Final = "{artifact}"


def _http_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"an HTTP path starts with '/', got {value!r}")
    if _CONTROL_RE.search(value) or " " in value:
        raise ValueError(f"{value!r} must not contain spaces or control characters")
    return value


class HealthSpec(_Model):
    """How each replica of an environment is checked: an HTTP GET of
    ``path`` on the replica's port (healthy on 2xx), or ``command`` (healthy
    on exit code 0, with ``PORT`` set to the replica's port)."""

    path: Annotated[str, AfterValidator(_http_path)] | None = Field(
        default=None, description="HTTP path to GET on the replica's port (default: /)."
    )
    command: CommandList | None = Field(
        default=None, description="A command that exits 0 when the replica is healthy."
    )
    timeout: PositiveDuration = Field(default=2.0, description="Seconds one check may take.")
    interval: PositiveDuration = Field(
        default=1.0, description="Seconds between checks while waiting and while watching."
    )
    failure_threshold: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Consecutive failed checks that make a replica unhealthy.",
    )

    @model_validator(mode="after")
    def _one_way(self) -> HealthSpec:
        if self.path is not None and self.command:
            raise ValueError("give either path or command, not both")
        if self.command is not None and not self.command:
            raise ValueError("command must not be empty")
        return self


class EnvironmentSpec(_Model):
    """Where and how an artifact runs: the target, its externalised
    configuration, replicas, health check and the gates of a deployment."""

    target: str = Field(default="process", min_length=1, description="Deploy target.")
    run: CommandList = Field(
        default_factory=list,
        description="The service command; {artifact} is the artifact's path (file artifacts)."
        " Required by the process target.",
    )
    port: int = Field(
        ge=1024, le=65535, description="The stable front port users reach, on 127.0.0.1."
    )
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS, description="Replicas to run.")
    config: EnvMap = Field(
        default_factory=dict, description="Configuration: environment variables of the service."
    )
    env_file: Annotated[str, AfterValidator(inside_repository)] | None = Field(
        default=None,
        description="A file of KEY=VALUE lines in the repository, read at the artifact's"
        " commit; config wins over it.",
    )
    secrets: dict[EnvName, Name] = Field(
        default_factory=dict,
        description="Environment variables taken from the daemon's secrets, by secret name.",
    )
    health: HealthSpec = Field(default=HealthSpec(), description="The health check.")
    readiness_timeout: PositiveDuration = Field(
        default=30.0, description="Seconds a new replica has to pass its health check."
    )
    watch: Duration = Field(
        default=10.0,
        description="Seconds every replica must stay healthy after the rollout (the watch"
        " window) before the deployment counts as healthy.",
    )
    stop_grace: Duration = Field(
        default=10.0, description="Seconds between SIGTERM and SIGKILL when a replica stops."
    )
    requires_approval: bool = Field(
        default=False, description="Hold deployments until approved (conveyor approve)."
    )
    approval_expiry: PositiveDuration = Field(
        default=86400.0, description="Seconds a deployment waits for approval before it expires."
    )
    promote_from: Name | None = Field(
        default=None,
        description="The environment this one takes its artifacts from: only promotions from"
        " it are accepted.",
    )
    with_: dict[str, Any] = Field(
        default_factory=dict, alias="with", description="The deploy target's own options."
    )


def _stages_json_schema(schema: dict[str, Any]) -> None:
    # pydantic renders constrained keys as patternProperties, which silently
    # accepts non-matching names; use propertyNames instead.
    pattern_props = schema.pop("patternProperties", None)
    if isinstance(pattern_props, dict) and len(pattern_props) == 1:
        ((pattern, value_schema),) = pattern_props.items()
        schema["propertyNames"] = {"pattern": pattern}
        schema["additionalProperties"] = value_schema


class PipelineSpec(_Model):
    """A whole ``conveyor.yaml`` file."""

    name: Name = Field(description="Pipeline name.")
    version: SemanticVersion | None = Field(
        default=None,
        description="Base version (SemVer 2.0.0, e.g. 1.4.0) of what the pipeline builds;"
        " a run of a commit without a vX.Y.Z tag gets 1.4.0-rc.<run number>+sha.<commit>.",
    )
    env: EnvMap = Field(default_factory=dict, description="Environment for all stages.")
    timeout: PositiveDuration | None = Field(default=None, description="Whole-run timeout.")
    executor: str = Field(default="local", min_length=1, description="Default executor.")
    concurrency: ConcurrencySpec | None = None
    stages: dict[Name, StageSpec] = Field(
        min_length=1,
        description="Stages, by name, in file order.",
        json_schema_extra=_stages_json_schema,
    )
    environments: dict[Name, EnvironmentSpec] = Field(
        default_factory=dict,
        description="Environments the pipeline's artifacts are deployed to, by name; the"
        " daemon's configuration may define (and override) them too.",
        json_schema_extra=_stages_json_schema,
    )

    def stage_order(self) -> list[str]:
        """Topological order of the stages, stable with respect to file order.

        Raises ``ValueError`` if a stage needs an unknown stage or on a cycle.
        """
        for name, stage in self.stages.items():
            for need in stage.needs:
                if need not in self.stages:
                    raise ValueError(f"stage {name!r} needs unknown stage {need!r}")
        ordering = order_stages({name: stage.needs for name, stage in self.stages.items()})
        if ordering.cycles:
            cycle = ordering.cycles[0]
            raise ValueError(f"dependency cycle among stages: {' -> '.join([*cycle, cycle[0]])}")
        return ordering.order
