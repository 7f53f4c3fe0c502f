"""Check out a small, plain commit without starting git.

``git read-tree -u --reset`` costs a run a process start and git's own
start-up: about 3 of the 6 ms a checkout of a one-file tree took on the
benchmark machine, where writing each file costs the same whoever writes
it. For a tree that needs nothing of git's checkout machinery, the daemon
does the same work itself:

- :func:`read` reads the commit's trees and blobs from the ``git cat-file
  --batch`` process the daemon already keeps for the repository (see
  :class:`~conveyor.daemon.vcs.CatFiles`), a level of trees and then the
  blobs, :data:`BATCH` questions per write, except those an
  :class:`ObjectCache` kept from earlier reads (the submit's commit and
  pipeline file among them);
- :func:`write_tree` writes the files, then the index git would have
  written (version 2, each entry with the stat data of the file just
  written, so ``git diff-files`` and ``git status`` see a clean work tree
  without reading a file). It runs in a writer thread (:func:`in_writer`)
  whose umask is its own, so files get git's modes without a ``chmod``
  each while every other thread keeps the daemon's stricter umask.

What is written is what git writes: the blobs' bytes (no line-ending or
other conversion: the daemon user's git configuration for those applies to
neither way, see :func:`~conveyor.daemon.vcs.checkout`), regular files
``0644`` or ``0755``, folders ``0755``, symbolic links as links.

Anything else goes to git, which then does what it always did: :func:`read`
returns None for a tree that has a ``.gitattributes`` or ``.gitmodules``
file anywhere (filters, line endings, submodules), a submodule or an
unknown mode, a name git might refuse or treat specially (``.git`` in any
spelling, ``..``, a backslash, a colon, a ``~``, anything not ASCII), a
malformed tree, more than :data:`MAX_ENTRIES` files, an object over
:data:`MAX_OBJECT_BYTES`, or over :data:`MAX_TOTAL_BYTES` in all. Objects
found too big are remembered, so later checkouts of the same content go to
git straight away. ``make bench`` (``checkout``) measures both ways for
trees of 1 to 100 files: beyond a few dozen files the file system's cost
per file is all there is, and the daemon's loop is better left to others.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio

from conveyor.daemon.executors.process import STAGE_UMASK
from conveyor.daemon.files import write_all
from conveyor.daemon.libc import glibc

#: Files (and links) in a tree the daemon writes itself, at most (see
#: ``make bench``, ``checkout``).
MAX_ENTRIES = 100
#: Bytes of one object (tree or blob) read for a checkout, at most.
MAX_OBJECT_BYTES = 1 << 20
#: Bytes of all a checkout's objects, at most.
MAX_TOTAL_BYTES = 4 << 20
#: Objects asked for in one write to git (their names fit a pipe's buffer,
#: so git's answers never wait on our questions).
BATCH = 64
#: Object ids remembered as too big (see :func:`read`).
REMEMBERED = 1024
#: Bytes of objects an :class:`ObjectCache` keeps, at most; an object over
#: an eighth of it is not kept.
CACHE_BYTES = 4 << 20

_TREE = 0o040000
_FILE = 0o100644
_EXECUTABLE = 0o100755
_LINK = 0o120000
_MODES = {_TREE, _FILE, _EXECUTABLE, _LINK}
#: Names that make git's checkout do more than write the blob: attributes
#: (filters, line endings, encodings) and submodules. Compared lowercased.
_GIT_FILES = {b".gitattributes", b".gitmodules"}
#: Characters git's path checks care about on some file system.
_GIT_CHARS = (b"\\", b":", b"~")

#: ``unshare``'s flag for a file-system context of one's own (cwd, root, umask).
CLONE_FS = 0x200

#: Threads preparing and writing checkouts (each with a umask of its own:
#: see :func:`_start_writer`).
WRITERS = 2

T = TypeVar("T")

_too_big: OrderedDict[bytes, None] = OrderedDict()
_threads = threading.local()
_writers: ThreadPoolExecutor | None = None


class BatchReader(Protocol):
    """Questions to, and answers from, a ``git cat-file --batch`` process."""

    async def ask(self, name: str) -> None: ...

    async def header(self) -> bytes: ...

    async def body(self, size: int) -> bytes: ...

    async def skip(self, size: int) -> None: ...


@dataclass(frozen=True)
class TreeFile:
    """One file of a commit's tree, ready to write."""

    #: Relative to the work tree, ``/``-separated.
    path: bytes
    #: Git's mode: 100644, 100755 or 120000 (a link).
    mode: int
    #: The blob's id, binary.
    oid: bytes
    #: The blob: the file's bytes, or the link's target.
    data: bytes


