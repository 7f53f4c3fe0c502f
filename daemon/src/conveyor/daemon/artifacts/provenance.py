"""SLSA provenance v1 for an artifact, as an in-toto Statement v1.

See https://slsa.dev/spec/v1.0/provenance and
https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md.
The statement names the artifact (subject: name and digest), the commit and
repository it was built from (resolved dependencies), the build parameters
(the stage's kind and ``with:``), the run that built it, when, and this
daemon as the builder. When the workspace did not equal the commit and the
pipeline allowed it, the changed files are recorded and the build is marked
as not reproducible from the commit.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor.client.provenance import SLSA_PROVENANCE_V1, STATEMENT_TYPE

#: ``buildType`` of builds run by Conveyor: what ``externalParameters`` mean.
BUILD_TYPE = "https://github.com/conveyor-ci/conveyor/build-types/stage/v1"


def rfc3339(seconds: float) -> str:
    return (
        datetime.datetime.fromtimestamp(seconds, datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


@dataclass(frozen=True)
class BuildFacts:
    """What provenance says about one artifact's build."""

    subject_name: str
    #: ``sha256:<hex>``
    digest: str
    repository: str
    ref: str
    commit: str
    pipeline: str
    run_id: str
    run_number: int
    stage: str
    stage_kind: str
    parameters: Mapping[str, Any]
    started_at: float
    finished_at: float
    builder_id: str
    builder_version: str
    version: str = ""
    #: Tracked files that differed from the commit (an allowed dirty build).
    changed_files: Sequence[str] = field(default_factory=tuple)
    #: How many files differed, when ``changed_files`` lists only the first.
    changed_files_total: int = 0
    trace_id: str = ""
    #: More names of the same artifact, ``(name, "sha256:<hex>")``: where
    #: it was pushed and the manifest digest the registry gave it.
    other_subjects: Sequence[tuple[str, str]] = field(default_factory=tuple)

    def to_json(self) -> str:
        """The facts as JSON, to sign them again later (values the pipeline
        file gave that JSON lacks, such as dates, become strings)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> BuildFacts:
        data = json.loads(text)
        data["changed_files"] = tuple(data.get("changed_files", ()))
        data["other_subjects"] = tuple(
            (str(name), str(digest)) for name, digest in data.get("other_subjects", ())
        )
        return cls(**data)


def _subject(name: str, digest: str) -> dict[str, Any]:
    algorithm, _, hex_digest = digest.partition(":")
    return {"name": name, "digest": {algorithm: hex_digest}}


def statement(facts: BuildFacts) -> dict[str, Any]:
    """The in-toto Statement v1 (a JSON-ready dict) for ``facts``: the
    artifact, then its other names, as subjects."""
    repo_uri = facts.repository
    if repo_uri.startswith("/"):
        repo_uri = f"git+file://{repo_uri}"
    reproducible = not facts.changed_files
    internal: dict[str, Any] = {
        "pipeline": facts.pipeline,
        "runNumber": facts.run_number,
        "stage": facts.stage,
        "reproducibleFromCommit": reproducible,
    }
    if facts.changed_files:
        internal["changedFiles"] = list(facts.changed_files)
        if facts.changed_files_total > len(facts.changed_files):
            internal["changedFilesTotal"] = facts.changed_files_total
    if facts.trace_id:
        internal["traceId"] = facts.trace_id
    external: dict[str, Any] = {
        "repository": facts.repository,
        "ref": facts.ref,
        "stageKind": facts.stage_kind,
        "parameters": dict(facts.parameters),
    }
    if facts.version:
        external["version"] = facts.version
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            _subject(facts.subject_name, facts.digest),
            *(_subject(name, digest) for name, digest in facts.other_subjects),
        ],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": internal,
                "resolvedDependencies": [
                    {
                        "uri": f"{repo_uri}@{facts.ref}" if facts.ref else repo_uri,
                        "digest": {"gitCommit": facts.commit},
                    }
                ],
            },
            "runDetails": {
                "builder": {
                    "id": facts.builder_id,
                    "version": {"conveyord": facts.builder_version},
                },
                "metadata": {
                    "invocationId": facts.run_id,
                    "startedOn": rfc3339(facts.started_at),
                    "finishedOn": rfc3339(facts.finished_at),
                },
            },
        },
    }
