"""The ``deploy`` stage kind: deploy the artifact the run produced to an
environment, and wait until the deployment ends.

```yaml
stages:
  staging:
    uses: deploy
    needs: [image]
    with:
      environment: staging          # defined under environments: (or by the daemon)
      artifact: "app-*.whl"         # optional: which of the run's artifacts (a name pattern)
  production:
    uses: deploy
    needs: [staging]
    with:
      environment: production
      promote_from: staging         # promote what is healthy in staging instead
```

The artifact is one the run recorded before this stage (``ctx.artifacts``:
built by a stage it needs, or reused from the cache), chosen by its name
when ``with.artifact`` is given; exactly one must match. Nothing is
rebuilt: the deployment takes its digest. With ``promote_from``, the
digest that runs, healthy, in that environment is deployed instead.

The stage succeeds when the deployment becomes healthy (every replica
passed its health check and stayed healthy through the watch window); it
fails when the deployment failed, was rolled back (the previous version is
restored automatically), was rejected or expired. The rollout's progress
goes to the stage log; an environment that requires approval makes the
stage wait for ``conveyor approve`` (mind the stage's ``timeout``:
cancelling the stage stops the wait, not the deployment).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from typing import Annotated

from pydantic import AfterValidator

from conveyor.plugin import (
    Artifact,
    DeploymentError,
    DeploymentStatus,
    Parameters,
    StageContext,
    StageKind,
    StageOutcome,
    StageSpec,
    StageStatus,
    hookimpl,
)
from conveyor.plugins.parameters import invalid_parameters, read_parameters

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _environment_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{value!r} is not an environment name (letters, digits, '.', '_' or '-',"
            " at most 100 characters)"
        )
    return value


def _optional_environment_name(value: str) -> str:
    return _environment_name(value) if value else value


EnvironmentName = Annotated[str, AfterValidator(_environment_name)]


class DeployParameters(Parameters):
    """``with:`` of a ``deploy`` stage."""

    environment: EnvironmentName
    artifact: str = ""
    promote_from: Annotated[str, AfterValidator(_optional_environment_name)] = ""


PARAMETERS = tuple(DeployParameters.model_fields)


def choose(artifacts: Iterable[Artifact], pattern: str) -> tuple[Artifact | None, str]:
    """The one artifact whose name matches ``pattern`` ("" matches all),
    or None and why not."""
    found = {a.digest: a for a in artifacts if not pattern or fnmatch.fnmatchcase(a.name, pattern)}
    if len(found) == 1:
        return next(iter(found.values())), ""
    what = f"matching {pattern!r}" if pattern else ""
    if not found:
        return None, (
            f"the run recorded no artifact {what} before this stage; the deploy stage needs"
            " the stage that builds it (needs:)"
        ).replace("  ", " ")
    names = ", ".join(f"{a.name} ({a.digest[:19]})" for a in found.values())
    return None, (
        f"{len(found)} artifacts {what} could be deployed: {names}; choose one with"
        " with.artifact (a name pattern)"
    ).replace("  ", " ")


class DeployStage:
    name = "deploy"
    description = "Deploy the run's artifact (by digest) to an environment, health-gated"
    task_type = "deploy"

    def validate(self, spec: StageSpec) -> Iterable[tuple[str, str]]:
        params, problems = read_parameters(DeployParameters, spec, self.name)
        yield from problems
        if spec.run:
            yield "run", "the deploy kind runs no commands; remove 'run'"
        if params is not None and params.promote_from and params.artifact:
            yield (
                "with.artifact",
                "a promotion deploys what runs in promote_from: remove 'artifact'",
            )
        if params is not None and params.promote_from == params.environment:
            yield "with.promote_from", "an environment cannot be promoted from itself"

    async def run(self, ctx: StageContext) -> StageOutcome:
        params, problems = read_parameters(DeployParameters, ctx.spec, self.name)
        if params is None:
            return invalid_parameters(problems)
        digest = ""
        if not params.promote_from:
            artifact, why = choose(ctx.artifacts, params.artifact)
            if artifact is None:
                await ctx.log_line(why)
                return StageOutcome(StageStatus.FAILED, why, error_type="no_artifact")
            digest = artifact.digest
            await ctx.log_line(
                f"deploying {artifact.name} {artifact.version} ({digest}) to {params.environment}"
            )
        else:
            await ctx.log_line(
                f"promoting what runs in {params.promote_from} to {params.environment}"
            )
        try:
            deployment = await ctx.deployments.deploy(
                params.environment, digest, promote_from=params.promote_from
            )
        except DeploymentError as exc:
            await ctx.log_line(f"refused: {exc}")
            return StageOutcome(StageStatus.FAILED, str(exc), error_type="deployment_refused")
        attributes = {
            "deployment.environment.name": deployment.environment,
            "deployment.id": deployment.id,
            "deployment.status": deployment.status.value,
            "artifact.hash": deployment.digest,
            "artifact.version": deployment.version,
        }
        summary = (
            f"deployment {deployment.id} of {deployment.version} to {deployment.environment}"
            f" {deployment.status.value}"
        )
        if deployment.status is DeploymentStatus.HEALTHY:
            return StageOutcome(StageStatus.SUCCEEDED, summary, span_attributes=attributes)
        return StageOutcome(
            StageStatus.FAILED,
            f"{summary}: {deployment.reason}",
            error_type=f"deployment_{deployment.status.value}",
            span_attributes=attributes,
        )


@hookimpl
def conveyor_stage_kinds() -> list[StageKind]:
    return [DeployStage()]
