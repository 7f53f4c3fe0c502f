"""TLS on TCP listeners: mutual TLS, where the client certificate's common
name is the caller's identity; certificates re-read when their files
change; the CLI's TLS and token options."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from conveyor.v1 import auth_pb2, runs_pb2, server_pb2, service_pb2_grpc
from tests.support.daemon import DaemonProcess, bearer
from tests.support.ports import free_port
from tests.support.tls import CertificateAuthority, Issued


@dataclass
class TlsSetup:
    daemon: DaemonProcess
    port: int
    ca: CertificateAuthority
    server: Issued
    alice: Issued
    stranger: Issued

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self, client: Issued | None) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca.path.read_bytes(),
            private_key=client.key.read_bytes() if client else None,
            certificate_chain=client.cert.read_bytes() if client else None,
        )
        return grpc.secure_channel(self.address, credentials)


@pytest.fixture(scope="module")
def tls() -> Iterator[TlsSetup]:
    root = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    try:
        ca = CertificateAuthority(root / "pki")
        server = ca.issue("conveyord", "server", server=True)
        alice = ca.issue("alice", "alice")
        stranger = CertificateAuthority(root / "other", "other").issue("alice", "stranger")
        home = root / "home"
        home.mkdir()
        (home / "access.toml").write_text('[identities.alice]\nroles = ["viewer"]\n')
        port = free_port()
        daemon = DaemonProcess(
            home,
            args=[
                "--listen",
                f"unix://{home / 'conveyord.sock'}",
                "--listen",
                f"127.0.0.1:{port}",
                "--tls-cert-file",
                str(server.cert),
                "--tls-key-file",
                str(server.key),
                "--tls-client-ca-file",
                str(ca.path),
            ],
        ).start()
        try:
            yield TlsSetup(daemon, port, ca, server, alice, stranger)
        finally:
            daemon.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_client_certificate_is_the_callers_identity(tls: TlsSetup) -> None:
    with tls.channel(tls.alice) as channel:
        stub = service_pb2_grpc.ConveyorServiceStub(channel)
        me = stub.WhoAmI(auth_pb2.WhoAmIRequest(), timeout=10)
        assert (me.identity, me.auth_method, list(me.roles)) == ("alice", "tls", ["viewer"])
        assert stub.GetServerStatus(server_pb2.GetServerStatusRequest(), timeout=10).version
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitRun(runs_pb2.SubmitRunRequest(repository="/srv/x", ref="main"), timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # a token sent along is the identity of the call
        token = tls.daemon.issue_token("ci-bot", ("developer",), repositories=("/srv",))
        me = stub.WhoAmI(auth_pb2.WhoAmIRequest(), timeout=10, metadata=bearer(token))
        assert (me.identity, me.auth_method) == ("ci-bot", "token")


@pytest.mark.parametrize("client", ["none", "other CA"])
def test_a_client_without_a_trusted_certificate_is_refused(tls: TlsSetup, client: str) -> None:
    with tls.channel(None if client == "none" else tls.stranger) as channel:
        stub = service_pb2_grpc.ConveyorServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetServerStatus(server_pb2.GetServerStatusRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, "the handshake fails"


def _served_serial(tls: TlsSetup) -> int:
    """The serial number of the certificate the daemon serves a new connection."""
    context = ssl.create_default_context(cafile=str(tls.ca.path))
    context.load_cert_chain(str(tls.alice.cert), str(tls.alice.key))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", tls.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as wrapped,
    ):
        der = wrapped.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_a_renewed_certificate_is_served_without_a_restart(tls: TlsSetup) -> None:
    assert _served_serial(tls) == tls.server.serial
    renewed = tls.ca.issue("conveyord", "server", server=True)  # same files, new pair
    assert renewed.cert == tls.server.cert
    assert _served_serial(tls) == renewed.serial
    with tls.channel(tls.alice) as channel:
        stub = service_pb2_grpc.ConveyorServiceStub(channel)
        assert stub.WhoAmI(auth_pb2.WhoAmIRequest(), timeout=10).identity == "alice"
    assert "TLS certificate reloaded" in tls.daemon.log_path.read_text()
    # a key that does not match its certificate is not taken: the last good pair stays
    tls.server.key.write_bytes(tls.alice.key.read_bytes())
    assert _served_serial(tls) == renewed.serial
    assert "cannot be used" in tls.daemon.log_path.read_text()
    tls.ca.issue("conveyord", "server", server=True)


def test_the_cli_speaks_tls_with_a_token_file(tls: TlsSetup, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(tls.daemon.issue_token("cli-user", ("viewer",)) + "\n")
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor.client.cli",
            "--address",
            tls.address,
            "--tls-ca",
            str(tls.ca.path),
            "--tls-cert",
            str(tls.alice.cert),
            "--tls-key",
            str(tls.alice.key),
            "--token-file",
            str(token_file),
            "whoami",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "identity:      cli-user" in result.stdout
    assert "authenticated: token" in result.stdout
