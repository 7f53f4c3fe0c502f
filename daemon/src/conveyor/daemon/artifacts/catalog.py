"""What the API asks about artifacts: listings, one artifact by reference,
and the key that signs their provenance. Each method checks its input and
raises a domain error (:mod:`conveyor.daemon.errors`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from conveyor.daemon.artifacts.model import DIGEST_RE, Artifact
from conveyor.daemon.artifacts.signing import SigningKey
from conveyor.daemon.errors import InvalidArgument, NotFound
from conveyor.daemon.store.artifacts import ArtifactFilter, ArtifactStore, CacheHit

#: A digest given by its first hex digits (at least 8).
_DIGEST_PREFIX_RE: Final = re.compile(r"^sha256:[0-9a-f]{8,63}$")
_HEX_RE: Final = re.compile(r"^[0-9a-f]{4,40}$")
_PAGE_TOKEN_RE: Final = re.compile(r"^[1-9][0-9]{0,18}$")
MAX_PAGE_SIZE: Final = 500
DEFAULT_PAGE_SIZE: Final = 50
REFERENCE_HINT: Final = (
    "sha256:<digest> (or its first 8+ hex digits), NAME:TAG or NAME@sha256:<digest>"
)


@dataclass(frozen=True)
class ArtifactDetail:
    artifact: Artifact
    #: Re-runs that reused it, newest first.
    cache_hits: list[CacheHit]


class ArtifactCatalog:
    def __init__(self, store: ArtifactStore, key: SigningKey) -> None:
        self.store = store
        self.key = key

    async def find(self, reference: str) -> Artifact:
        """The artifact ``reference`` names: ``sha256:<hex>`` (a unique prefix
        of 8 or more digits will do), ``NAME:TAG`` or ``NAME@sha256:<hex>``.

        Raises InvalidArgument for a malformed or ambiguous reference and
        NotFound when nothing matches.
        """
        reference = reference.strip()
        if not reference:
            raise InvalidArgument(f"artifact is required: {REFERENCE_HINT}", field="artifact")
        if reference.startswith("sha256:"):
            return await self._by_digest(reference)
        if "@" in reference:
            name, _, digest = reference.rpartition("@")
            if not name or not DIGEST_RE.match(digest):
                raise InvalidArgument(
                    f"artifact {reference!r}: after '@' comes a full sha256:<64 hex> digest",
                    field="artifact",
                )
            artifact = await self.store.get(digest)
            if artifact is None or name not in await self.store.names_of(digest):
                raise NotFound(f"no artifact {name}@{digest}", field="artifact")
            return artifact
        name, _, tag = reference.rpartition(":")
        if not name or not tag or "/" in tag:
            raise InvalidArgument(
                f"artifact {reference!r} is not a reference: expected {REFERENCE_HINT}",
                field="artifact",
            )
        artifact = await self.store.tagged(name, tag)
        if artifact is None:
            raise NotFound(f"no artifact is tagged {name}:{tag}", field="artifact")
        return artifact

    async def _by_digest(self, digest: str) -> Artifact:
        if DIGEST_RE.match(digest):
            artifact = await self.store.get(digest)
            if artifact is None:
                raise NotFound(f"no artifact {digest}", field="artifact")
            return artifact
        if not _DIGEST_PREFIX_RE.match(digest):
            raise InvalidArgument(
                f"artifact {digest!r}: a digest is sha256: and 64 lower-case hex digits"
                " (or the first 8 or more of them)",
                field="artifact",
            )
        found = await self.store.with_prefix(digest)
        if not found:
            raise NotFound(f"no artifact digest starts with {digest}", field="artifact")
        if len(found) > 1:
            raise InvalidArgument(
                f"{digest} names more than one artifact ({', '.join(a.digest for a in found)});"
                " give more digits",
                field="artifact",
            )
        return found[0]

    async def get(self, reference: str) -> ArtifactDetail:
        artifact = await self.find(reference)
        return ArtifactDetail(artifact, await self.store.cache_hits(artifact.digest))

    async def list_artifacts(
        self, filt: ArtifactFilter, page_size: int, page_token: str
    ) -> tuple[list[tuple[int, Artifact]], str]:
        """A page of artifacts, newest first, and the next page's token ("" at
        the end). Each comes with its position, which is the token of the
        page after it."""
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"page_size must be between 1 and {MAX_PAGE_SIZE}", field="page_size"
            )
        if page_token and not _PAGE_TOKEN_RE.match(page_token):
            raise InvalidArgument("page_token is malformed", field="page_token")
        if filt.commit_prefix and not _HEX_RE.match(filt.commit_prefix):
            raise InvalidArgument("commit must be 4 to 40 lowercase hex digits", field="commit")
        size = page_size or DEFAULT_PAGE_SIZE
        rows = await self.store.list_artifacts(
            filt, limit=size + 1, before_seq=int(page_token or 0)
        )
        next_token = str(rows[size - 1][0]) if len(rows) > size else ""
        return rows[:size], next_token

    def signing_key(self) -> tuple[str, str]:
        """The daemon's public key: ``(key id, PEM)``."""
        return self.key.key_id, self.key.public_pem()
