"""The encrypted secrets file and its key.

``secrets.enc`` in the daemon's home holds the secrets defined with
``conveyord secrets set``: a JSON object (name to value) sealed with
AES-256-GCM. The key is never stored with the data: it comes from the
environment variable :data:`KEY_VARIABLE` (base64) or from the key file
(setting ``secrets_key_file``, ``/etc/conveyor/secrets.key`` by default:
one line of base64, mode 0600), made by the first ``conveyord secrets set``.

Everything here is blocking (small files): call it from a worker thread
in the daemon.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conveyor.daemon.files import write_all

#: The file, in the home.
SECRETS_FILE: Final = "secrets.enc"
#: Held while the file is rewritten (two ``conveyord secrets set`` at once).
LOCK_FILE: Final = "secrets.lock"
#: The key itself, base64, instead of the key file.
KEY_VARIABLE: Final = "CONVEYOR_SECRETS_KEY"
KEY_BYTES: Final = 32
_MAGIC: Final = b"CONVEYOR-SECRETS-1\n"
_NONCE_BYTES: Final = 12
#: Secret names: environment variable names, as stages get them.
NAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
_NAME_RE: Final = re.compile(NAME_PATTERN)
#: Shortest value: shorter ones would mask ordinary text everywhere.
MIN_VALUE_LENGTH: Final = 4
MAX_VALUE_BYTES: Final = 64 << 10


class SecretsError(Exception):
    """The secrets, their file or their key cannot be used; the message
    says why and what to do."""


def check_name(name: str) -> str:
    """``name`` if it can name a secret, else :class:`SecretsError`."""
    if not _NAME_RE.match(name):
        raise SecretsError(
            f"invalid secret name {name!r}: letters, digits and '_', not starting with a"
            " digit, at most 128 characters (stages get it as an environment variable)"
        )
    if name.upper().startswith("CONVEYOR_"):
        raise SecretsError(f"invalid secret name {name!r}: CONVEYOR_* names are Conveyor's own")
    return name


def check_value(name: str, value: str) -> str:
    """``value`` if it can be the value of a secret, else :class:`SecretsError`."""
    if "\0" in value:
        raise SecretsError(f"secret {name}: the value holds a NUL character")
    if len(value) < MIN_VALUE_LENGTH:
        raise SecretsError(
            f"secret {name}: the value is shorter than {MIN_VALUE_LENGTH} characters;"
            " it could not be masked in logs without masking ordinary text"
        )
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise SecretsError(f"secret {name}: the value is larger than {MAX_VALUE_BYTES} bytes")
    return value


# -- the key ------------------------------------------------------------------------------


def _decode_key(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise SecretsError(f"{source}: not a secrets key ({KEY_BYTES} bytes in base64)")
    return key


def load_key(path: Path, environ: Mapping[str, str]) -> bytes | None:
    """The key: from :data:`KEY_VARIABLE` if set, else from ``path``; None
    when neither exists. A key file that others may read is refused."""
    text = environ.get(KEY_VARIABLE)
    if text:
        return _decode_key(text, f"environment variable {KEY_VARIABLE}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretsError(f"cannot read the secrets key {path}: {exc.strerror}") from None
    with os.fdopen(fd) as file:
        mode = os.fstat(fd).st_mode & 0o777
        if mode & 0o077:
            raise SecretsError(
                f"the secrets key {path} may be read by others (mode {mode:o}); chmod 600 it"
            )
        return _decode_key(file.read(), str(path))


def create_key(path: Path, *, owner: tuple[int, int] | None = None) -> bytes:
    """Make a new key file at ``path`` (mode 0600, created so; its folder
    0700 if it has to be made), owned by ``owner`` (uid, gid) when given.
    Refuses to replace an existing file."""
    key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise SecretsError(f"the secrets key {path} already exists") from None
    except OSError as exc:
        raise SecretsError(f"cannot create the secrets key {path}: {exc.strerror}") from None
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        write_all(fd, base64.b64encode(key) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


# -- the file -----------------------------------------------------------------------------


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file is rewritten (inode, size, mtime), or None
    when there is no file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def read_secrets(path: Path, key: bytes | None) -> dict[str, str]:
    """The secrets in the file at ``path`` (none when there is no file).

    Raises :class:`SecretsError` when there is a file but no key, or the
    key does not open it, or it is not a secrets file.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    if key is None:
        raise SecretsError(
            f"{path} holds secrets but there is no key: set secrets_key_file to the key"
            f" file it was made with, or {KEY_VARIABLE}"
        )
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + _NONCE_BYTES:
        raise SecretsError(f"{path} is not a Conveyor secrets file")
    nonce = data[len(_MAGIC) : len(_MAGIC) + _NONCE_BYTES]
    try:
        plain = AESGCM(key).decrypt(nonce, data[len(_MAGIC) + _NONCE_BYTES :], _MAGIC)
    except InvalidTag:
        raise SecretsError(
            f"{path} cannot be opened with this key (a different key, or a damaged file)"
        ) from None
    values = json.loads(plain)
    if not isinstance(values, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in values.items()
    ):
        raise SecretsError(f"{path} is not a Conveyor secrets file")
    return values


def write_secrets(
    path: Path, key: bytes, values: Mapping[str, str], *, owner: tuple[int, int] | None = None
) -> None:
    """Replace the file at ``path`` with ``values`` sealed with ``key``:
    written to a new file (mode 0600, created so) then renamed over the
    old one, so a reader sees the old secrets or the new, never half."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, json.dumps(dict(values), sort_keys=True).encode(), _MAGIC)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            write_all(fd, _MAGIC + nonce + sealed)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def locked(home: Path) -> Iterator[None]:
    """Hold the home's secrets lock (for a read-modify-write of the file)."""
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
