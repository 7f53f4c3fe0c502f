"""Tests for the CLI's argument parsing, error reporting and exit codes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from conveyor.client import ConveyorError, DaemonUnavailable, connect, render
from conveyor.client.cli import build_parser, main
from conveyor.client.errors import translate_rpc_error
from conveyor.client.session import DEFAULT_CONNECT_TIMEOUT, Session, connect_timeout

NOWHERE = "unix:///nonexistent.sock"


@pytest.fixture(autouse=True)
def _quick_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_CONNECT_TIMEOUT", "0.2")


def test_global_options_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--address", "a:1", "--output", "json", "runs"])
    after = parser.parse_args(["runs", "--address", "a:1", "-o", "json"])
    for args in (before, after):
        assert (args.address, args.output, args.command) == ("a:1", "json", "runs")
    default = parser.parse_args(["runs"])
    assert (default.address, default.output) == (None, "text")


def test_submit_options() -> None:
    args = build_parser().parse_args(
        ["submit", "--repo", "r", "--ref", "main", "--file", "ci.yaml",
         "--idempotency-key", "k", "--trigger", "api", "--watch"]
    )  # fmt: skip
    assert (args.repo, args.ref, args.file, args.idempotency_key) == ("r", "main", "ci.yaml", "k")
    assert (args.trigger, args.watch, args.commit) == ("api", True, None)
    defaults = build_parser().parse_args(["submit"])
    assert (defaults.repo, defaults.ref, defaults.trigger, defaults.watch) == (
        None,
        None,
        "manual",
        False,
    )


def test_other_commands() -> None:
    parser = build_parser()
    runs = parser.parse_args(["runs", "--status", "timed_out", "--limit", "10", "--commit", "abcd"])
    assert (runs.status, runs.limit, runs.commit) == ("timed_out", 10, "abcd")
    logs = parser.parse_args(["logs", "r1", "build", "-f"])
    assert (logs.run, logs.stage, logs.follow) == ("r1", "build", True)
    assert parser.parse_args(["logs", "r1"]).stage is None
    assert parser.parse_args(["validate"]).file == "conveyor.yaml"
    assert parser.parse_args(["cancel", "r1", "--reason", "why"]).reason == "why"
    hook = parser.parse_args(["hook", "uninstall", "/srv/a.git", "--force"])
    assert (hook.repo, hook.force) == ("/srv/a.git", True)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["runs", "--limit", "0"],
        ["runs", "--limit", "501"],
        ["runs", "--status", "bogus"],
        ["submit", "--trigger", "cron"],
        ["--output", "yaml", "runs"],
        ["hook"],
        ["frobnicate"],
        ["show", "r1", "--findings", "0"],
        ["show", "r1", "--findings", "some"],
        ["show", "r1", "--severity", "severe"],
        ["logs", "r1", "--color", "sometimes"],
        ["baseline", "r1"],
        ["baseline", "r1", "scan", "--min-severity", "urgent"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_show_findings_and_severity_options() -> None:
    parser = build_parser()
    default = parser.parse_args(["show", "r1"])
    assert (default.findings, default.severity) == (render.REPORT_ITEMS, None)
    every = parser.parse_args(["show", "r1", "--findings", "all", "--severity", "HIGH"])
    assert (every.findings, every.severity) == (render.ALL, "high")
    assert parser.parse_args(["show", "r1", "--findings", "50"]).findings == 50


def test_color_is_a_global_option() -> None:
    parser = build_parser()
    assert parser.parse_args(["logs", "r1"]).color == "auto"
    assert parser.parse_args(["--color", "never", "logs", "r1"]).color == "never"
    assert parser.parse_args(["watch", "r1", "--color", "always"]).color == "always"


def test_baseline_options() -> None:
    args = build_parser().parse_args(
        ["baseline", "r1", "scan", "--min-severity", "high", "--write", "b.json", "--replace"]
    )
    assert (args.run, args.stage, args.min_severity, args.write) == ("r1", "scan", "high", "b.json")
    assert (args.replace, args.include_baselined) == (True, False)
    defaults = build_parser().parse_args(["baseline", "r1", "scan"])
    assert (defaults.min_severity, defaults.write, defaults.replace) == (None, None, False)


def test_errors_quoting_escapes_are_shown_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--address", NOWHERE, "validate", "ci\x1b]0;x\x07.yaml"]) == 1
    assert capsys.readouterr().err == (
        "conveyor: error: cannot read ci\\x1b]0;x\\x07.yaml: No such file or directory\n"
    )


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "submit" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["runs"], ["show", "r1"], ["status"], ["plugins"]])
def test_unreachable_daemon_exits_2(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    assert main(["--address", NOWHERE, *command]) == 2
    assert time.monotonic() - start < 5
    captured = capsys.readouterr()
    assert captured.err == (
        f"conveyor: error: cannot reach the Conveyor daemon at {NOWHERE}: is conveyord running?"
        " (set CONVEYOR_ADDRESS or --address)\n"
    )
    assert captured.out == ""


def test_address_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONVEYOR_ADDRESS", "unix:///also/nonexistent.sock")
    assert main(["status"]) == 2
    assert "unix:///also/nonexistent.sock" in capsys.readouterr().err


def test_python_dash_m_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "conveyor.client.cli", "--address", NOWHERE, "runs"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("conveyor: error: cannot reach the Conveyor daemon")
    assert "Traceback" not in result.stderr


def test_connect_raises_daemon_unavailable() -> None:
    with pytest.raises(DaemonUnavailable) as info:
        connect(NOWHERE, timeout=0.1)
    assert info.value.address == NOWHERE
    assert info.value.code_name == "UNAVAILABLE"
    assert isinstance(info.value, ConveyorError)


def test_validate_reports_an_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--address", NOWHERE, "validate"]) == 1
    assert capsys.readouterr().err == (
        "conveyor: error: cannot read conveyor.yaml: No such file or directory\n"
    )


def test_submit_outside_a_checkout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--address", NOWHERE, "submit"]) == 1
    assert "not inside a git working tree" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, DEFAULT_CONNECT_TIMEOUT), ("2.5", 2.5), ("x", DEFAULT_CONNECT_TIMEOUT), ("0", 5.0)],
)
def test_connect_timeout(monkeypatch: pytest.MonkeyPatch, raw: str | None, expected: float) -> None:
    if raw is None:
        monkeypatch.delenv("CONVEYOR_CONNECT_TIMEOUT")
    else:
        monkeypatch.setenv("CONVEYOR_CONNECT_TIMEOUT", raw)
    assert connect_timeout() == expected
    assert Session(None).timeout == expected


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_rpc_errors_become_domain_errors() -> None:
    not_found = translate_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, "no run 'x'"), "a")
    assert type(not_found) is ConveyorError
    assert (not_found.code_name, str(not_found)) == ("NOT_FOUND", "no run 'x'")
    internal = translate_rpc_error(FakeRpcError(grpc.StatusCode.INTERNAL, "boom"), "a")
    assert str(internal) == "internal: boom"
    gone = translate_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "socket closed"), "a:1")
    assert isinstance(gone, DaemonUnavailable)
    assert gone.details == "socket closed"
    assert str(gone).startswith("cannot reach the Conveyor daemon at a:1")
    assert str(translate_rpc_error(grpc.RpcError(), "a")) == "unknown"
