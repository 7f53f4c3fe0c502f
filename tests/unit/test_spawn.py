"""Starting a stage's process on the trio loop and waiting for its end
there (``executors/spawn.py``): exit codes, signals, a cancelled wait, a
kernel without pidfds, start failures, and which starts use a thread."""

from __future__ import annotations

import os
import pwd
import signal
from pathlib import Path

import pytest
import trio
import trio.testing

from conveyor.daemon.executors import spawn
from conveyor.daemon.executors.base import StageUser

ENV = {"PATH": "/usr/bin:/bin"}


async def start(
    tmp_path: Path,
    script: str,
    *,
    user: StageUser | None = None,
    argv: list[str] | None = None,
    executable: str = "/bin/sh",
    cwd: Path | None = None,
) -> spawn.StageProcess:
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        return await spawn.start_process(
            argv or ["sh", "-c", script],
            executable=executable,
            cwd=str(cwd or tmp_path),
            env=ENV,
            output=out,
            umask=0o022,
            user=user,
        )
    finally:
        os.close(out)


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What was handed to a worker thread."""
    handed: list[object] = []
    run_sync = trio.to_thread.run_sync

    async def recording(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        handed.append(fn)
        return await run_sync(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", recording)
    return handed


async def test_a_process_starts_on_the_loop_in_its_own_session_with_its_output_and_umask(
    tmp_path: Path, threads: list[object]
) -> None:
    proc = await start(
        tmp_path, 'echo "$(pwd) $(umask)"; set -- $(cat /proc/$$/stat); echo "$6"; exit 3'
    )
    assert proc.returncode is None or proc.returncode == 3
    assert await proc.wait() == 3
    assert proc.returncode == 3
    where, session = (tmp_path / "out").read_text().splitlines()
    assert where == f"{tmp_path} 0022"
    assert int(session) == proc.pid, "the process leads a session of its own"
    assert threads == [], "no worker thread started or waited for it"


async def test_a_killed_process_reports_the_signal(tmp_path: Path) -> None:
    proc = await start(tmp_path, "sleep 30")
    os.kill(proc.pid, signal.SIGKILL)
    assert await proc.wait() == -signal.SIGKILL


async def test_a_cancelled_wait_can_be_waited_again(tmp_path: Path) -> None:
    proc = await start(tmp_path, "sleep 30")
    with trio.move_on_after(0.1) as waited:
        await proc.wait()
    assert waited.cancelled_caught and proc.returncode is None
    os.kill(proc.pid, signal.SIGTERM)
    assert await proc.wait() == -signal.SIGTERM


async def test_without_pidfds_a_thread_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: list[object]
) -> None:
    monkeypatch.setattr(spawn, "_pidfd", lambda pid: None)
    proc = await start(tmp_path, "sleep 30")
    codes: list[int] = []

    async def wait() -> None:
        codes.append(await proc.wait())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        os.kill(proc.pid, signal.SIGTERM)
    assert codes == [-signal.SIGTERM]
    assert threads == [spawn._wait_exited]
    again = await start(tmp_path, "sleep 30")
    with trio.move_on_after(0.1):
        await again.wait()
    os.kill(again.pid, signal.SIGKILL)
    assert await again.wait() == -signal.SIGKILL


async def test_a_start_that_fails_raises_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await start(tmp_path, "", argv=["no-such-program-here"], executable="/no/such/program")
    with pytest.raises(FileNotFoundError):
        await start(tmp_path, "true", cwd=tmp_path / "missing")


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a process as another user needs root")
async def test_as_another_user_the_start_runs_in_a_thread(
    tmp_path: Path, threads: list[object]
) -> None:
    nobody = pwd.getpwnam("nobody")
    os.chmod(tmp_path, 0o777)
    user = StageUser("nobody", nobody.pw_uid, nobody.pw_gid)
    proc = await start(tmp_path, "id -u; id -G", user=user)
    assert await proc.wait() == 0
    assert (tmp_path / "out").read_text().split() == [str(nobody.pw_uid), str(nobody.pw_gid)]
    assert len(threads) == 1, "the fork (the page tables copied) ran in a worker thread"
