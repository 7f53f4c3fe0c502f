"""Attribute names and values from the OpenTelemetry semantic conventions
(CICD, VCS, error, deployment, artifact, enduser registries), and Conveyor's
own (``conveyor.*``)."""

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
PIPELINE_RUN_URL = "cicd.pipeline.run.url.full"
TASK_RUN_URL = "cicd.pipeline.task.run.url.full"
WORKER_ID = "cicd.worker.id"
WORKER_NAME = "cicd.worker.name"
WORKER_URL = "cicd.worker.url.full"
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

#: The built-in stage kinds mapped to the well-known ``cicd.pipeline.task.type``
#: values (``build``, ``test``, ``deploy``): analysis and tests are ``test``,
#: making and publishing an artifact ``build``. ``run`` (any command) fits none
#: and is reported under its own name, a custom value as the conventions allow.
TASK_TYPES = {
    "lint": "test",
    "test": "test",
    "scan": "test",
    "build": "build",
    "push": "build",
    "file": "build",
    "deploy": "deploy",
}


def task_type(kind: str, stage_kind: object = None) -> str:
    """The ``cicd.pipeline.task.type`` of stages of ``kind``: what the stage
    kind object declares in its optional ``task_type`` attribute, else the
    built-in mapping, else the kind's name."""
    declared = getattr(stage_kind, "task_type", None)
    if isinstance(declared, str) and declared:
        return declared
    return TASK_TYPES.get(kind, kind)


def ref_name(ref: str) -> str:
    """``refs/heads/main`` -> ``main``, ``refs/tags/v1`` -> ``v1``; other refs as they are."""
    for prefix in ("refs/heads/", "refs/tags/"):
        if ref.startswith(prefix):
            return ref.removeprefix(prefix)
    return ref
