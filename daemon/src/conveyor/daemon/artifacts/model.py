"""What artifacts look like to stage kinds and lifecycle hooks.

A stage kind that produces something returns an :class:`ArtifactOutput` per
artifact in :attr:`StageOutcome.artifacts <conveyor.daemon.stages.StageOutcome>`.
The daemon records it (one record per digest, never rebuilt), signs its
provenance, and from then on hands out :class:`Artifact` snapshots: to later
stages of the run (``ctx.artifacts``), to the ``conveyor_artifact_produced``
hook, and over the API.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

#: A content digest: the algorithm, a colon, lower-case hex.
DIGEST_RE: Final = re.compile(r"^sha256:[0-9a-f]{64}$")

#: ``ArtifactOutput.kind`` of container images (OCI image, identified by the
#: image's config digest, i.e. the image id).
OCI_IMAGE: Final = "oci-image"
#: ``ArtifactOutput.kind`` of files kept in the daemon's content-addressed store.
FILE: Final = "file"


@dataclass(frozen=True)
class ArtifactOutput:
    """One artifact a stage attempt produced or updated.

    Returned in ``StageOutcome.artifacts`` of a SUCCEEDED outcome (the
    outputs of a failed attempt are ignored). An output whose ``digest`` the
    daemon already knows updates that artifact (a ``push`` stage adds where
    it was pushed, and the manifest digest); a new digest creates one.
    """

    #: :data:`OCI_IMAGE`, :data:`FILE`, or a plugin's own kind.
    kind: str
    #: The image repository without tag (``127.0.0.1:5000/demo/app``) or
    #: the file name (``app-1.4.0-py3-none-any.whl``).
    name: str
    #: ``sha256:<64 hex>``: the identity of the artifact's content. For an
    #: image, its config digest (the image id); for a file, its bytes.
    digest: str
    #: Bytes (0 when unknown).
    size: int = 0
    #: Names for the digest given by this stage: image tags (``1.4.0``,
    #: ``sha-1a2b3c4d5e6f``), never the identity.
    tags: tuple[str, ...] = ()
    media_type: str = ""
    #: Set when the stage pushed the artifact: the registry repository it
    #: went to and the manifest digest the registry returned.
    pushed_to: str = ""
    manifest_digest: str = ""
    #: Kind-specific facts worth keeping (small strings), e.g. the Dockerfile.
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StageTiming:
    """When one stage of the producing run ran."""

    name: str
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class Artifact:
    """A recorded artifact, as it was when the snapshot was taken."""

    digest: str
    kind: str
    name: str
    #: SemVer 2.0.0 (see docs/pipeline.md, ``version:``).
    version: str
    tags: tuple[str, ...]
    size: int
    media_type: str
    #: Where it came from: the repository (path on the daemon's machine),
    #: ref and commit the run built, the pipeline, the run and its stage.
    repository: str
    ref: str
    commit: str
    pipeline: str
    run_id: str
    run_number: int
    stage: str
    #: The stages of the producing run that led to it (its stage and every
    #: stage it needs, transitively), with their timings.
    stages: tuple[StageTiming, ...]
    created_at: float
    #: The producing run's trace context (hex), for span links.
    trace_id: str
    span_id: str
    #: Registry repositories it was pushed to, and the manifest digest.
    pushed_to: tuple[str, ...]
    manifest_digest: str
    #: False when the build ran on a workspace whose tracked files differed
    #: from the commit (allowed with ``allow_dirty``); those files are listed.
    reproducible: bool
    changed_files: tuple[str, ...]
    #: The signed provenance: a DSSE envelope (JSON) around an in-toto
    #: Statement v1 with a SLSA provenance v1 predicate, and the id of the
    #: daemon key that signed it.
    provenance: str
    key_id: str
    attributes: Mapping[str, str]
    #: The producing stage's cache key (``sha256:`` over its inputs' git
    #: object ids, the stage as written and its kind); "" when the stage
    #: declared no ``inputs:`` or built on a dirty workspace.
    cache_key: str = ""


@dataclass(frozen=True)
class RegistryCredential:
    """A registry login the daemon holds for stages that name it
    (``with: {credentials: NAME}``); never written in a pipeline file."""

    registry: str
    username: str
    password: str = field(repr=False)
