"""What stage kinds return as artifacts, checked; and how artifacts are
shown: on a stage's span, and as lists of files in reasons and logs."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

from conveyor.daemon.artifacts.model import DIGEST_RE, FILE, OCI_IMAGE, Artifact, ArtifactOutput
from conveyor.daemon.telemetry import attributes as a

#: Changed files named in a stage's reason and log; all are counted.
LISTED_FILES: Final = 20
#: Longest tag, as Docker allows.
MAX_TAG: Final = 128


class InvalidOutput(Exception):
    """A stage kind returned an artifact output the daemon cannot record."""


def check_output(out: ArtifactOutput) -> None:
    """Raise :class:`InvalidOutput` saying what is wrong with ``out``."""
    if not isinstance(out, ArtifactOutput):
        raise InvalidOutput(f"{out!r} is not an ArtifactOutput")
    if not isinstance(out.digest, str) or not DIGEST_RE.match(out.digest):
        raise InvalidOutput(f"digest {out.digest!r} is not sha256:<64 lower-case hex digits>")
    for what, value in (("kind", out.kind), ("name", out.name)):
        if not isinstance(value, str) or not value.strip() or not value.isprintable():
            raise InvalidOutput(f"{what} {value!r} must be a non-empty printable string")
    for tag in out.tags:
        if (
            not isinstance(tag, str)
            or not tag
            or len(tag) > MAX_TAG
            or not tag.isprintable()
            or any(c.isspace() or c in "/:@" for c in tag)
        ):
            raise InvalidOutput(
                f"tag {tag!r} must be 1 to {MAX_TAG} printable characters without spaces, '/',"
                " ':' or '@'"
            )
    if out.manifest_digest and not DIGEST_RE.match(out.manifest_digest):
        raise InvalidOutput(f"manifest_digest {out.manifest_digest!r} is not sha256:<hex>")
    if not isinstance(out.size, int) or out.size < 0:
        raise InvalidOutput(f"size {out.size!r} must be a non-negative integer")
    for key, value in out.attributes.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidOutput(f"attribute {key!r}: {value!r}: keys and values must be strings")


def span_attributes(artifacts: Sequence[Artifact]) -> dict[str, str | bool | int | Sequence[str]]:
    """The artifact attributes of a stage span (from the first artifact;
    ``conveyor.artifact.count`` says how many there were)."""
    if not artifacts:
        return {}
    first = artifacts[0]
    attributes: dict[str, str | bool | int | Sequence[str]] = {
        a.ARTIFACT_HASH: first.digest,
        a.ARTIFACT_COUNT: len(artifacts),
        a.ARTIFACT_REPRODUCIBLE: first.reproducible,
    }
    if first.version:
        attributes[a.ARTIFACT_VERSION] = first.version
    if first.kind == OCI_IMAGE:
        attributes[a.CONTAINER_IMAGE_NAME] = first.name
        if first.tags:
            attributes[a.CONTAINER_IMAGE_TAGS] = list(first.tags)
    elif first.kind == FILE:
        attributes[a.ARTIFACT_FILENAME] = first.name
    if first.manifest_digest:
        attributes[a.OCI_MANIFEST_DIGEST] = first.manifest_digest
    if first.provenance:
        envelope = hashlib.sha256(first.provenance.encode()).hexdigest()
        attributes[a.ARTIFACT_ATTESTATION_HASH] = f"sha256:{envelope}"
        attributes[a.ARTIFACT_SIGNING_KEY] = first.key_id
    return attributes


def listing(paths: Sequence[str], limit: int = LISTED_FILES) -> str:
    """``a, b, c`` or ``a, b, ... and 7 more``."""
    shown = ", ".join(paths[:limit])
    return f"{shown} ... and {len(paths) - limit} more" if len(paths) > limit else shown


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
