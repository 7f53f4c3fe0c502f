"""Start-up refuses what would leave the API open or broken, in one line
that says why: a non-loopback address without TLS, a host name posing as
loopback, a TLS key that is not the certificate's, a broken access file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess
from tests.support.ports import free_port
from tests.support.tls import CertificateAuthority


def _start(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor.daemon.main", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("address", ["0.0.0.0:7474", "127.0.0.1.nip.io:7474", "localhost:7474"])
def test_a_non_loopback_address_without_tls_stops_the_daemon(
    daemon_home: Path, address: str
) -> None:
    result = _start(daemon_home, "--listen", address)
    assert result.returncode == 2
    assert f"listen: invalid value {address!r} from flag --listen" in result.stderr
    assert "only loopback addresses are allowed without TLS and authentication" in result.stderr
    assert "Traceback" not in result.stderr


def test_authentication_off_is_refused_beyond_loopback_even_with_tls(
    daemon_home: Path, tmp_path: Path
) -> None:
    server = CertificateAuthority(tmp_path / "pki").issue("conveyord", "server", server=True)
    result = _start(
        daemon_home,
        "--listen",
        "0.0.0.0:7474",
        "--tls-cert-file",
        str(server.cert),
        "--tls-key-file",
        str(server.key),
        "--no-auth",
    )
    assert result.returncode == 2
    assert "auth is off" in result.stderr and "run commands as the daemon's user" in result.stderr


def test_a_key_that_is_not_the_certificates_stops_the_daemon(
    daemon_home: Path, tmp_path: Path
) -> None:
    ca = CertificateAuthority(tmp_path / "pki")
    server = ca.issue("conveyord", "server", server=True)
    other = ca.issue("someone", "other")
    result = _start(
        daemon_home,
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--tls-cert-file",
        str(server.cert),
        "--tls-key-file",
        str(other.key),
    )
    assert result.returncode == 1
    assert f"ListenError: TLS: {other.key} is not the key of the certificate" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_broken_access_file_stops_the_daemon(daemon_home: Path) -> None:
    (daemon_home / "access.toml").write_text('[identities.ops]\nroles = ["root"]\n')
    result = _start(daemon_home)
    assert result.returncode == 1
    assert "AccessFileError" in result.stderr and "unknown role 'root'" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_access_file_made_after_the_start_is_read_on_sighup(daemon_home: Path) -> None:
    import signal
    import time

    from conveyor.v1 import auth_pb2

    daemon = DaemonProcess(daemon_home).start()
    try:
        assert daemon.stub.WhoAmI(auth_pb2.WhoAmIRequest(), timeout=10).roles == ["admin"]
        (daemon_home / "access.toml").write_text("daemon_user_is_admin = false\n")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "access file reloaded" not in daemon.log_path.read_text():
            assert time.monotonic() < deadline, "no reload logged"
            time.sleep(0.05)
        assert not daemon.stub.WhoAmI(auth_pb2.WhoAmIRequest(), timeout=10).roles
    finally:
        daemon.stop()
