"""Which listen addresses need TLS and authentication: loopback is an IP
literal in 127.0.0.0/8 or ::1, nothing else."""

from __future__ import annotations

import pytest

from conveyor.client.address import is_loopback_address, needs_tls_by_default
from conveyor.daemon.config import ConfigError, load_config

HOME = {"CONVEYOR_HOME": "/nonexistent/conveyor-home"}
TLS = {"CONVEYOR_TLS_CERT_FILE": "/etc/conveyor/cert.pem", "CONVEYOR_TLS_KEY_FILE": "/k.pem"}


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.200.3.4", True),
        ("[::1]", True),
        ("::1", True),
        ("localhost", False),
        ("127.attacker.example", False),
        ("127.0.0.1.nip.io", False),
        ("0.0.0.0", False),
        ("[::]", False),
        ("10.0.0.1", False),
    ],
)
def test_loopback_is_an_ip_literal(host: str, loopback: bool) -> None:
    assert is_loopback_address(host) is loopback


@pytest.mark.parametrize("host", ["127.attacker.example", "localhost", "0.0.0.0", "[::]"])
def test_a_non_loopback_address_without_tls_is_refused_and_says_why(host: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(environ={**HOME, "CONVEYOR_LISTEN": f"{host}:7474"})
    message = str(err.value)
    assert message.startswith(f"listen: invalid value '{host}:7474' from environment variable")
    assert "only loopback addresses are allowed without TLS and authentication" in message
    assert "TLS is off" in message and "allow_insecure_non_loopback" in message


def test_loopback_tcp_needs_no_tls() -> None:
    config = load_config(environ={**HOME, "CONVEYOR_LISTEN": "127.0.0.1:7474,[::1]:7474"})
    assert config.listen == ["127.0.0.1:7474", "[::1]:7474"]


def test_tls_and_auth_allow_any_address() -> None:
    config = load_config(environ={**HOME, **TLS, "CONVEYOR_LISTEN": "0.0.0.0:7474"})
    assert config.tls and config.auth


def test_tls_without_auth_is_refused_beyond_loopback() -> None:
    with pytest.raises(ConfigError, match="auth is off"):
        load_config(
            environ={**HOME, **TLS, "CONVEYOR_LISTEN": "0.0.0.0:7474", "CONVEYOR_AUTH": "false"}
        )


def test_an_explicit_setting_forces_an_insecure_address() -> None:
    config = load_config(
        environ={**HOME, "CONVEYOR_LISTEN": "0.0.0.0:7474"},
        overrides={"allow_insecure_non_loopback": True},
    )
    assert config.listen == ["0.0.0.0:7474"]


def test_a_certificate_needs_its_key_and_client_cas_need_tls() -> None:
    with pytest.raises(ConfigError, match="tls_key_file: required with tls_cert_file"):
        load_config(environ={**HOME, "CONVEYOR_TLS_CERT_FILE": "/c.pem"})
    with pytest.raises(ConfigError, match="tls_client_ca_file: needs tls_cert_file"):
        load_config(environ={**HOME, "CONVEYOR_TLS_CLIENT_CA_FILE": "/ca.pem"})


def test_socket_modes_are_octal() -> None:
    assert load_config(environ={**HOME, "CONVEYOR_SOCKET_MODE": "0660"}).socket_mode == "0660"
    with pytest.raises(ConfigError, match="octal file mode"):
        load_config(environ={**HOME, "CONVEYOR_SOCKET_MODE": "rw-rw----"})


@pytest.mark.parametrize(
    ("address", "tls"),
    [
        ("unix:///run/conveyor.sock", False),
        ("127.0.0.1:7474", False),
        ("[::1]:7474", False),
        ("localhost:7474", True),
        ("ci.example.com:7474", True),
        ("dns:///ci.example.com:443", True),
    ],
)
def test_clients_use_tls_beyond_loopback(address: str, tls: bool) -> None:
    assert needs_tls_by_default(address) is tls
