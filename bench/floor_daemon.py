"""The least a daemon bound by Conveyor's rules does for a run: the floor
that ``python -m bench floor`` measures beside ``conveyord``.

``python -m bench.floor_daemon SOCKET FOLDER [--no-store]`` serves five
calls on a unix socket (grpcio, raw bytes, no protobuf): ``Submit`` takes
a run's stages (JSON: ``{"stages": {name: {"run": command, "needs":
[names]}}}``) and answers with its id once it is stored; ``Wait`` answers
once that run has ended; ``Active`` answers with the number of runs not
yet ended; ``Ping`` answers with the wall clock (ns) that
the loop read when the call reached it; ``Follow`` submits a one-stage run
(JSON: ``{"run": command}``) and streams its stage's log as it grows,
from the gRPC server's thread (reads of up to 1 MiB, a look every 2 ms
when there was nothing new), to the end once the run has ended. What it
keeps of the rules, each in its cheapest form:

- a trio loop; the gRPC server's threads reach it through
  ``trio.from_thread.run`` (the daemon has its own bridge);
- SQLite (WAL, ``synchronous=NORMAL``) written only in a worker thread, one
  transaction for all writes asked for at once (group commit);
- an acknowledged submit is committed before the answer; a stage's end is
  committed before anything that needs it starts, the stages it lets start
  recorded ``running`` in the same transaction (as the daemon does);
- a workspace per run with the pipeline file written into it, and a log
  file per stage (kept after the run), made in a worker thread before the
  first stage starts;
- each stage ``sh -c COMMAND`` in its own session, started on the loop
  (``vfork``), its output into its log file, its end seen through a pidfd;
- the run's end committed with its last stage's, then its workspace removed.

With ``--no-store`` nothing is written to SQLite (a write is a checkpoint
of the loop): what the floor costs without the durability rules.

What it leaves out (so the floor is below what any daemon doing the job
needs): reading the pipeline from git, validation, checkout of a commit,
events kept for followers and their streams, tracing, plugins and hooks,
authentication, audit records, timeouts, retries, secrets, a failed
stage's dependents (all stages here succeed), and a restart's recovery.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import trio

SERVICE = "floor.Floor"
#: The most a log read takes (the daemon's too).
CHUNK = 1 << 20
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, status TEXT, created REAL, finished REAL);
CREATE TABLE IF NOT EXISTS stages (run INTEGER, name TEXT, status TEXT, PRIMARY KEY (run, name));
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, run INTEGER, stage TEXT, status TEXT);
"""

Write = Callable[[sqlite3.Connection], None]


