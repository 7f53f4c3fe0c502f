"""Signed provenance: DSSE envelopes around in-toto Statements, checked offline.

Conveyor signs one in-toto Statement v1 (subject: the artifact's name and
digest; predicate: SLSA provenance v1) per artifact, wrapped in a DSSE
envelope (https://github.com/secure-systems-lab/dsse) and signed with the
daemon's Ed25519 key. This module holds what both sides share: the
pre-authentication encoding (PAE), and :func:`verify_envelope`, which checks
an envelope against a public key and an expected subject digest. The daemon
signs with the same encoding; ``conveyor artifacts verify`` checks with this.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

#: The payload type of an in-toto Statement in a DSSE envelope.
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"


class VerificationError(Exception):
    """The envelope, its signature or its statement does not check out; the
    message says what differs."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is actually signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def key_id(public_key: Ed25519PublicKey) -> str:
    """A stable id for a public key: ``sha256:`` of its raw 32 bytes."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = load_pem_public_key(data)
    except ValueError as exc:
        raise VerificationError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise VerificationError("the public key is not an Ed25519 key")
    return key


@dataclass(frozen=True)
class VerifiedStatement:
    """What a successful verification established."""

    key_id: str
    statement: dict[str, Any]

    @property
    def predicate(self) -> dict[str, Any]:
        predicate = self.statement.get("predicate")
        return predicate if isinstance(predicate, dict) else {}


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise VerificationError(f"{what} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"{what} is not valid base64") from None


def verify_envelope(
    envelope_json: str | bytes,
    public_key: Ed25519PublicKey,
    *,
    subject_digest: str,
) -> VerifiedStatement:
    """Check a DSSE envelope: a signature by ``public_key`` over the PAE of
    its payload, an in-toto Statement v1 with SLSA provenance v1, and a
    subject whose digest is ``subject_digest`` (``sha256:<hex>``).

    Error handling: raises :class:`VerificationError` naming the first thing
    that differs (malformed envelope, unknown or different key, bad
    signature, wrong statement type, digest mismatch).
    """
    try:
        envelope = json.loads(envelope_json)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerificationError(f"the envelope is not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise VerificationError("the envelope is not a JSON object")
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise VerificationError(
            f"payloadType is {envelope.get('payloadType')!r}, expected {PAYLOAD_TYPE!r}"
        )
    payload = _b64(envelope.get("payload"), "payload")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise VerificationError("the envelope has no signatures")
    expected_id = key_id(public_key)
    message = pae(PAYLOAD_TYPE, payload)
    ids: list[str] = []
    verified_by = ""
    for entry in signatures:
        if not isinstance(entry, dict):
            raise VerificationError("a signature entry is not an object")
        keyid = str(entry.get("keyid", ""))
        ids.append(keyid or "(no keyid)")
        if keyid and keyid != expected_id:
            continue
        try:
            public_key.verify(_b64(entry.get("sig"), "signature"), message)
        except InvalidSignature:
            raise VerificationError(
                f"the signature by {expected_id} does not match the statement"
                " (the statement or the signature was changed)"
            ) from None
        verified_by = expected_id
        break
    if not verified_by:
        raise VerificationError(
            f"signed by {', '.join(ids)}, not by the expected key {expected_id}"
        )
    try:
        statement = json.loads(payload)
    except ValueError as exc:
        raise VerificationError(f"the statement is not JSON: {exc}") from None
    if not isinstance(statement, dict):
        raise VerificationError("the statement is not a JSON object")
    if statement.get("_type") != STATEMENT_TYPE:
        raise VerificationError(
            f"statement _type is {statement.get('_type')!r}, expected {STATEMENT_TYPE!r}"
        )
    if statement.get("predicateType") != SLSA_PROVENANCE_V1:
        raise VerificationError(
            f"predicateType is {statement.get('predicateType')!r}, expected {SLSA_PROVENANCE_V1!r}"
        )
    algorithm, _, hex_digest = subject_digest.partition(":")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise VerificationError("the statement has no subject")
    found = [
        s.get("digest", {}).get(algorithm)
        for s in subjects
        if isinstance(s, dict) and isinstance(s.get("digest"), dict)
    ]
    if hex_digest not in found:
        raise VerificationError(
            f"the statement's subject digest is {algorithm}:{found[0] if found else '?'},"
            f" not {subject_digest}"
        )
    return VerifiedStatement(key_id=verified_by, statement=statement)
