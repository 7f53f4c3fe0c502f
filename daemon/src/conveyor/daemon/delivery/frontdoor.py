"""The daemon's side of an environment's front proxy (see
:mod:`conveyor.daemon.delivery.proxy`): start it when it is not running,
change its upstreams, watch connections drain, stop it.

One proxy per front port, found again after a daemon restart by its
control socket: ``$CONVEYOR_HOME/delivery/proxies/<port>.sock``, with its
state (``<port>.json``) and log (``<port>.log``) beside it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from conveyor.daemon.delivery.spawn import SpawnError, is_running, spawn_detached

log = logging.getLogger(__name__)

#: Seconds a starting proxy has to answer on its control socket.
START_TIMEOUT = 10.0
#: Seconds one control request may take.
REQUEST_TIMEOUT = 5.0
#: Longest unix socket path (``sun_path`` holds 108 bytes with the NUL).
MAX_SOCKET_PATH = 107


class ProxyError(Exception):
    """The proxy cannot be started or does not answer; the message says why."""


@dataclass(frozen=True)
class ProxyStatus:
    upstreams: list[int]
    #: Open connections per upstream port.
    active: Mapping[int, int] = field(default_factory=dict)
    pid: int = 0


class FrontProxy:
    """Controls the proxy serving 127.0.0.1:``port``."""

    def __init__(self, root: Path, port: int, *, grace: float = 10.0) -> None:
        self.root = root
        self.port = port
        self.grace = grace
        self.socket = root / f"{port}.sock"
        self.state = root / f"{port}.json"
        self.log = root / f"{port}.log"

    async def _request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            raise ProxyError(
                f"the proxy's control socket path {self.socket} is longer than"
                f" {MAX_SOCKET_PATH} bytes; use a shorter CONVEYOR_HOME"
            )
        with trio.fail_after(REQUEST_TIMEOUT):
            stream = await trio.open_unix_socket(str(self.socket))
            async with stream:
                await stream.send_all(json.dumps(request).encode() + b"\n")
                data = b""
                while b"\n" not in data:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    data += chunk
        answer = json.loads(data.split(b"\n", 1)[0] or b"{}")
        if not isinstance(answer, dict) or "error" in answer:
            raise ProxyError(f"the proxy on port {self.port} refused {request}: {answer}")
        return answer

    async def status(self) -> ProxyStatus | None:
        """The proxy's upstreams and open connections; None when it does
        not run (no answer on its control socket)."""
        try:
            answer = await self._request({"op": "status"})
        except (OSError, trio.TooSlowError, ValueError, ProxyError):
            return None
        active = {int(port): int(n) for port, n in dict(answer.get("active", {})).items()}
        return ProxyStatus(list(answer.get("upstreams", [])), active, int(answer.get("pid", 0)))

    async def ensure(self, upstreams: list[int] | None = None) -> ProxyStatus:
        """Start the proxy unless it runs; a new one starts with
        ``upstreams`` (or what its state file says). Raises
        :class:`ProxyError` when it cannot start (the port is taken)."""
        status = await self.status()
        if status is not None:
            return status
        await trio.to_thread.run_sync(lambda: self.root.mkdir(parents=True, exist_ok=True))
        if upstreams is not None:
            await trio.to_thread.run_sync(_write_state, self.state, upstreams)
        argv = [
            sys.executable,
            "-I",
            "-m",
            "conveyor.daemon.delivery.proxy",
            "--port",
            str(self.port),
            "--control",
            str(self.socket),
            "--state",
            str(self.state),
            "--grace",
            str(self.grace),
        ]
        # -I: the daemon's own interpreter and installed packages, whatever
        # the environment says
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        try:
            process = await spawn_detached(argv, env=env, cwd=self.root, log=self.log)
        except SpawnError as exc:
            raise ProxyError(f"cannot start the proxy for port {self.port}: {exc}") from None
        deadline = trio.current_time() + START_TIMEOUT
        while trio.current_time() < deadline:
            status = await self.status()
            if status is not None:
                log.info("front proxy for 127.0.0.1:%d started (pid %d)", self.port, status.pid)
                return status
            if not await trio.to_thread.run_sync(is_running, process):
                break
            await trio.sleep(0.02)
        why = await trio.to_thread.run_sync(_last_line, self.log)
        raise ProxyError(why or f"the proxy for port {self.port} did not start")

    async def set_upstreams(self, upstreams: list[int]) -> None:
        """Route new connections to ``upstreams`` only (once this returns)."""
        await self._request({"op": "set", "upstreams": list(upstreams)})

    async def drain(self, port: int, timeout: float) -> bool:
        """Wait until no connection to upstream ``port`` is open (at most
        ``timeout`` seconds); whether it drained."""
        deadline = trio.current_time() + timeout
        while True:
            status = await self.status()
            if status is None or status.active.get(port, 0) == 0:
                return True
            if trio.current_time() >= deadline:
                return False
            await trio.sleep(0.02)

    async def stop(self) -> None:
        """Stop the proxy (it lets open connections finish) and forget its state."""
        with contextlib.suppress(OSError, trio.TooSlowError, ValueError, ProxyError):
            await self._request({"op": "stop"})
        await trio.to_thread.run_sync(lambda: self.state.unlink(missing_ok=True))


def _write_state(path: Path, upstreams: list[int]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"upstreams": upstreams}))
    os.replace(temporary, path)


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""
