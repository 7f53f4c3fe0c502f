"""The ``docker`` executor: each process of a stage runs in a container on
the local Docker engine.

```yaml
stages:
  test:
    executor: docker
    image: 127.0.0.1:5000/team/tools:1     # never pulled
    resources: {cpus: 1, memory: 512m}
    network: host                          # default: none (loopback only)
    run: make test
```

The container runs the image with the stage's command as its whole command
line (the image's ``ENTRYPOINT`` is not used), behind an init process
(``docker run --init``) that passes signals on; the run's workspace is
bind-mounted at ``/workspace`` (``CONTAINER_WORKSPACE``), the working
directory, so later stages see earlier stages' files as with ``local``. Its
environment is the stage's (``CONVEYOR_*``, ``TRACEPARENT``, the pipeline's
``env``, its secrets) over the image's own ``ENV``, and nothing of the
daemon's. It runs as the user the daemon resolved (``request.container.user``:
never root unless the pipeline says ``user: 0``), with
``no-new-privileges`` when not root; limits as ``resources`` say (no swap
beyond the memory limit); no network but loopback unless ``network: host``.

Output, stdout and stderr merged, is read from the container's attach
stream (attached before it starts, so nothing is missed) by a worker thread
that writes it straight to the stage log; the engine keeps no copy (log
driver ``none``). A container killed for exceeding its memory limit raises
:class:`~conveyor.plugin.ProcessKilled` (``killed: out of memory (limit
64m)``). On cancellation the container gets SIGTERM, SIGKILL after the
kill grace, and is removed; it is removed whatever happens. Every container
carries the daemon's labels (run, stage, daemon, executor), which is how
:meth:`DockerExecutor.cleanup` finds those of interrupted runs at start-up.

Images are never pulled: one the engine does not hold fails the stage,
saying so.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Collection
from typing import Any, Final

import docker
import requests
import trio
from docker.errors import APIError, ImageNotFound, NotFound
from docker.types import LogConfig

from conveyor.plugin import (
    CONTAINER_WORKSPACE,
    Executor,
    ExecutorError,
    ProcessKilled,
    ProcessRequest,
    StageOutput,
    hookimpl,
)
from conveyor.plugins.docker.engine import STREAM_ERRORS, explain, limiter
from conveyor.plugins.executors.common import (
    ContainerRequest,
    call,
    checked,
    connect,
    daemon_filter,
    engine_present,
    labels,
    pump_limiter,
    resource_name,
    stale,
)
from conveyor.plugins.executors.frames import Demuxer

NAME: Final = "docker"
#: The pipeline fields the executor takes.
FIELDS: Final = frozenset({"image", "resources", "network", "user"})
#: Bytes read from the attach stream at a time.
READ_SIZE: Final = 1 << 20
#: Seconds to wait for the output stream to end once the container is gone,
#: before its socket is shut down.
STREAM_DRAIN: Final = 5.0
#: Seconds to wait for a container to die after SIGKILL.
KILL_WAIT: Final = 30.0
_NANO: Final = 1_000_000_000


def host_config(
    client: docker.APIClient, request: ContainerRequest, auto_remove: bool = False
) -> dict[str, Any]:
    """The container's host configuration (see the module docstring)."""
    spec = request.spec
    config: dict[str, Any] = client.create_host_config(
        binds={str(spec.workspace): {"bind": CONTAINER_WORKSPACE, "mode": "rw"}},
        network_mode=spec.network,
        init=True,
        mem_limit=spec.memory,
        memswap_limit=spec.memory,
        nano_cpus=round(spec.cpus * _NANO) if spec.cpus is not None else None,
        log_config=LogConfig(type="none"),
        security_opt=None if spec.user.split(":")[0] == "0" else ["no-new-privileges"],
        auto_remove=auto_remove,
    )
    return config


def _create(
    client: docker.APIClient, request: ProcessRequest, checked: ContainerRequest, auto_remove: bool
) -> str:
    spec = checked.spec
    try:
        container = client.create_container(
            spec.image,
            entrypoint=request.argv[:1],
            command=request.argv[1:],
            environment=dict(request.env),
            working_dir=checked.workdir,
            user=spec.user,
            labels=labels(spec, NAME),
            host_config=host_config(client, checked, auto_remove),
            name=resource_name(spec),
            stdin_open=False,
            tty=False,
        )
    except ImageNotFound:
        raise ExecutorError(
            f"the Docker engine has no image {spec.image!r}, and the docker executor never"
            f" pulls: build it on this engine, or pull it first (docker pull {spec.image})"
        ) from None
    except APIError as exc:
        raise ExecutorError(
            f"the Docker engine refused the stage's container: {explain(exc)}"
        ) from None
    return str(container["Id"])


