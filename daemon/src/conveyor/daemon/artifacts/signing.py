"""The daemon's signing key: Ed25519, generated at first start, kept in the
home (``signing-key.pem``, mode 0600, created so: never readable by others,
not even for an instant), and used to sign provenance envelopes.

Blocking (file I/O and signing are quick, but call :func:`load_or_create`
from a thread at start-up).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from conveyor.client.provenance import PAYLOAD_TYPE, key_id, pae

KEY_FILE = "signing-key.pem"


class SigningKeyError(Exception):
    """The key file exists but cannot be used; the message says why."""


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    def public_pem(self) -> str:
        return self.public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()

    def sign_statement(self, statement: dict[str, Any]) -> str:
        """A DSSE envelope (JSON text) holding ``statement``, signed."""
        payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
        signature = self.private.sign(pae(PAYLOAD_TYPE, payload))
        envelope = {
            "payloadType": PAYLOAD_TYPE,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": self.key_id, "sig": base64.b64encode(signature).decode()}],
        }
        return json.dumps(envelope, separators=(",", ":"))


def load_or_create(home: Path) -> SigningKey:
    """The key in ``home``, made on first use.

    Error handling: a key file that is not an Ed25519 PEM private key, or
    that others can read, raises :class:`SigningKeyError` (a key others
    could read signs nothing trustworthy).
    """
    path = home / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return _load(path)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    return SigningKey(private)


def _load(path: Path) -> SigningKey:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SigningKeyError(
            f"{path} is readable by others (mode {mode:o}); chmod 600 it, or remove it to"
            " make a new key (earlier provenance then no longer verifies with the new key)"
        )
    data = path.read_bytes()
    if not data.strip():
        # a crash between create and write left it empty: start over
        path.unlink()
        return load_or_create(path.parent)
    try:
        private = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path}: not a PEM private key: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: not an Ed25519 key")
    return SigningKey(private)