class ObjectCache:
    """Git objects read from repositories, kept for the next checkouts: by
    repository (``key``: which repository a path named when it was read)
    and object id, at most :data:`CACHE_BYTES` in all, the least recently
    used going first. An object id names the same bytes for ever, so a kept
    object is what git would answer; the next commit of a repository shares
    most of its trees and blobs with the last one."""

    def __init__(self, limit: int = CACHE_BYTES) -> None:
        self.limit = limit
        self.size = 0
        self._kept: OrderedDict[tuple[Hashable, bytes], tuple[bytes, bytes]] = OrderedDict()

    def get(self, key: Hashable, oid: bytes) -> tuple[bytes, bytes] | None:
        """(type, body) of the object ``oid`` (binary id) if kept."""
        found = self._kept.get((key, oid))
        if found is not None:
            self._kept.move_to_end((key, oid))
        return found

    def put(self, key: Hashable, oid: bytes, kind: bytes, body: bytes) -> None:
        if len(body) > self.limit // 8 or (key, oid) in self._kept:
            return
        self._kept[(key, oid)] = (kind, body)
        self.size += len(body)
        while self.size > self.limit:
            _, (_, dropped) = self._kept.popitem(last=False)
            self.size -= len(dropped)

    def clear(self) -> None:
        self._kept.clear()
        self.size = 0


@dataclass(frozen=True)
class _Source:
    """Where a checkout's objects come from: the cache first, then git."""

    reader: BatchReader
    cache: ObjectCache
    key: Hashable


class _NotPlain(Exception):
    """The tree is git's to check out."""


def _plain_name(name: bytes) -> bool:
    if not name or name in (b".", b"..") or b"/" in name or not name.isascii():
        return False
    lower = name.lower()
    if lower.rstrip(b". ") == b".git" or lower in _GIT_FILES:
        return False
    return not any(char in name for char in _GIT_CHARS)


