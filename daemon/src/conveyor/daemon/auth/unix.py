"""The unix socket, knowing who is at the other end.

grpcio does not tell a servicer the uid of a unix socket peer. So with
authentication on, the daemon itself listens on each public unix socket:
for every connection it reads the peer's credentials (``SO_PEERCRED``:
pid, uid, gid), opens a connection to gRPC's real listener on a private
socket (in a 0700 folder of the home, which only the daemon's user can
reach) from a socket bound to a fresh Linux abstract address, and relays
the bytes both ways (two threads per connection, each moving one
direction with ``splice`` through a pipe, so the bytes never pass through
Python or the trio loop). gRPC reports that address as the call's peer
(``unix-abstract:conveyord.<pid>.<random>``), and :class:`PeerRegistry`
maps it back to the credentials. A connection whose address is not in the
registry (someone connecting to the private socket directly) has no
identity.

Socket files are published without a moment of wrong permissions: each is
bound in a fresh 0700 folder beside its final path, given its mode and
group there, and then renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import logging
import os
import pwd
import secrets
import socket
import struct
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from conveyor.daemon.auth.identity import Principal
from conveyor.daemon.auth.policy import AccessPolicy, PeerCredentials

log = logging.getLogger(__name__)

#: Bytes moved at once by each direction of a relayed connection.
RELAY_BUFFER = 256 * 1024
#: The peer address prefix gRPC reports for an abstract unix socket.
ABSTRACT_PEER = "unix-abstract:"
_CREDENTIALS = struct.Struct("3i")
#: Seconds a uid's user name is remembered.
_NAME_TTL = 300.0


class SocketError(Exception):
    """A unix socket cannot be set up; the message says which and why."""


@dataclass
class LocalPeer:
    """An open relayed connection's peer, with the principal last made for it."""

    credentials: PeerCredentials
    cached: tuple[AccessPolicy, Principal] | None = None

    def principal(self, policy: AccessPolicy) -> Principal:
        cached = self.cached
        if cached is not None and cached[0] is policy:
            return cached[1]
        principal = policy.local_principal(self.credentials)
        self.cached = (policy, principal)
        return principal


class PeerRegistry:
    """Credentials of the open relayed connections, by gRPC peer address.
    Written by the trio loop, read by gRPC worker threads."""

    def __init__(self) -> None:
        self._peers: dict[str, LocalPeer] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def add(self, peer: str, credentials: PeerCredentials) -> None:
        self._peers[peer] = LocalPeer(credentials)

    def remove(self, peer: str) -> None:
        self._peers.pop(peer, None)

    def get(self, peer: str) -> LocalPeer | None:
        return self._peers.get(peer)


# -- socket files ----------------------------------------------------------------------


def parse_mode(text: str) -> int:
    return int(text, 8)


def group_id(group: str) -> int | None:
    """The gid of ``group`` (a name or a number); None for ""."""
    if not group:
        return None
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise SocketError(f"socket_group: no group named {group!r}") from None


def staging_folder(public: Path) -> Path:
    """A fresh 0700 folder beside ``public`` to bind it in (blocking)."""
    public.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".conveyord-", dir=public.parent))


def publish(staged: Path, public: Path, mode: int, gid: int | None) -> None:
    """Give the socket bound at ``staged`` its mode and group, move it to
    ``public`` (replacing a stale one) and remove its staging folder."""
    try:
        if gid is not None:
            os.chown(staged, -1, gid)
        os.chmod(staged, mode)
        os.replace(staged, public)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(staged.parent)


def private_folder(home: Path) -> Path:
    """The 0700 folder of gRPC's private socket, owned by the daemon's
    user (blocking); SocketError when another user owns it."""
    folder = home / "run"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if info.st_uid != os.getuid() or not os.path.isdir(folder) or folder.is_symlink():
        raise SocketError(f"{folder} must be a folder owned by the daemon's user")
    if info.st_mode & 0o077:
        os.chmod(folder, 0o700)
    return folder


# -- the relay ---------------------------------------------------------------------------


class _Names:
    """uid -> user name, looked up in a worker thread (NSS may be slow) and
    remembered a while."""

    def __init__(self) -> None:
        self._names: dict[int, tuple[str, float]] = {}
        self._lock = threading.Lock()

    async def of(self, uid: int) -> str:
        now = time.monotonic()
        known = self._names.get(uid)
        if known is not None and now - known[1] < _NAME_TTL:
            return known[0]
        name = await trio.to_thread.run_sync(_user_name, uid)
        if len(self._names) > 4096:
            self._names.clear()
        self._names[uid] = (name, now)
        return name


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


