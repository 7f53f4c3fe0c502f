"""From an environment's definition to what a target is given.

An environment is defined in the daemon's configuration (``environments``)
or in the pipeline file of the run that built the artifact, at its commit;
the configuration wins. Resolving it for one artifact reads the
``env_file`` from git at the artifact's commit (not from any workspace),
takes the secrets it names, puts the artifact's stored path into the
service command, and hashes the effective configuration. What a
deployment stores (:attr:`Resolved.snapshot`) holds everything but secret
values, so a rollback deploys the same configuration again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.daemon.artifacts.model import FILE, Artifact
from conveyor.daemon.delivery import gitfacts
from conveyor.daemon.delivery.target import Environment, HealthCheck
from conveyor.daemon.errors import FailedPrecondition
from conveyor.daemon.pipeline import EnvironmentSpec
from conveyor.daemon.pipeline.model import ARTIFACT_PLACEHOLDER

#: Looks up secret values by name: ``{ENV_VAR: secret name}`` in, ``{ENV_VAR:
#: value}`` out; raises FailedPrecondition for a secret it does not hold.
SecretResolver = Callable[[str, Mapping[str, str]], Awaitable[dict[str, str]]]

_ENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


async def no_secrets(environment: str, references: Mapping[str, str]) -> dict[str, str]:
    """The resolver of a daemon without secrets: refuses any reference."""
    if not references:
        return {}
    names = ", ".join(f"{var} (secret {name!r})" for var, name in sorted(references.items()))
    raise FailedPrecondition(
        f"environment {environment} takes secrets ({names}), but this daemon holds no"
        " secrets yet: give these values in the daemon's configuration of the environment"
        " (environments.<name>.config) until it does",
        field="environment",
    )


def parse_env_file(text: str, path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (``export`` allowed, ``#`` comments, blank lines;
    a value in matching single or double quotes is unquoted). Raises
    FailedPrecondition naming the line of anything else."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise FailedPrecondition(
                f"env_file {path}:{number}: expected KEY=VALUE, got {line[:80]!r}"
            )
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if "\0" in value:
            raise FailedPrecondition(f"env_file {path}:{number}: a value holds a NUL character")
        values[key] = value
    return values


def config_hash(spec: EnvironmentSpec, config: Mapping[str, str]) -> str:
    """``sha256:`` of the effective configuration: the variables (names and
    values, secrets included, so a rotated secret counts as a change) and
    everything else of the environment that shapes the service."""
    shape = spec.model_dump(mode="json", by_alias=True, exclude={"config", "env_file", "secrets"})
    shape.pop("requires_approval", None)
    shape.pop("approval_expiry", None)
    shape.pop("promote_from", None)
    document = json.dumps({"config": dict(sorted(config.items())), "spec": shape}, sort_keys=True)
    return "sha256:" + hashlib.sha256(document.encode()).hexdigest()


@dataclass(frozen=True)
class Resolved:
    """An environment resolved for one artifact."""

    spec: EnvironmentSpec
    environment: Environment
    #: Where the definition came from, for messages.
    source: str
    #: What a deployment stores to redeploy it: the definition, the values
    #: read from the env file, the source; no secret values.
    snapshot: str


def artifact_path(artifact: Artifact, store: Path) -> str:
    """Where a file artifact is in the daemon's content-addressed store."""
    return str(store / "sha256" / artifact.digest.removeprefix("sha256:"))


def _command(spec: EnvironmentSpec, artifact: Artifact, store: Path) -> tuple[str, ...]:
    if artifact.kind != FILE:
        return tuple(spec.run)
    path = artifact_path(artifact, store)
    return tuple(part.replace(ARTIFACT_PLACEHOLDER, path) for part in spec.run)


async def resolve(
    name: str,
    spec: EnvironmentSpec,
    artifact: Artifact,
    *,
    source: str,
    store: Path,
    secrets: SecretResolver,
    file_config: Mapping[str, str] | None = None,
) -> Resolved:
    """Resolve ``spec`` (the environment ``name``) for ``artifact``.

    ``file_config`` is the env file's values as an earlier deployment read
    them (a rollback); without it the env file is read from git at the
    artifact's commit. Raises FailedPrecondition for an env file that is
    missing or malformed, a secret that cannot be had.
    """
    if file_config is None:
        file_config = {}
        if spec.env_file:
            file_config = await read_env_file(spec.env_file, artifact)
    secret_values = await secrets(name, spec.secrets)
    config = {**file_config, **spec.config, **secret_values}
    health = HealthCheck(
        path=(spec.health.path or "/") if not spec.health.command else "",
        command=tuple(spec.health.command or ()),
        timeout=spec.health.timeout,
        interval=spec.health.interval,
        failure_threshold=spec.health.failure_threshold,
    )
    environment = Environment(
        name=name,
        target=spec.target,
        replicas=spec.replicas,
        artifact=artifact,
        command=_command(spec, artifact, store),
        config=config,
        config_hash=config_hash(spec, config),
        port=spec.port,
        health=health,
        readiness_timeout=spec.readiness_timeout,
        watch_window=spec.watch,
        stop_grace=spec.stop_grace,
        options=dict(spec.with_),
    )
    snapshot = json.dumps(
        {
            "spec": spec.model_dump(mode="json", by_alias=True),
            "file_config": dict(file_config),
            "source": source,
        },
        sort_keys=True,
    )
    return Resolved(spec, environment, source, snapshot)


async def read_env_file(path: str, artifact: Artifact) -> dict[str, str]:
    try:
        data = await gitfacts.file_at(artifact.repository, artifact.commit, path)
    except gitfacts.GitFactError as exc:
        raise FailedPrecondition(
            f"cannot read env_file {path} at commit {artifact.commit[:12]}: {exc}"
        ) from None
    if data is None:
        raise FailedPrecondition(
            f"env_file {path} does not exist at commit {artifact.commit[:12]} of"
            f" {artifact.repository}"
        )
    return parse_env_file(data.decode("utf-8", errors="replace"), path)


def from_snapshot(snapshot: str) -> tuple[EnvironmentSpec, dict[str, str], str]:
    """The definition, env file values and source a deployment stored."""
    data: dict[str, Any] = json.loads(snapshot)
    spec = EnvironmentSpec.model_validate(data["spec"])
    return spec, {str(k): str(v) for k, v in data.get("file_config", {}).items()}, data["source"]