def _tree_entries(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(mode, name, binary id) of each entry of a tree object. Raises
    :class:`_NotPlain` when the tree is malformed, has a mode or a name
    left to git, or names a thing twice."""
    entries: list[tuple[int, bytes, bytes]] = []
    names: set[bytes] = set()
    at = 0
    try:
        while at < len(data):
            space = data.index(b" ", at)
            end = data.index(b"\0", space)
            mode = int(data[at:space], 8)
            name = data[space + 1 : end]
            oid = data[end + 1 : end + 21]
            at = end + 21
            if mode not in _MODES or len(oid) != 20 or not _plain_name(name) or name in names:
                raise _NotPlain
            names.add(name)
            entries.append((mode, name, oid))
    except ValueError:
        raise _NotPlain from None
    return entries


def _remember_too_big(oid: bytes) -> None:
    _too_big[oid] = None
    _too_big.move_to_end(oid)
    while len(_too_big) > REMEMBERED:
        _too_big.popitem(last=False)


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_TOTAL_BYTES


async def _objects(
    source: _Source, oids: list[bytes], kind: bytes, budget: _Budget
) -> dict[bytes, bytes]:
    """The bodies of ``oids`` (binary ids), each of type ``kind``: those
    kept in the cache, then the others from git, asked :data:`BATCH` at a
    time (and kept). Raises :class:`_NotPlain` before asking anything when
    one is known to be too big; else once every answer asked for is read,
    when one is missing, of another type, or too big."""
    if any(oid in _too_big for oid in oids):
        raise _NotPlain
    bodies: dict[bytes, bytes] = {}
    missing: list[bytes] = []
    for oid in oids:
        kept = source.cache.get(source.key, oid)
        if kept is None or kept[0] != kind:
            missing.append(oid)
        elif len(kept[1]) > budget.left:
            raise _NotPlain
        else:
            budget.left -= len(kept[1])
            bodies[oid] = kept[1]
    reader = source.reader
    for start in range(0, len(missing), BATCH):
        chunk = missing[start : start + BATCH]
        await reader.ask("\n".join(oid.hex() for oid in chunk))
        refused = False
        for oid in chunk:
            fields = (await reader.header()).split()
            if len(fields) != 3:  # "<name> missing" and the like: no body
                refused = True
                continue
            size = int(fields[2])
            if refused or fields[1] != kind or size > min(MAX_OBJECT_BYTES, budget.left):
                await reader.skip(size)
                if size > MAX_OBJECT_BYTES:
                    _remember_too_big(oid)
                refused = True
                continue
            budget.left -= size
            bodies[oid] = body = await reader.body(size)
            source.cache.put(source.key, oid, kind, body)
        if refused:
            raise _NotPlain
    return bodies


async def _walk(
    source: _Source, root: bytes, tree: bytes, budget: _Budget
) -> list[tuple[bytes, int, bytes]]:
    """(path, mode, blob id) of every file under the tree ``root``, whose
    object ``tree`` is already read."""
    files: list[tuple[bytes, int, bytes]] = []
    trees = {root: tree}
    level: list[tuple[bytes, bytes]] = [(b"", root)]
    while level:
        below: list[tuple[bytes, bytes]] = []
        for prefix, oid in level:
            for mode, name, entry in _tree_entries(trees[oid]):
                path = prefix + name
                if mode == _TREE:
                    below.append((path + b"/", entry))
                else:
                    files.append((path, mode, entry))
            if len(files) + len(below) > MAX_ENTRIES:
                raise _NotPlain
        trees = await _objects(source, list({oid: None for _, oid in below}), b"tree", budget)
        level = below
    return files


async def read(
    reader: BatchReader, commit: str, cache: ObjectCache, key: Hashable
) -> list[TreeFile] | None:
    """The files of ``commit``'s tree, from ``cache`` (objects of the
    repository ``key``) or else read through ``reader``; None when the tree
    is git's to check out (see the module's description). Every answer
    asked for is read before returning, so the reader can serve the next
    exchange."""
    if len(commit) != 40:  # a SHA-256 repository: git's
        return None
    source = _Source(reader, cache, key)
    budget = _Budget()
    try:
        root, tree = await _root_tree(source, commit, budget)
        listed = await _walk(source, root, tree, budget)
        blobs = await _objects(source, list({oid: None for _, _, oid in listed}), b"blob", budget)
    except _NotPlain:
        return None
    files = [TreeFile(path, mode, oid, blobs[oid]) for path, mode, oid in listed]
    if any(file.mode == _LINK and (not file.data or b"\0" in file.data) for file in files):
        return None
    return files


async def _root_tree(source: _Source, commit: str, budget: _Budget) -> tuple[bytes, bytes]:
    """The id and the object of ``commit``'s tree: from the commit object
    when it is kept (``SubmitRun`` keeps the commits it reads), else in one
    question to git."""
    kept = source.cache.get(source.key, bytes.fromhex(commit))
    if kept is not None and kept[0] == b"commit" and kept[1].startswith(b"tree "):
        root = bytes.fromhex(kept[1][5:45].decode())
        return root, (await _objects(source, [root], b"tree", budget))[root]
    reader = source.reader
    await reader.ask(f"{commit}^{{tree}}")
    fields = (await reader.header()).split()
    if len(fields) != 3:
        raise _NotPlain
    root, size = bytes.fromhex(fields[0].decode()), int(fields[2])
    if fields[1] != b"tree" or size > min(MAX_OBJECT_BYTES, budget.left):
        await reader.skip(size)
        raise _NotPlain
    budget.left -= size
    tree = await reader.body(size)
    source.cache.put(source.key, root, b"tree", tree)
    return root, tree


def _start_writer() -> None:
    """Give a writer thread a file-system context (cwd, root, umask) of its
    own, so it can write with the stage umask while what other threads
    make keeps the daemon's. Left shared when the C library cannot: files
    then get their modes one by one."""
    unshare = glibc("unshare", ctypes.c_int)
    _threads.own_umask = unshare is not None and unshare(CLONE_FS) == 0


@contextlib.contextmanager
def _stage_umask() -> Iterator[bool]:
    """The stage umask for what the block makes, when the calling thread
    has a umask of its own (a writer thread); False when it has not."""
    if not getattr(_threads, "own_umask", False):
        yield False
        return
    kept = os.umask(STAGE_UMASK)
    try:
        yield True
    finally:
        os.umask(kept)


async def in_writer(work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` in one of the :data:`WRITERS` writer threads, whose
    :func:`write_tree` needs no mode change per file. Waits for the work to
    end even when cancelled, as ``trio.to_thread.run_sync`` does (the caller
    may remove the workspace next)."""
    global _writers
    if _writers is None:
        _writers = ThreadPoolExecutor(WRITERS, "checkout-writer", initializer=_start_writer)
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    future = _writers.submit(work, *args)
    future.add_done_callback(lambda _: token.run_sync_soon(done.set))
    with trio.CancelScope(shield=True):
        await done.wait()
    return future.result()