class SocketRelay:
    """Serves one public unix socket by relaying each connection to gRPC's
    private socket, recording its peer's credentials in ``registry``.

    Cancellation: cancelling :meth:`serve` closes the listener, every
    relayed connection, and removes the socket file.
    """

    def __init__(
        self,
        public: Path,
        private: Path,
        registry: PeerRegistry,
        *,
        mode: int = 0o600,
        gid: int | None = None,
        max_connections: int = 1024,
    ) -> None:
        self.public = public
        self.private = private
        self.registry = registry
        self.mode = mode
        self.gid = gid
        self.max_connections = max_connections
        self.open_connections = 0
        self._names = _Names()
        #: Two threads per relayed connection.
        self._threads = trio.CapacityLimiter(2 * max_connections)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staged: Path | None = None
        try:
            folder = await trio.to_thread.run_sync(staging_folder, self.public)
            staged = folder / "s"
            await listener.bind(str(staged))
            listener.listen(1024)
            await trio.to_thread.run_sync(publish, staged, self.public, self.mode, self.gid)
            staged = None
            task_status.started()
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        conn, _ = await listener.accept()
                    except OSError as exc:
                        if exc.errno not in (
                            errno.EMFILE,
                            errno.ENFILE,
                            errno.ENOMEM,
                            errno.ENOBUFS,
                        ):
                            raise
                        log.warning("cannot accept on %s: %s; retrying", self.public, exc)
                        await trio.sleep(0.1)
                        continue
                    if self.open_connections >= self.max_connections:
                        log.warning(
                            "%s: %d connections are open, the most allowed (setting"
                            " max_connections): closing a new one",
                            self.public,
                            self.open_connections,
                        )
                        conn.close()
                        continue
                    self.open_connections += 1
                    nursery.start_soon(self._relay, conn)
        finally:
            listener.close()
            if staged is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_remove_folder, staged.parent)
            else:
                _unlink_if_ours(self.public)

    async def _relay(self, conn: trio.socket.SocketType) -> None:
        upstream = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        peer = ""
        try:
            pid, uid, gid = _CREDENTIALS.unpack(
                conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
            )
            user = await self._names.of(uid)
            name = await _bind_abstract(upstream)
            peer = ABSTRACT_PEER + name
            self.registry.add(peer, PeerCredentials(pid, uid, gid, user))
            await upstream.connect(str(self.private))
            # blocking sockets from here: the bytes are copied by two threads
            client = socket.socket(fileno=conn.detach())
            server = socket.socket(fileno=upstream.detach())
            with client, server:
                client.setblocking(True)
                server.setblocking(True)
                await self._pump_both(client, server)
        except OSError as exc:
            log.debug("relay of a connection to %s ended: %s", self.public, exc)
        finally:
            if peer:
                self.registry.remove(peer)
            upstream.close()
            conn.close()
            self.open_connections -= 1

    async def _pump_both(self, client: socket.socket, server: socket.socket) -> None:
        """Copy bytes both ways, each direction in a worker thread (a thread
        blocked in recv wakes faster than the loop, and it keeps relayed
        bytes off the loop), until either side closes. Cancellation shuts
        both sockets down, which ends the threads."""
        async with trio.open_nursery() as nursery:

            async def stop_when_cancelled() -> None:
                try:
                    await trio.sleep_forever()
                finally:
                    _shut(client)
                    _shut(server)

            nursery.start_soon(stop_when_cancelled)
            async with trio.open_nursery() as pumps:
                for source, sink in ((client, server), (server, client)):
                    pumps.start_soon(
                        partial(
                            trio.to_thread.run_sync,
                            _pump,
                            source,
                            sink,
                            limiter=self._threads,
                            thread_name="conveyord relay",
                        )
                    )
            nursery.cancel_scope.cancel()


async def _bind_abstract(sock: trio.socket.SocketType) -> str:
    """Bind ``sock`` to a fresh abstract address; returns its name."""
    for _ in range(5):
        name = f"conveyord.{os.getpid()}.{secrets.token_hex(8)}"
        try:
            await sock.bind("\0" + name)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        return name
    raise OSError(errno.EADDRINUSE, "no free abstract socket address")


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` to ``sink`` until either side closes or fails, then
    shut both down so the other direction ends too (blocking). The bytes go
    through a pipe with ``splice``: the kernel moves them, this thread only
    says how many, and holds the GIL for a moment per chunk."""
    read_end, write_end = os.pipe()
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, RELAY_BUFFER)
        src, dst = source.fileno(), sink.fileno()
        while True:
            size = os.splice(src, write_end, RELAY_BUFFER)
            if not size:
                return
            while size:
                size -= os.splice(read_end, dst, size)
    except OSError:
        return
    finally:
        os.close(read_end)
        os.close(write_end)
        _shut(source)
        _shut(sink)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _remove_folder(folder: Path) -> None:
    for child in folder.iterdir():
        child.unlink(missing_ok=True)
    folder.rmdir()


def _unlink_if_ours(path: Path) -> None:
    """Remove the socket file at ``path`` unless another process has since
    put something else there (a socket we did not make stays)."""
    try:
        if path.is_socket():
            path.unlink()
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