def _start(client: docker.APIClient, container: str, argv0: str, image: str) -> None:
    try:
        client.start(container)
    except APIError as exc:
        raise ExecutorError(
            f"cannot start {argv0!r} in a container of {image}: {explain(exc)}"
        ) from None


def _attach(client: docker.APIClient, container: str) -> Any:
    """The container's output stream (stdout and stderr, multiplexed), from
    before it starts."""
    params = {"stdout": 1, "stderr": 1, "stream": 1}
    return client.attach_socket(container, params=params)


def _pump(sock: Any, output: StageOutput) -> None:
    """Copy the attach stream's payloads into the stage output until the
    stream ends. Errors: what the output raises (``OSError``: the disk is
    full); a broken stream just ends."""
    read_into = getattr(sock, "recv_into", None) or sock.readinto
    buffer = memoryview(bytearray(READ_SIZE))
    demux = Demuxer()
    with output.open_writer() as writer:
        while True:
            try:
                nbytes = read_into(buffer)
            except OSError:
                return
            if not nbytes:
                return
            data = demux.feed(buffer[:nbytes])
            if data:
                writer.write(data)


def _shut(sock: Any) -> None:
    """End a blocked read of the stream at once."""
    raw = getattr(sock, "_sock", None) or sock
    with contextlib.suppress(OSError, AttributeError):
        raw.shutdown(socket.SHUT_RDWR)


def _signal(client: docker.APIClient, container: str, sig: str) -> bool:
    """Send ``sig``; False when the container no longer runs."""
    try:
        client.kill(container, sig)
    except (APIError, NotFound):
        return False
    return True


def _wait(client: docker.APIClient, container: str, timeout: float) -> bool:
    """Whether the container stopped running within ``timeout`` seconds."""
    try:
        # requests takes a fractional timeout (the stubs say int)
        wait_for: Any = max(timeout, 0.001)
        client.wait(container, timeout=wait_for, condition="not-running")
    except NotFound:
        return True
    except requests.RequestException:
        return False
    return True


def _stop(client: docker.APIClient, container: str, grace: float) -> None:
    """SIGTERM, up to ``grace`` seconds to stop, then SIGKILL (blocking)."""
    if not _signal(client, container, "SIGTERM") or _wait(client, container, grace):
        return
    if _signal(client, container, "SIGKILL"):
        _wait(client, container, KILL_WAIT)


def _remove(client: docker.APIClient, container: str) -> None:
    """Remove the container (killing it if it runs); when the engine is
    removing it already (auto-removal), wait until it is gone."""
    try:
        client.remove_container(container, v=True, force=True)
    except NotFound:
        return
    except APIError as exc:
        if exc.status_code != 409:  # not "removal already in progress"
            raise
        with contextlib.suppress(NotFound, requests.RequestException):
            client.wait(container, condition="removed", timeout=int(KILL_WAIT))


def _oom_killed(client: docker.APIClient, container: str) -> bool:
    """Whether the kernel killed the ended container for its memory limit."""
    details = client.inspect_container(container)
    return bool((details.get("State") or {}).get("OOMKilled"))