def _write_file(path: bytes, file: TreeFile, masked: bool) -> os.stat_result:
    """Write one file as git would (``masked``: the umask gives it its mode); its stat data."""
    if file.mode == _LINK:
        os.symlink(file.data, path)
        return os.lstat(path)
    perm = 0o755 if file.mode == _EXECUTABLE else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, perm)
    try:
        write_all(fd, file.data)
        if not masked:
            os.fchmod(fd, perm)
        return os.fstat(fd)
    finally:
        os.close(fd)


def index_entry(path: bytes, mode: int, oid: bytes, info: os.stat_result) -> bytes:
    """One version-2 index entry: the stat data git compares, the blob id,
    the path, NUL padding to a multiple of 8 bytes."""
    ctime_s, ctime_ns = divmod(info.st_ctime_ns, 1_000_000_000)
    mtime_s, mtime_ns = divmod(info.st_mtime_ns, 1_000_000_000)
    fields = [ctime_s, ctime_ns, mtime_s, mtime_ns, info.st_dev, info.st_ino]
    fields += [mode, info.st_uid, info.st_gid, info.st_size]
    head = struct.pack(">10I", *(field & 0xFFFFFFFF for field in fields))
    entry = head + oid + struct.pack(">H", min(len(path), 0xFFF)) + path
    return entry + b"\0" * (8 - len(entry) % 8)


def index_file(entries: Iterable[bytes], count: int) -> bytes:
    """A version-2 index of ``entries`` (sorted by path), with its checksum."""
    body = b"DIRC" + struct.pack(">II", 2, count) + b"".join(entries)
    return body + hashlib.sha1(body).digest()


def write_tree(workspace: Path, files: list[TreeFile]) -> None:
    """Write ``files`` into ``workspace`` (a work tree with no files yet,
    its ``.git`` ready), then its index, with the modes git gives them
    under the stage umask. Blocking: fastest in a writer thread (see
    :func:`in_writer`)."""
    with _stage_umask() as masked:
        _write(os.fsencode(workspace) + b"/", files, masked)


def _write(root: bytes, files: list[TreeFile], masked: bool) -> None:
    folders: set[bytes] = set()
    entries: list[tuple[bytes, bytes]] = []
    for file in files:
        parent = file.path.rpartition(b"/")[0]
        if parent and parent not in folders:
            missing: list[bytes] = []
            while parent and parent not in folders:
                missing.append(parent)
                parent = parent.rpartition(b"/")[0]
            for folder in reversed(missing):
                os.mkdir(root + folder, 0o755)
                if not masked:
                    os.chmod(root + folder, 0o755)
                folders.add(folder)
        info = _write_file(root + file.path, file, masked)
        # the tree's modes are the index's (100644, 100755, 120000)
        entries.append((file.path, index_entry(file.path, file.mode, file.oid, info)))
    entries.sort()
    index = index_file((entry for _, entry in entries), len(entries))
    fd = os.open(root + b".git/index", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, index)
        if not masked:
            os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
