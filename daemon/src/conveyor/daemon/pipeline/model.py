"""Pydantic models of a ``conveyor.yaml`` pipeline file."""

from __future__ import annotations

import re
from dataclasses import dataclass
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
from conveyor.daemon.secrets.store import NAME_PATTERN as SECRET_NAME_PATTERN

__all__ = [
    "CONTAINER_FIELDS",
    "ConcurrencySpec",
    "ContainerSettings",
    "EnvironmentSpec",
    "HealthSpec",
    "PipelineSpec",
    "ResourcesSpec",
    "RetryPolicy",
    "StageSpec",
    "describe_value",
    "inside_repository",
    "parse_memory",
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


_SECRETS_SCHEMA: Final = {
    "anyOf": [
        {"type": "string", "pattern": SECRET_NAME_PATTERN},
        {"type": "array", "items": {"type": "string", "pattern": SECRET_NAME_PATTERN}},
    ]
}
SecretNames = Annotated[
    list[Annotated[str, StringConstraints(pattern=SECRET_NAME_PATTERN)]],
    BeforeValidator(_str_list),
    WithJsonSchema(_SECRETS_SCHEMA),
]

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


# -- containers (executor: docker, swarm) --------------------------------------------

#: The stage fields container executors take (see ``Executor.container_fields``).
CONTAINER_FIELDS: Final = ("image", "resources", "placement", "network", "user")
#: Docker's smallest memory limit.
MIN_MEMORY: Final = 6 << 20
_MEMORY_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_MEMORY_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_MEMORY_HINT: Final = "a number of bytes or a size like 512m or 2g (k, m, g, t: KiB, MiB, GiB, TiB)"
#: The largest uid or gid (2**32 - 2; -1 means "unchanged" to the kernel).
MAX_ID: Final = (1 << 32) - 2


def parse_memory(value: Any) -> int:
    """A memory size in bytes: an integer, or ``512m``, ``1.5g``, ``64MiB``
    (binary units, as Docker reads them). Raises ``ValueError`` saying what
    is expected, or when it is below Docker's minimum of 6m."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected {_MEMORY_HINT}, got {describe_value(value)}")
    if isinstance(value, str):
        match = _MEMORY_RE.match(value)
        if match is None:
            raise ValueError(f"invalid memory size {value!r}: expected {_MEMORY_HINT}")
        nbytes = int(float(match[1]) * _MEMORY_UNITS[match[2].lower()])
    else:
        nbytes = int(value)
    if nbytes < MIN_MEMORY:
        raise ValueError(f"memory size {value!r} is too small: Docker's smallest limit is 6m")
    return nbytes


MemorySize = Annotated[
    int,
    BeforeValidator(parse_memory),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": MIN_MEMORY},
                {"type": "string", "pattern": r"^ *[0-9]+(\.[0-9]+)? *[kmgtKMGT]?([iI]?[bB])? *$"},
            ],
            "description": f"A memory size: {_MEMORY_HINT}.",
        }
    ),
]


def _network(value: Any) -> Any:
    if value not in ("none", "host"):
        raise ValueError(f"expected 'none' (loopback only) or 'host', got {describe_value(value)}")
    return value


Network = Annotated[
    str, BeforeValidator(_network), WithJsonSchema({"type": "string", "enum": ["none", "host"]})
]
_USER_RE: Final = re.compile(r"^(\d+)(?::(\d+))?$")


def _container_user(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    match = _USER_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(
            f"expected a numeric uid or uid:gid (1000, '1000:1000'; 0 for root),"
            f" got {describe_value(value)}"
        )
    if any(int(part) > MAX_ID for part in match.groups() if part is not None):
        raise ValueError(f"uid and gid must be at most {MAX_ID}, got {value!r}")
    return str(value)


ContainerUser = Annotated[
    str,
    BeforeValidator(_container_user),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": _USER_RE.pattern},
            ]
        }
    ),
]


def _image(value: str) -> str:
    if not value or any(c.isspace() for c in value) or _CONTROL_RE.search(value):
        raise ValueError(
            f"expected an image name such as 127.0.0.1:5000/team/tools:1, got {value!r}"
        )
    return value


Image = Annotated[str, AfterValidator(_image)]


def _constraint(value: str) -> str:
    if "==" not in value and "!=" not in value:
        raise ValueError(
            f"a placement constraint compares with == or != (node.labels.zone == eu), got {value!r}"
        )
    return value


PlacementList = Annotated[
    list[Annotated[str, AfterValidator(_constraint)]],
    BeforeValidator(_str_list),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ResourcesSpec(_Model):
    """What a stage's container may use: Swarm places it on a node that has it."""

    cpus: float | None = Field(
        default=None, gt=0, le=1024, description="CPUs (may be fractional: 0.5)."
    )
    memory: MemorySize | None = Field(
        default=None,
        description="Memory limit (512m, 2g); a stage killed for exceeding it fails with"
        " 'killed: out of memory'.",
    )


@dataclass(frozen=True)
class ContainerSettings:
    """A stage's container fields with the pipeline's defaults applied."""

    image: str | None
    network: str
    cpus: float | None
    memory: int | None
    placement: tuple[str, ...]
    #: ``uid[:gid]`` as written, or None for the default.
    user: str | None


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
    image: Image | None = Field(
        default=None,
        description="Container image (container executors: docker, swarm); never pulled by"
        " the docker executor. Overrides the pipeline's.",
    )
    resources: ResourcesSpec | None = Field(
        default=None,
        description="CPU and memory limits of the stage's container; overrides the"
        " pipeline's key by key.",
    )
    placement: PlacementList | None = Field(
        default=None,
        description="Swarm placement constraints (node.labels.zone == eu); overrides the"
        " pipeline's.",
    )
    network: Network | None = Field(
        default=None,
        description="The container's network: none (loopback only, the default) or host.",
    )
    user: ContainerUser | None = Field(
        default=None,
        description="uid or uid:gid the container runs as (default: non-root, see"
        " docs/pipeline.md).",
    )
    secrets: Annotated[SecretNames | None, WithJsonSchema(_SECRETS_SCHEMA)] = Field(
        default=None,
        description="Secrets (by name) the stage gets as environment variables;"
        " default: the pipeline's secrets.",
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
    image: Image | None = Field(
        default=None, description="Default container image of stages on container executors."
    )
    resources: ResourcesSpec | None = Field(
        default=None, description="Default CPU and memory limits of stages' containers."
    )
    placement: PlacementList | None = Field(
        default=None, description="Default Swarm placement constraints of stages."
    )
    network: Network | None = Field(
        default=None, description="Default network of stages' containers: none or host."
    )
    user: ContainerUser | None = Field(
        default=None, description="Default uid or uid:gid of stages' containers."
    )
    concurrency: ConcurrencySpec | None = None
    secrets: SecretNames = Field(
        default_factory=list,
        description="Secrets (by name) given to every stage that does not list its own.",
    )
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

    def stage_secrets(self, name: str) -> list[str]:
        """The secrets stage ``name`` gets: its own list, else the pipeline's."""
        own = self.stages[name].secrets
        return list(self.secrets if own is None else own)

    def stage_executor(self, name: str) -> str:
        """The executor stage ``name`` runs on: its own, else the pipeline's."""
        return self.stages[name].executor or self.executor

    def container_settings(self, name: str) -> ContainerSettings:
        """Stage ``name``'s container fields, each its own or else the
        pipeline's (``resources`` key by key)."""
        stage = self.stages[name]
        own, default = stage.resources, self.resources
        cpus = own.cpus if own is not None and own.cpus is not None else None
        memory = own.memory if own is not None and own.memory is not None else None
        if default is not None:
            cpus = default.cpus if cpus is None else cpus
            memory = default.memory if memory is None else memory
        placement = stage.placement if stage.placement is not None else self.placement
        return ContainerSettings(
            image=stage.image or self.image,
            network=stage.network or self.network or "none",
            cpus=cpus,
            memory=memory,
            placement=tuple(placement or ()),
            user=stage.user if stage.user is not None else self.user,
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