class _ContainerRun:
    """One created container, from its start to its end: the output pump
    and the engine's wait for its end run in worker threads meanwhile."""

    def __init__(
        self,
        client: docker.APIClient,
        container: str,
        request: ProcessRequest,
        req: ContainerRequest,
        output: StageOutput,
        auto_remove: bool,
    ) -> None:
        self.client = client
        self.container = container
        self.request = request
        self.req = req
        self.output = output
        self.auto_remove = auto_remove
        #: True once the engine said the container is gone.
        self.removed = False
        self._ended = trio.Event()
        self._exited = trio.Event()
        self._status: dict[str, Any] = {}
        self._failed: list[OSError] = []
        self._waiting = trio.CancelScope()
        #: The engine's wait outlives a cancellation of the run (it says
        #: when the stopped container is gone); :meth:`run` ends it.
        self._wait_scope = trio.CancelScope(shield=True)
        self._started = False

    async def _pump(self, sock: Any) -> None:
        try:
            await trio.to_thread.run_sync(_pump, sock, self.output, limiter=pump_limiter())
        except OSError as exc:
            self._failed.append(exc)
            self._waiting.cancel()
        finally:
            self._ended.set()

    async def _wait(self) -> None:
        """The engine's answer once the container ended (and, with
        auto-removal, was removed). Given up (the thread abandoned) only
        when :meth:`run` no longer needs it."""
        client, container = self.client, self.container

        def wait() -> dict[str, Any]:
            if self.auto_remove:
                return dict(client.wait(container, condition="removed"))
            return dict(client.wait(container, condition="next-exit"))

        with self._wait_scope:
            try:
                status = await trio.to_thread.run_sync(
                    wait, abandon_on_cancel=True, limiter=pump_limiter()
                )
            except STREAM_ERRORS:
                return  # gone: the run was cut short
        if self._wait_scope.cancelled_caught:
            return
        self._status = dict(status)
        self.removed = self.auto_remove
        self._exited.set()

    async def run(self) -> int:
        sock = await call(
            "attaching to the stage's container", lambda c: _attach(c, self.container), self.client
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, sock)
                nursery.start_soon(self._wait)
                try:
                    argv0, image = self.request.argv[0], self.req.spec.image
                    await call(
                        "starting the stage's container",
                        lambda c: _start(c, self.container, argv0, image),
                        self.client,
                    )
                    self._started = True
                    with self._waiting:
                        await self._ended.wait()
                        await self._exited.wait()
                finally:
                    with trio.CancelScope(shield=True):
                        await self._cut_short(sock)
                    self._wait_scope.cancel()  # if still waiting: no longer needed
        finally:
            with contextlib.suppress(OSError):
                sock.close()
        if self._failed:
            raise self._failed[0]
        code = int(self._status.get("StatusCode", -1))
        if not self.auto_remove and code != 0:
            container = self.container
            if await call(
                "inspecting the stage's container", lambda c: _oom_killed(c, container), self.client
            ):
                raise ProcessKilled(
                    f"killed: out of memory (limit {self.req.spec.memory_text})",
                    exit_code=code,
                    error_type="out_of_memory",
                )
        return code

    async def _cut_short(self, sock: Any) -> None:
        """Unless the container ended by itself: SIGTERM, SIGKILL after the
        grace; then the output stream must end (it does when a started
        container does; its socket is shut after :data:`STREAM_DRAIN`
        seconds, or at once when the container never started)."""
        if not (self._ended.is_set() and self._exited.is_set()):
            grace, container = self.request.kill_grace, self.container
            await call(
                "stopping the stage's container",
                lambda c: _stop(c, container, grace),
                self.client,
            )
        if self._started:
            with trio.move_on_after(STREAM_DRAIN):
                await self._ended.wait()
                if self.auto_remove:  # the engine removes it: until it is gone
                    await self._exited.wait()
        if not self._ended.is_set():
            _shut(sock)


class DockerExecutor:
    """A container per stage process on the local engine (see the module
    docstring)."""

    name: str = NAME
    container_fields: frozenset[str] = FIELDS

    async def run(self, request: ProcessRequest, output: StageOutput) -> int:
        """Run ``request.argv`` in a container; return its exit code.

        As ``docker run --rm`` does, the wait for the container's end is
        registered before it starts, and without a memory limit to check
        the engine removes it as it ends (``AutoRemove``); with one, it is
        inspected for an out-of-memory kill, then removed.

        Cancellation: SIGTERM, SIGKILL after ``request.kill_grace``, then the
        container is removed (shielded) before ``trio.Cancelled`` propagates.
        Errors: :class:`ExecutorError` (no image, the engine refused or is
        unreachable), :class:`ProcessKilled` (out of memory), ``OSError``
        from the output (the container is stopped first).
        """
        req = checked(request, NAME)
        auto_remove = req.spec.memory is None
        client = await trio.to_thread.run_sync(connect, limiter=limiter())
        try:
            container = await call(
                "creating the stage's container",
                lambda c: _create(c, request, req, auto_remove),
                client,
            )
            run = _ContainerRun(client, container, request, req, output, auto_remove)
            try:
                return await run.run()
            finally:
                if not run.removed:
                    with trio.CancelScope(shield=True):
                        await call(
                            "removing the stage's container",
                            lambda c: _remove(c, container),
                            client,
                        )
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(client.close, limiter=limiter())

    async def cleanup(self, daemon: str, live_runs: Collection[str]) -> int:
        """Remove the containers this executor made for ``daemon`` whose run
        is not in ``live_runs``; return how many. Nothing without an engine."""
        if not engine_present():
            return 0

        def run(client: docker.APIClient) -> int:
            removed = 0
            for found in client.containers(all=True, filters=daemon_filter(daemon, NAME)):
                if stale(found.get("Labels"), live_runs):
                    _remove(client, found["Id"])
                    removed += 1
            return removed

        client = await trio.to_thread.run_sync(connect, limiter=limiter())
        try:
            return await call("removing containers of interrupted runs", run, client)
        finally:
            await trio.to_thread.run_sync(client.close, limiter=limiter())


@hookimpl
def conveyor_executors() -> list[Executor]:
    return [DockerExecutor()]
