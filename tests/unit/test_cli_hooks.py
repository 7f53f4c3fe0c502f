"""Tests for `conveyor hook install|uninstall`."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.client import hooks
from conveyor.client.cli import main
from conveyor.client.errors import CommandError

ADDRESS = "unix:///tmp/conveyor-test/conveyord.sock"
ZERO = "0" * 40
SHA_A = "a" * 40
SHA_B = "b" * 40


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    repo = tmp_path / "app.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    return repo


def test_install_writes_an_executable_hook(bare: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hook", "install", str(bare), "--address", ADDRESS]) == 0
    hook = bare / "hooks" / "post-receive"
    assert os.access(hook, os.X_OK)
    script = hook.read_text()
    assert script.startswith("#!/bin/sh\n")
    assert hooks.MARKER in script
    python, repo = shlex.quote(sys.executable), shlex.quote(str(bare.resolve()))
    assert f"{python} -m conveyor.client.cli --address {ADDRESS} submit" in script
    assert f'--repo {repo} --ref "$refname" --commit "$newrev"' in script
    assert '--trigger push --idempotency-key "push:$refname:$newrev"' in script
    subprocess.run(["sh", "-n", str(hook)], check=True)
    out = capsys.readouterr().out
    assert f"installed {hook.resolve()}" in out
    assert ADDRESS in out


def test_install_uses_the_default_address(
    bare: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CONVEYOR_ADDRESS", raising=False)
    monkeypatch.setenv("CONVEYOR_HOME", str(tmp_path / "home"))
    assert main(["hook", "install", str(bare), "--file", "ci/conveyor.yaml"]) == 0
    script = (bare / "hooks" / "post-receive").read_text()
    address = shlex.quote(f"unix://{tmp_path / 'home' / 'conveyord.sock'}")
    assert f"--address {address}" in script
    assert "--file ci/conveyor.yaml" in script


def test_hook_submits_each_updated_ref(bare: Path, tmp_path: Path) -> None:
    # A stand-in for the interpreter records the arguments of each submission.
    record = tmp_path / "calls.txt"
    fake_python = tmp_path / "python"
    fake_python.write_text(f'#!/bin/sh\necho "$@" >> "{record}"\n')
    fake_python.chmod(0o755)
    hook = hooks.install(bare, address=ADDRESS, python=str(fake_python)).hook
    pushes = (
        f"{ZERO} {SHA_A} refs/heads/main\n"
        f"{SHA_A} {ZERO} refs/heads/old\n"  # a deletion: no run
        f"{ZERO} {SHA_B} refs/tags/v1\n"
    )
    subprocess.run([str(hook)], input=pushes, text=True, check=True, cwd=bare)
    calls = record.read_text().splitlines()
    assert calls == [
        f"-m conveyor.client.cli --address {ADDRESS} submit --repo {bare.resolve()}"
        f" --ref {ref} --commit {sha} --trigger push --idempotency-key push:{ref}:{sha}"
        for ref, sha in [("refs/heads/main", SHA_A), ("refs/tags/v1", SHA_B)]
    ]


def test_hook_command_line_parses(bare: Path) -> None:
    # The arguments the hook passes are accepted by the CLI's parser.
    from conveyor.client.cli import build_parser

    args = build_parser().parse_args(
        ["--address", ADDRESS, "submit", "--repo", str(bare), "--ref", "refs/heads/main",
         "--commit", SHA_A, "--trigger", "push", "--idempotency-key", f"push:main:{SHA_A}"]
    )  # fmt: skip
    assert (args.commit, args.trigger, args.address) == (SHA_A, "push", ADDRESS)


def test_install_refuses_a_non_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert main(["hook", "install", str(plain), "--address", ADDRESS]) == 1
    assert capsys.readouterr().err == f"conveyor: error: {plain} is not a git repository\n"
    assert not (plain / "hooks").exists()


def test_install_refuses_a_foreign_hook_unless_forced(
    bare: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = bare / "hooks" / "post-receive"
    hook.write_text("#!/bin/sh\necho mine\n")
    assert main(["hook", "install", str(bare), "--address", ADDRESS]) == 1
    err = capsys.readouterr().err
    assert "was not written by Conveyor" in err and "--force" in err
    assert hook.read_text() == "#!/bin/sh\necho mine\n"

    assert main(["hook", "install", str(bare), "--address", ADDRESS, "--force"]) == 0
    assert hooks.is_conveyor_hook(hook)
    backup = bare / "hooks" / "post-receive.conveyor-backup"
    assert backup.read_text() == "#!/bin/sh\necho mine\n"

    assert main(["hook", "uninstall", str(bare)]) == 0
    assert hook.read_text() == "#!/bin/sh\necho mine\n"
    assert not backup.exists()


def test_reinstall_and_uninstall(bare: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hook = bare / "hooks" / "post-receive"
    hooks.install(bare, address="unix:///old.sock")
    hooks.install(bare, address=ADDRESS)  # our own hook: replaced without --force
    assert ADDRESS in hook.read_text()
    assert main(["hook", "uninstall", str(bare)]) == 0
    assert not hook.exists()
    assert main(["hook", "uninstall", str(bare)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_uninstall_leaves_a_foreign_hook(bare: Path) -> None:
    hook = bare / "hooks" / "post-receive"
    hook.write_text("#!/bin/sh\n")
    with pytest.raises(CommandError, match="not written by Conveyor"):
        hooks.uninstall(bare)
    assert hook.exists()


def test_hook_passes_awkward_paths_and_addresses_through_unchanged(tmp_path: Path) -> None:
    """Every value the hook script embeds is quoted for sh (shlex.quote):
    quotes, `$`, backquotes, backslashes and spaces reach the CLI as they are."""
    awkward = 'we\'ird "$HOME" `x` \\ dir'
    repo = tmp_path / f"{awkward}.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    record = tmp_path / "calls.txt"
    fake_python = tmp_path / f"{awkward} python"
    fake_python.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{record}'\n")
    fake_python.chmod(0o755)
    address = f"unix:///tmp/{awkward}/conveyord.sock"
    hook = hooks.install(
        repo, address=address, python=str(fake_python), pipeline_file=f"ci/{awkward}.yaml"
    ).hook
    subprocess.run(
        [str(hook)], input=f"{ZERO} {SHA_A} refs/heads/main\n", text=True, check=True, cwd=repo
    )
    assert record.read_text().splitlines() == [
        "-m",
        "conveyor.client.cli",
        "--address",
        address,
        "submit",
        "--repo",
        str(repo.resolve()),
        "--ref",
        "refs/heads/main",
        "--commit",
        SHA_A,
        "--trigger",
        "push",
        "--idempotency-key",
        f"push:refs/heads/main:{SHA_A}",
        "--file",
        f"ci/{awkward}.yaml",
    ]