class Store:
    """Group commit: writes asked for while a transaction commits go
    together in the next one, in a worker thread; each caller waits for its
    own."""

    def __init__(self, path: Path, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        self._pending: list[tuple[Write, trio.Event]] = []
        self._wake = trio.Event()

    async def write(self, fn: Write) -> None:
        if not self.enabled:
            await trio.lowlevel.checkpoint()
            return
        done = trio.Event()
        self._pending.append((fn, done))
        self._wake.set()
        await done.wait()

    def _commit(self, batch: list[tuple[Write, trio.Event]]) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        for fn, _ in batch:
            fn(self._conn)
        self._conn.execute("COMMIT")

    async def serve(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            batch, self._pending = self._pending, []
            await trio.to_thread.run_sync(self._commit, batch)
            for _, done in batch:
                done.set()


class Floor:
    def __init__(self, folder: Path, nursery: trio.Nursery, *, store: bool) -> None:
        self.folder = folder
        self.store = Store(folder / "floor.db", enabled=store)
        self.nursery = nursery
        self.ids = itertools.count(1)
        #: The runs not yet ended, each with the event set when it ends.
        self.ended: dict[int, trio.Event] = {}

    async def submit(self, stages: dict[str, dict[str, Any]]) -> int:
        run_id = next(self.ids)

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO runs VALUES (?, 'running', ?, NULL)", (run_id, time.time()))
            # The first stages are stored running with their run.
            conn.executemany(
                "INSERT INTO stages VALUES (?, ?, ?)",
                [
                    (run_id, n, "pending" if s.get("needs") else "running")
                    for n, s in stages.items()
                ],
            )
            conn.execute("INSERT INTO events (run, status) VALUES (?, 'running')", (run_id,))

        await self.store.write(insert)
        ended = self.ended[run_id] = trio.Event()
        self.nursery.start_soon(self.run, run_id, stages, ended)
        return run_id

    async def submit_watched(self, stages: dict[str, dict[str, Any]]) -> tuple[int, trio.Event]:
        """:meth:`submit`, and the event set when the run has ended."""
        run_id = await self.submit(stages)
        return run_id, self.ended[run_id]  # the run has not started yet

    async def wait(self, run_id: int) -> None:
        ended = self.ended.get(run_id)  # gone: the run has ended
        if ended is not None:
            await ended.wait()

    def log_path(self, run_id: int, stage: str) -> Path:
        return self.folder / "logs" / f"{run_id}-{stage}"

    async def run(self, run_id: int, stages: dict[str, dict[str, Any]], ended: trio.Event) -> None:
        workspace = self.folder / f"run-{run_id}"
        paths = {name: self.log_path(run_id, name) for name in stages}
        logs = await trio.to_thread.run_sync(_prepare, workspace, stages, paths)
        done = {name: trio.Event() for name in stages}
        left = [len(stages)]
        async with trio.open_nursery() as nursery:
            for name, spec in stages.items():
                nursery.start_soon(
                    self.stage, run_id, name, spec, stages, done, left, workspace, logs[name]
                )
        for fd in logs.values():
            os.close(fd)
        await trio.to_thread.run_sync(shutil.rmtree, workspace)
        del self.ended[run_id]
        ended.set()

    async def stage(
        self,
        run_id: int,
        name: str,
        spec: dict[str, Any],
        stages: dict[str, dict[str, Any]],
        done: dict[str, trio.Event],
        left: list[int],
        workspace: Path,
        log: int,
    ) -> None:
        for need in spec.get("needs", []):
            await done[need].wait()
        proc = _start(spec["run"], workspace, log)
        pidfd = os.pidfd_open(proc.pid)
        try:
            await trio.lowlevel.wait_readable(pidfd)
        finally:
            trio.lowlevel.notify_closing(pidfd)
            os.close(pidfd)
        status = "succeeded" if proc.wait() == 0 else "failed"
        # The stages this end lets start, recorded running with it.
        starting = [
            other
            for other, s in stages.items()
            if name in s.get("needs", [])
            and all(n == name or done[n].is_set() for n in s.get("needs", []))
        ]
        left[0] -= 1
        last = left[0] == 0

        def record(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE stages SET status = ? WHERE run = ? AND name = ?", (status, run_id, name)
            )
            conn.execute(
                "INSERT INTO events (run, stage, status) VALUES (?, ?, ?)", (run_id, name, status)
            )
            for other in starting:
                conn.execute(
                    "UPDATE stages SET status = 'running' WHERE run = ? AND name = ?",
                    (run_id, other),
                )
            if last:
                conn.execute(
                    "UPDATE runs SET status = 'succeeded', finished = ? WHERE id = ?",
                    (time.time(), run_id),
                )

        await self.store.write(record)
        done[name].set()


def _start(command: str, workspace: Path, log: int) -> subprocess.Popen[bytes]:
    """``sh -c command`` in its own session, its output into its log: on
    the loop, as the daemon does (CPython starts it with ``vfork``, so the
    loop waits only for the ``exec``)."""
    return subprocess.Popen(
        ["sh", "-c", command],
        executable="/bin/sh",
        cwd=workspace,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )


def _prepare(
    workspace: Path, stages: dict[str, dict[str, Any]], paths: dict[str, Path]
) -> dict[str, int]:
    """The run's workspace with its pipeline file, and its stages' logs."""
    workspace.mkdir()
    (workspace / "conveyor.yaml").write_text(json.dumps({"stages": stages}))
    return {
        name: os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        for name, path in paths.items()
    }


def _follow(path: Path, ended: Callable[[], bool]) -> Iterator[bytes]:
    """A log's bytes as they come, until ``ended()`` and all are read."""
    while not path.exists():
        time.sleep(0.001)
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = 0
        while True:
            finished = ended()  # before the read: a last read then gets the rest
            data = os.pread(fd, CHUNK, offset)
            if data:
                offset += len(data)
                yield data
            elif finished:
                return
            else:
                time.sleep(0.002)
    finally:
        os.close(fd)


def _handlers(floor: Floor, token: trio.lowlevel.TrioToken) -> grpc.GenericRpcHandler[bytes, bytes]:
    def submit(request: bytes, context: grpc.ServicerContext) -> bytes:
        stages = json.loads(request)["stages"]
        run_id = trio.from_thread.run(floor.submit, stages, trio_token=token)
        return str(run_id).encode()

    def active(request: bytes, context: grpc.ServicerContext) -> bytes:
        return str(trio.from_thread.run_sync(len, floor.ended, trio_token=token)).encode()

    def ping(request: bytes, context: grpc.ServicerContext) -> bytes:
        return str(trio.from_thread.run_sync(time.time_ns, trio_token=token)).encode()

    def follow(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        stages = {"log": {"run": json.loads(request)["run"]}}
        run_id, ended = trio.from_thread.run(floor.submit_watched, stages, trio_token=token)
        path = floor.log_path(run_id, "log")
        yield from _follow(path, ended.is_set)
        path.unlink()  # a benchmark's logs are not kept

    def wait(request: bytes, context: grpc.ServicerContext) -> bytes:
        trio.from_thread.run(floor.wait, int(request), trio_token=token)
        return b"ok"

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Submit": grpc.unary_unary_rpc_method_handler(submit),
            "Wait": grpc.unary_unary_rpc_method_handler(wait),
            "Active": grpc.unary_unary_rpc_method_handler(active),
            "Ping": grpc.unary_unary_rpc_method_handler(ping),
            "Follow": grpc.unary_stream_rpc_method_handler(follow),
        },
    )


async def serve(socket: str, folder: Path, store: bool) -> None:
    async with trio.open_nursery() as nursery:
        floor = Floor(folder, nursery, store=store)
        nursery.start_soon(floor.store.serve)
        server = grpc.server(ThreadPoolExecutor(max_workers=256))
        server.add_generic_rpc_handlers((_handlers(floor, trio.lowlevel.current_trio_token()),))
        server.add_insecure_port(f"unix:{socket}")
        server.start()
        print("ready", flush=True)
        try:
            await trio.sleep_forever()
        finally:
            server.stop(None)


def main() -> None:
    socket, folder = sys.argv[1], Path(sys.argv[2])
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, socket, folder, "--no-store" not in sys.argv[3:])


if __name__ == "__main__":
    main()
