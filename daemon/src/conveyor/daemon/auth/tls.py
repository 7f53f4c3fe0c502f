"""TLS for TCP listeners, with certificates re-read when their files change.

grpcio asks :meth:`ReloadingCertificates.fetch` before every TLS handshake
(``grpc.dynamic_ssl_server_credentials``); it compares the files' size,
modification time and inode with what it loaded and, when one changed,
loads them again, so a renewed certificate (certbot, cert-manager, a cron
job) is served from the next connection on, without a restart or a signal.
SIGHUP also forces a re-read. A certificate and key that do not match, or
files that cannot be read (half-written during a renewal), are logged and
the previous ones stay in use; at start-up they are an error.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import types

log = logging.getLogger(__name__)


class TlsError(Exception):
    """The TLS files cannot be used; the message says which and why."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    #: CA certificates for client certificates (mutual TLS); None: none asked.
    client_ca: Path | None = None


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple[tuple[int, int, int], ...]
    configuration: grpc.ServerCertificateConfiguration
    #: The certificate's subject, for the log.
    subject: str


def _stamp(path: Path) -> tuple[int, int, int]:
    info = os.stat(path)
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _load(files: TlsFiles) -> _Loaded:
    """Read and check the files (blocking). Raises TlsError."""
    paths = [files.cert, files.key, *([files.client_ca] if files.client_ca else [])]
    try:
        stamp = tuple(_stamp(path) for path in paths)
        cert_pem = files.cert.read_bytes()
        key_pem = files.key.read_bytes()
        ca_pem = files.client_ca.read_bytes() if files.client_ca else None
    except OSError as exc:
        raise TlsError(f"cannot read {exc.filename}: {exc.strerror}") from None
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise TlsError(f"{files.cert}: not a PEM certificate chain ({exc})") from None
    try:
        key: types.PrivateKeyTypes = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise TlsError(f"{files.key}: not an unencrypted PEM private key ({exc})") from None
    if chain[0].public_key() != key.public_key():
        raise TlsError(f"{files.key} is not the key of the certificate in {files.cert}")
    if ca_pem is not None:
        try:
            x509.load_pem_x509_certificates(ca_pem)
        except ValueError as exc:
            raise TlsError(f"{files.client_ca}: not PEM CA certificates ({exc})") from None
    configuration = grpc.ssl_server_certificate_configuration(
        [(key_pem, cert_pem)], root_certificates=ca_pem
    )
    return _Loaded(stamp, configuration, chain[0].subject.rfc4514_string())


class ReloadingCertificates:
    """The server's certificate configuration, re-read when its files change."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._loaded = _load(files)
        self._lock = threading.Lock()
        self._forced = False
        #: How many times new files were taken into use after the first load.
        self.reloads = 0

    def force_reload(self) -> None:
        """Re-read the files before the next handshake even if they look unchanged."""
        self._forced = True

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """grpcio's fetcher: a new configuration, or None to keep the current one."""
        paths = [self.files.cert, self.files.key]
        if self.files.client_ca:
            paths.append(self.files.client_ca)
        try:
            stamp = tuple(_stamp(path) for path in paths)
        except OSError:
            return None  # a file is being replaced; the next handshake looks again
        if stamp == self._loaded.stamp and not self._forced:
            return None
        with self._lock:
            self._forced = False
            try:
                loaded = _load(self.files)
            except TlsError as exc:
                log.warning("TLS files changed but cannot be used (%s); keeping the previous", exc)
                # do not try again until they change once more
                self._loaded = _Loaded(stamp, self._loaded.configuration, self._loaded.subject)
                return None
            self._loaded = loaded
            self.reloads += 1
        log.info("TLS certificate reloaded: %s", loaded.subject)
        return loaded.configuration

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._loaded.configuration,
            self.fetch,  # type: ignore[arg-type]  # grpcio takes None for "no change"
            require_client_authentication=self.files.client_ca is not None,
        )
