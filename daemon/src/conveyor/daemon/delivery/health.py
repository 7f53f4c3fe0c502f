"""Health checks of replicas: one probe, and the two ways the daemon uses
them (waiting for readiness, watching through the watch window).

A probe is an HTTP GET of the check's path on ``127.0.0.1:<port>``
(healthy on a 2xx status) or a command run with ``PORT`` in its
environment (healthy on exit code 0), bounded by the check's timeout.
Nothing here raises for an unhealthy replica: the result says why.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import trio

from conveyor.daemon.delivery.target import HealthCheck, ProbeResult

_STATUS_LINE = re.compile(rb"^HTTP/\d(?:\.\d)? (\d{3})")
#: Bytes read of an answer: the status line is all a probe needs.
_READ_LIMIT = 4096


#: The detail of a probe that found nothing listening: a replica still
#: starting (it does not count as an unhealthy answer).
NOT_LISTENING = "connection refused"


async def probe_http(port: int, path: str, timeout: float) -> ProbeResult:
    """GET ``path`` from 127.0.0.1:``port``; healthy on 2xx."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: conveyor-health\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return ProbeResult(False, NOT_LISTENING)
        try:
            async with stream:
                await stream.send_all(request)
                data = b""
                while b"\r\n" not in data and len(data) < _READ_LIMIT:
                    chunk = await stream.receive_some(_READ_LIMIT)
                    if not chunk:
                        break
                    data += chunk
        except (OSError, trio.BrokenResourceError) as exc:
            return ProbeResult(False, f"connection broken: {exc}")
        match = _STATUS_LINE.match(data)
        if match is None:
            return ProbeResult(False, "not an HTTP answer")
        status = int(match.group(1))
        return ProbeResult(200 <= status < 300, f"HTTP {status}")
    return ProbeResult(False, f"no answer within {timeout:g}s")


async def probe_command(
    command: Sequence[str], port: int, env: Mapping[str, str], timeout: float
) -> ProbeResult:
    """Run ``command`` with ``PORT`` set; healthy on exit code 0."""
    with trio.move_on_after(timeout):
        try:
            result = await trio.run_process(
                list(command),
                env={**env, "PORT": str(port)},
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        except OSError as exc:
            return ProbeResult(False, f"cannot run the health command: {exc.strerror or exc}")
        if result.returncode == 0:
            return ProbeResult(True, "exit code 0")
        tail = (result.stderr or result.stdout).decode(errors="replace").strip()[-200:]
        return ProbeResult(False, f"exit code {result.returncode}" + (f": {tail}" if tail else ""))
    return ProbeResult(False, f"the health command took longer than {timeout:g}s")


def prober(check: HealthCheck, env: Mapping[str, str]) -> Callable[[int], Awaitable[ProbeResult]]:
    """A probe of ``check`` for any port (``env``: for a command check)."""

    async def probe(port: int) -> ProbeResult:
        if check.command:
            return await probe_command(check.command, port, env, check.timeout)
        return await probe_http(port, check.path or "/", check.timeout)

    return probe


@dataclass(frozen=True)
class Unhealthy:
    """Why a replica is not (or no longer) healthy."""

    port: int
    reason: str


async def wait_ready(
    probe: Callable[[int], Awaitable[ProbeResult]],
    port: int,
    *,
    timeout: float,
    interval: float,
    failure_threshold: int,
    alive: Callable[[], Awaitable[bool]],
) -> Unhealthy | None:
    """Probe ``port`` until it is healthy (None), it answers unhealthy
    ``failure_threshold`` times in a row, it stops running, or ``timeout``
    seconds pass (an :class:`Unhealthy` saying which). Not answering at all
    (connection refused: still starting) only counts against the timeout.

    The deadline is checked on the clock, after each probe: a late loop
    never turns a timeout into readiness.
    """
    deadline = trio.current_time() + timeout
    failures = 0
    last = "no answer yet"
    while True:
        result = await probe(port)
        if result.healthy:
            return None
        last = result.detail
        if not await alive():
            return Unhealthy(port, f"the replica on port {port} stopped running ({last})")
        if result.detail != NOT_LISTENING:
            failures += 1
            if failures >= failure_threshold:
                return Unhealthy(
                    port,
                    f"the replica on port {port} failed its health check {failures} time(s)"
                    f" in a row: {last}",
                )
        else:
            failures = 0
        if trio.current_time() >= deadline:
            return Unhealthy(
                port,
                f"the replica on port {port} was not healthy within the readiness timeout"
                f" ({timeout:g}s): {last}",
            )
        await trio.sleep(min(interval, max(0.0, deadline - trio.current_time())))


async def watch(
    probe: Callable[[int], Awaitable[ProbeResult]],
    ports: Sequence[int],
    *,
    window: float,
    interval: float,
    failure_threshold: int,
) -> Unhealthy | None:
    """Probe every port each ``interval`` until ``window`` seconds passed;
    an :class:`Unhealthy` for the first that fails ``failure_threshold``
    probes in a row, None when all stayed healthy."""
    failures = dict.fromkeys(ports, 0)
    end = trio.current_time() + window
    while True:
        results: dict[int, ProbeResult] = {}

        async def check(port: int, into: dict[int, ProbeResult]) -> None:
            into[port] = await probe(port)

        async with trio.open_nursery() as nursery:
            for port in ports:
                nursery.start_soon(check, port, results)
        for port in ports:
            result = results[port]
            if result.healthy:
                failures[port] = 0
                continue
            failures[port] += 1
            if failures[port] >= failure_threshold:
                return Unhealthy(
                    port,
                    f"the replica on port {port} became unhealthy during the watch window:"
                    f" {failures[port]} failed health check(s) in a row: {result.detail}",
                )
        now = trio.current_time()
        if now >= end:
            return None
        await trio.sleep(min(interval, end - now))
