"""`conveyor whoami`, `admin tokens issue|list|revoke` and `audit` as a user
runs them, against a real daemon on its unix socket and TCP loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.daemon import DaemonProcess
from tests.support.ports import free_port

CLI = [sys.executable, "-m", "conveyor.client.cli"]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, env={**base, **(env or {})}
    )


def test_tokens_are_issued_used_listed_revoked_and_audited(
    daemon_home: Path, tmp_path: Path
) -> None:
    port = free_port()
    daemon = DaemonProcess(
        daemon_home,
        args=[
            "--listen",
            f"unix://{daemon_home / 'conveyord.sock'}",
            "--listen",
            f"127.0.0.1:{port}",
        ],
    ).start()
    unix = ["--address", daemon.address]
    tcp = ["--address", f"127.0.0.1:{port}"]
    try:
        me = _cli(*unix, "whoami")
        assert me.returncode == 0, me.stderr
        assert "authenticated: unix" in me.stdout and "roles:         admin" in me.stdout

        token_file = tmp_path / "ci.token"
        issued = _cli(
            *unix,
            "admin",
            "tokens",
            "issue",
            "ci",
            "--identity",
            "ci-bot",
            "--role",
            "viewer",
            "--expires-in",
            "2h",
            "--write",
            str(token_file),
        )
        assert issued.returncode == 0, issued.stderr
        assert token_file.stat().st_mode & 0o777 == 0o600
        secret = token_file.read_text().strip()
        assert secret.startswith("cvt_") and secret not in issued.stdout

        anonymous = _cli(*tcp, "status")
        assert anonymous.returncode == 1
        assert "unauthenticated: no credentials" in anonymous.stderr
        status = _cli(*tcp, "--token-file", str(token_file), "whoami")
        assert status.returncode == 0, status.stderr
        assert "identity:      ci-bot" in status.stdout
        from_env = _cli(*tcp, "whoami", env={"CONVEYOR_TOKEN": secret})
        assert "identity:      ci-bot" in from_env.stdout

        denied = _cli(*tcp, "--token-file", str(token_file), "admin", "tokens", "list")
        assert denied.returncode == 1
        assert "needs the tokens.manage permission" in denied.stderr

        listed = json.loads(_cli(*unix, "-o", "json", "admin", "tokens", "list").stdout)
        (token,) = [t for t in listed if t["name"] == "ci"]
        assert token["identity"] == "ci-bot" and "secret" not in json.dumps(listed)
        revoked = _cli(*unix, "admin", "tokens", "revoke", token["id"])
        assert revoked.returncode == 0, revoked.stderr
        after = _cli(*tcp, "--token-file", str(token_file), "whoami")
        assert after.returncode == 1 and "was revoked" in after.stderr

        audit = _cli(*unix, "audit", "--since", "1h")
        assert audit.returncode == 0, audit.stderr
        lines = audit.stdout.splitlines()
        assert lines[0].split() == ["TIME", "IDENTITY", "ACTION", "TARGET", "OUTCOME", "DETAIL"]
        assert any("RevokeToken" in line and " ok " in line for line in lines)
        assert any("ListTokens" in line and "denied" in line for line in lines)
        assert any("IssueToken" in line and "ci-bot" in line for line in lines)
        only = json.loads(_cli(*unix, "-o", "json", "audit", "--action", "ListTokens").stdout)
        assert {e["outcome"] for e in only} == {"denied"}
        assert {e["identity"] for e in only} == {"ci-bot"}
    finally:
        daemon.stop()


def test_a_token_file_that_cannot_be_read_is_reported(
    tmp_path: Path, daemon: DaemonProcess
) -> None:
    missing = _cli("--address", daemon.address, "--token-file", str(tmp_path / "nope"), "status")
    assert missing.returncode == 1
    assert "cannot read the token file" in missing.stderr
