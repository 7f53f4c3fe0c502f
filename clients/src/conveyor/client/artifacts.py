"""`conveyor artifacts`: listing, details and offline verification of the
signed provenance of artifacts.

Every string from the daemon goes through
:func:`~conveyor.client.terminal.printable` before it is laid out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from conveyor.client import render
from conveyor.client.errors import CommandError
from conveyor.client.provenance import (
    VerificationError,
    VerifiedStatement,
    load_public_key,
    verify_envelope,
)
from conveyor.client.terminal import printable
from conveyor.v1 import artifacts_pb2

#: ``sha256:`` and this many hex digits in listings (a unique prefix the
#: daemon accepts back).
SHORT_DIGEST = 12


def short_digest(digest: str) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    return printable(f"{algorithm}:{hex_digest[:SHORT_DIGEST]}")


def looks_like_artifact(reference: str) -> bool:
    """Whether a command-line argument names an artifact (``sha256:…``,
    ``NAME:TAG``, ``NAME@sha256:…``) rather than a run id."""
    return ":" in reference or "@" in reference


def artifacts_table(artifacts: Sequence[artifacts_pb2.Artifact]) -> list[str]:
    headers = ["DIGEST", "NAME", "VERSION", "TAGS", "RUN", "COMMIT", "CREATED"]
    rows = [
        [
            short_digest(a.digest),
            printable(a.name),
            printable(a.version),
            printable(", ".join(a.tags)) or "-",
            f"#{a.run_number} {printable(a.pipeline)}",
            render.short_commit(a.commit),
            render.format_time(a.created_at),
        ]
        for a in artifacts
    ]
    return render.table(headers, rows)


def stage_timings(stages: Sequence[artifacts_pb2.ArtifactStage]) -> list[str]:
    rows = [
        [
            printable(s.name),
            render.format_time(s.started_at),
            render.format_duration(render.ts_span(s.started_at, s.finished_at)),
        ]
        for s in stages
    ]
    return ["  " + line for line in render.table(["STAGE", "STARTED", "DURATION"], rows)]


def artifact_detail(artifact: artifacts_pb2.Artifact, provenance: str) -> list[str]:
    """`conveyor artifacts show`: the artifact's fields, ``provenance`` (what
    checking it found), the stages that built it and the runs that reused it."""
    a = artifact
    if a.reproducible:
        reproducible = "yes: built from the commit's files"
    else:
        files = ", ".join(printable(f) for f in a.changed_files[:10])
        more = len(a.changed_files) - 10
        reproducible = f"no: tracked files differed from the commit: {files}" + (
            f" ... and {more} more" if more > 0 else ""
        )
    fields = [
        ("name", printable(a.name)),
        ("version", printable(a.version)),
        ("tags", printable(", ".join(a.tags)) or "-"),
        ("size", f"{a.size} bytes"),
        ("media type", printable(a.media_type) or "-"),
        ("repository", printable(a.repository)),
        ("ref", printable(a.ref)),
        ("commit", printable(a.commit)),
        ("run", f"{printable(a.run_id)} #{a.run_number} {printable(a.pipeline)}"),
        ("stage", printable(a.stage)),
        ("created", render.format_time(a.created_at)),
        ("pushed to", printable(", ".join(a.pushed_to)) or "-"),
        ("manifest", printable(a.manifest_digest) or "-"),
        ("reproducible", reproducible),
        ("provenance", provenance),
        ("cache key", printable(a.cache_key) or "- (the stage declared no inputs)"),
        ("trace", f"{printable(a.trace_id) or '-'} (run span {printable(a.span_id) or '-'})"),
    ]
    fields += [(f"[{printable(k)}]", printable(v)) for k, v in sorted(a.attributes.items())]
    lines = [f"artifact {printable(a.digest)}  ({printable(a.kind)})"]
    lines += [f"  {label + ':':<15}{value}" for label, value in fields]
    if a.stages:
        lines += ["", "built by these stages of its run:", *stage_timings(a.stages)]
    if a.cache_hits:
        lines += ["", "reused (cache hits) by:"]
        lines += [
            f"  run {printable(hit.run_id)} #{hit.run_number} stage {printable(hit.stage)}"
            f" at {render.format_time(hit.created_at)}"
            for hit in a.cache_hits
        ]
    return lines


# -- verification ----------------------------------------------------------------


@dataclass(frozen=True)
class TrustedKey:
    """The public key a verification trusts, and where it came from."""

    key: Ed25519PublicKey
    source: str


def key_from_file(path: str) -> TrustedKey:
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return TrustedKey(load_public_key(pem), f"the key in {path}")
    except VerificationError as exc:
        raise CommandError(f"{path}: {exc}") from None


def key_from_daemon(response: artifacts_pb2.GetSigningKeyResponse, address: str) -> TrustedKey:
    try:
        key = load_public_key(response.public_key_pem)
    except VerificationError as exc:
        raise CommandError(f"the daemon's signing key: {exc}") from None
    return TrustedKey(key, f"the daemon's key as served by {address}")


def _dig(data: Any, *path: str | int) -> Any:
    for step in path:
        if isinstance(step, int):
            data = data[step] if isinstance(data, list) and len(data) > step else None
        else:
            data = data.get(step) if isinstance(data, dict) else None
    return data


def record_differences(artifact: artifacts_pb2.Artifact, statement: dict[str, Any]) -> list[str]:
    """Where the daemon's record of the artifact says something else than
    the signed statement: ``"commit: signed X, the record says Y"``."""
    definition = _dig(statement, "predicate", "buildDefinition")
    internal = _dig(definition, "internalParameters") or {}
    metadata = _dig(statement, "predicate", "runDetails", "metadata")
    checks: list[tuple[str, Any, Any]] = [
        ("commit", _dig(definition, "resolvedDependencies", 0, "digest", "gitCommit"),
         artifact.commit),
        ("run", _dig(metadata, "invocationId"), artifact.run_id),
        ("version", _dig(definition, "externalParameters", "version") or "", artifact.version),
        ("pipeline", internal.get("pipeline"), artifact.pipeline),
        ("stage", internal.get("stage"), artifact.stage),
        ("reproducible", internal.get("reproducibleFromCommit"), artifact.reproducible),
    ]  # fmt: skip
    differences = [
        f"{what}: signed {signed!r}, the record says {recorded!r}"
        for what, signed, recorded in checks
        if signed != recorded
    ]
    names = [
        s.get("name")
        for s in statement.get("subject", [])
        if isinstance(s, dict) and isinstance(s.get("digest"), dict)
    ]
    if artifact.name not in names:
        differences.append(f"name: signed {names!r}, the record says {artifact.name!r}")
    if artifact.manifest_digest:
        algorithm, _, hex_digest = artifact.manifest_digest.partition(":")
        signed_digests = [_dig(s, "digest", algorithm) for s in statement.get("subject", [])]
        if hex_digest not in signed_digests:
            differences.append(
                f"manifest digest: {artifact.manifest_digest} is not a subject of the statement"
            )
    return differences


def verify(artifact: artifacts_pb2.Artifact, trusted: TrustedKey) -> VerifiedStatement:
    """Check the artifact's envelope against ``trusted`` and its statement
    against the daemon's record of the artifact.

    Raises :class:`VerificationError` naming what differs.
    """
    if not artifact.provenance:
        raise VerificationError("the daemon holds no provenance for it")
    verified = verify_envelope(artifact.provenance, trusted.key, subject_digest=artifact.digest)
    differences = record_differences(artifact, verified.statement)
    if differences:
        raise VerificationError(
            "the signed statement and the daemon's record differ: " + "; ".join(differences)
        )
    return verified


def verified_lines(
    artifact: artifacts_pb2.Artifact, verified: VerifiedStatement, trusted: TrustedKey
) -> list[str]:
    definition = verified.predicate.get("buildDefinition", {})
    details = verified.predicate.get("runDetails", {})
    dependency = _dig(definition, "resolvedDependencies", 0) or {}
    internal = definition.get("internalParameters", {})
    reproducible = "yes" if internal.get("reproducibleFromCommit") else "no"
    return [
        f"verified {printable(artifact.digest)} ({printable(artifact.name)}):"
        f" signed by {printable(verified.key_id)}",
        f"  trusted key:  {printable(trusted.source)}",
        "  statement:    in-toto Statement v1, SLSA provenance v1, DSSE envelope",
        f"  built from:   {printable(str(dependency.get('uri', '?')))}"
        f" commit {printable(str(_dig(dependency, 'digest', 'gitCommit')))}",
        f"  by:           {printable(str(_dig(details, 'builder', 'id')))}, run"
        f" {printable(str(_dig(details, 'metadata', 'invocationId')))} stage"
        f" {printable(str(internal.get('stage')))}",
        f"  reproducible from the commit: {reproducible}",
    ]
