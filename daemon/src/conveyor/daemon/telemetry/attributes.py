"""Attribute names and values from the OpenTelemetry semantic conventions
(CICD, VCS, error, deployment, artifact, enduser registries)."""

from __future__ import annotations

from conveyor.daemon.records import RunStatus, StageStatus

# CICD
PIPELINE_NAME = "cicd.pipeline.name"
PIPELINE_RUN_ID = "cicd.pipeline.run.id"
PIPELINE_RESULT = "cicd.pipeline.result"
PIPELINE_ACTION_NAME = "cicd.pipeline.action.name"
PIPELINE_RUN_STATE = "cicd.pipeline.run.state"
TASK_NAME = "cicd.pipeline.task.name"
TASK_RUN_ID = "cicd.pipeline.task.run.id"
TASK_TYPE = "cicd.pipeline.task.type"
TASK_RUN_RESULT = "cicd.pipeline.task.run.result"
# VCS
REPOSITORY_URL = "vcs.repository.url.full"
REF_HEAD_NAME = "vcs.ref.head.name"
REF_HEAD_REVISION = "vcs.ref.head.revision"
REF_HEAD_TYPE = "vcs.ref.head.type"
# General
ERROR_TYPE = "error.type"
ENDUSER_ID = "enduser.id"
# Artifacts and deployments (used by the build, push and deploy stages)
ARTIFACT_VERSION = "artifact.version"
ARTIFACT_HASH = "artifact.hash"
ARTIFACT_PURL = "artifact.purl"
ARTIFACT_ATTESTATION_ID = "artifact.attestation.id"
ARTIFACT_ATTESTATION_HASH = "artifact.attestation.hash"
ARTIFACT_FILENAME = "artifact.filename"
CONTAINER_IMAGE_NAME = "container.image.name"
CONTAINER_IMAGE_TAGS = "container.image.tags"
OCI_MANIFEST_DIGEST = "oci.manifest.digest"
DEPLOYMENT_ENVIRONMENT = "deployment.environment.name"
DEPLOYMENT_ID = "deployment.id"
DEPLOYMENT_STATUS = "deployment.status"
# Conveyor's own
RUN_NUMBER = "conveyor.run.number"
RUN_TRIGGER = "conveyor.run.trigger"
RUN_REASON = "conveyor.run.reason"
TASK_ATTEMPTS = "conveyor.task.attempts"
TASK_EXIT_CODE = "conveyor.task.exit_code"
TASK_KIND = "conveyor.task.kind"
RUN_VERSION = "conveyor.run.version"
ARTIFACT_COUNT = "conveyor.artifact.count"
ARTIFACT_REPRODUCIBLE = "conveyor.artifact.reproducible"
ARTIFACT_SIGNING_KEY = "conveyor.artifact.signing_key"
CACHE_HIT = "conveyor.cache.hit"
CACHE_ORIGINAL_RUN = "conveyor.cache.original_run.id"

RUN_RESULTS: dict[RunStatus, str] = {
    RunStatus.SUCCEEDED: "success",
    RunStatus.FAILED: "failure",
    RunStatus.CANCELLED: "cancellation",
    RunStatus.TIMED_OUT: "timeout",
    RunStatus.INTERRUPTED: "error",
}

TASK_RESULTS: dict[StageStatus, str] = {
    StageStatus.SUCCEEDED: "success",
    StageStatus.FAILED: "failure",
    StageStatus.CANCELLED: "cancellation",
    StageStatus.TIMED_OUT: "timeout",
    StageStatus.SKIPPED: "skip",
    StageStatus.INTERRUPTED: "error",
}

#: Stage kinds mapped to the well-known ``cicd.pipeline.task.type`` values;
#: other kinds are reported under their own name.
TASK_TYPES = {
    "build": "build",
    "push": "build",
    "test": "test",
    "lint": "test",
    "scan": "test",
    "deploy": "deploy",
}


def ref_name_and_type(ref: str) -> tuple[str, str | None]:
    """``refs/heads/main`` -> (``main``, ``branch``); a bare name has no known type."""
    if ref.startswith("refs/heads/"):
        return ref.removeprefix("refs/heads/"), "branch"
    if ref.startswith("refs/tags/"):
        return ref.removeprefix("refs/tags/"), "tag"
    return ref, None
