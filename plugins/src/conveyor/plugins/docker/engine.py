"""The Docker engine, through the Docker SDK's low-level ``APIClient``, off
the trio loop.

Every SDK call blocks, so each one runs in a worker thread bounded by one
:class:`trio.CapacityLimiter`. A streaming call (build, push) is cut from
the trio side when the stage is cancelled: :class:`ResponseCutter` shuts
down the socket of the response the worker thread is reading, which ends
the read at once and tells the engine the client went away (the classic
builder then stops the build and removes its container).

The engine is the one the daemon's environment names, as for the ``docker``
CLI: ``DOCKER_HOST`` (default ``unix:///var/run/docker.sock``),
``DOCKER_TLS_VERIFY`` and ``DOCKER_CERT_PATH``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, TypeVar

import docker
import requests
import trio
from docker.errors import DockerException
from docker.utils import kwargs_from_env
from urllib3.exceptions import HTTPError

from conveyor.plugins.reporting.frame import StageFailure

T = TypeVar("T")

#: Worker threads for Docker SDK calls at once (each build or push holds one
#: while it streams).
ENGINE_THREADS: Final = 32
#: Seconds to wait for a worker thread once its stream was cut.
CUT_WAIT: Final = 10.0

_limiter: trio.CapacityLimiter | None = None

#: What reading an engine's answer may raise: the SDK's errors, HTTP and
#: socket errors (a stream cut), JSON that does not decode.
STREAM_ERRORS: Final = (DockerException, requests.RequestException, HTTPError, OSError, ValueError)


def limiter() -> trio.CapacityLimiter:
    """The limiter of the threads making Docker SDK calls."""
    global _limiter
    if _limiter is None:
        _limiter = trio.CapacityLimiter(ENGINE_THREADS)
    return _limiter


def engine_address(environ: dict[str, str] | None = None) -> str:
    """The engine the daemon talks to, for messages."""
    env = os.environ if environ is None else environ
    return env.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def engine_failure(action: str, exc: BaseException) -> StageFailure:
    """A failure to reach or use the engine, with the SDK's explanation."""
    return StageFailure(
        f"{action}: the Docker engine at {engine_address()} failed: {explain(exc)}",
        error_type="docker_engine",
        system_error=True,
    )


def explain(exc: BaseException) -> str:
    """The useful words of an SDK or HTTP error."""
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation)
    return str(exc) or type(exc).__name__


def connect() -> docker.APIClient:
    """A client of the daemon's engine (blocking: it asks the engine its API
    version). Raises StageFailure when the engine cannot be reached."""
    try:
        return docker.APIClient(**kwargs_from_env(), version="auto")
    except (DockerException, requests.RequestException, OSError) as exc:
        raise StageFailure(
            f"cannot reach the Docker engine at {engine_address()}: {explain(exc)}"
            " (is dockerd running, and may the daemon's user use it?)",
            error_type="docker_unreachable",
            system_error=True,
        ) from None


@contextlib.asynccontextmanager
async def engine_client() -> AsyncIterator[docker.APIClient]:
    """A client for one stage attempt, closed at the end (even when cancelled)."""
    client = await trio.to_thread.run_sync(connect, limiter=limiter())
    try:
        yield client
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(client.close, limiter=limiter())


class Cut(Exception):
    """Raised in a worker thread that finds its stream cut (the stage was
    cancelled); the trio side raises ``trio.Cancelled`` instead."""


class ResponseCutter:
    """Lets the trio side end a streaming response a worker thread reads.

    :meth:`watch` registers it with a client: every response the client
    receives (its headers read, its body not yet) becomes the current one.
    :meth:`cut`, from any thread, shuts down the current response's socket,
    and any response that arrives after it; the reading thread then sees the
    stream end, and the engine sees the client go away.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._response: requests.Response | None = None
        self._cut = False

    def watch(self, client: docker.APIClient) -> None:
        client.hooks["response"].append(self._attach)

    @property
    def is_cut(self) -> bool:
        with self._lock:
            return self._cut

    def check(self) -> None:
        """Raise :class:`Cut` once :meth:`cut` was called (in the worker thread)."""
        if self.is_cut:
            raise Cut()

    def _attach(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self._response = response
            cut = self._cut
        if cut:
            _shut(response)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            response = self._response
        if response is not None:
            _shut(response)


def _shut(response: requests.Response) -> None:
    """Shut the socket under a streaming response down (both ways): a
    blocked read returns at once, and the peer sees the connection end."""
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    else:  # already released (read to the end) or an unknown transport
        with contextlib.suppress(Exception):
            response.close()


async def run_cuttable(fn: Callable[[], T], cutter: ResponseCutter) -> T:
    """Run ``fn`` (which streams through a client ``cutter`` watches) in a
    worker thread.

    Cancellation: the stream is cut, then the thread is given up to
    :data:`CUT_WAIT` seconds to return (shielded) before ``trio.Cancelled``
    propagates; whatever the thread returns or raises then is dropped.
    Errors: what ``fn`` raises.
    """
    started = threading.Event()
    done = threading.Event()

    def work() -> T:
        started.set()
        try:
            cutter.check()  # cancelled while the thread was starting
            return fn()
        finally:
            done.set()

    try:
        return await trio.to_thread.run_sync(work, abandon_on_cancel=True, limiter=limiter())
    except trio.Cancelled:
        cutter.cut()
        if started.is_set():
            with trio.CancelScope(shield=True), trio.move_on_after(CUT_WAIT):
                await trio.to_thread.run_sync(done.wait, abandon_on_cancel=True)
        raise
