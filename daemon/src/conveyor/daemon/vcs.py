"""Git access: resolve a ref, read the pipeline file, check out a workspace.

Git runs as subprocesses through trio; the little file work runs in threads.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import trio

from conveyor.daemon import native_checkout
from conveyor.daemon.errors import ConveyorError, FailedPrecondition, InvalidArgument, NotFound
from conveyor.daemon.executors.base import StageUser
from conveyor.daemon.executors.process import STAGE_UMASK, resolved_program
from conveyor.daemon.executors.stage_user import hand_over_workspace
from conveyor.daemon.spare_workspaces import SpareWorkspaces, fill_skeleton, make_skeleton

_REF_RE = re.compile(r"^[^\s\x00-\x1f\x7f~^:?*\[\\]+$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}


class GitError(Exception):
    pass


@dataclass(frozen=True)
class Revision:
    commit: str
    pipeline_text: str
    #: The pipeline file's blob id: the same id is the same text.
    pipeline_blob: str
    #: ``branch`` or ``tag``: what the submitted ref names; "" for a commit
    #: id or any other ref.
    ref_type: str = ""
    #: The release-like tags (``refs/tags/v1.2.3``) pointing at the commit,
    #: read with it; None when they were not read (ask :func:`commit_tags`).
    release_tags: tuple[str, ...] | None = None


def ref_type_of(ref: str) -> str:
    """``branch`` or ``tag`` for a full ref (``refs/heads/x``, ``refs/tags/x``), else ""."""
    if ref.startswith("refs/heads/"):
        return "branch"
    if ref.startswith("refs/tags/"):
        return "tag"
    return ""


def repository_path(repository: str) -> Path:
    """A local repository path from a path or ``file://`` URL."""
    if repository.startswith("file://"):
        repository = urlparse(repository).path
    elif "://" in repository:
        raise InvalidArgument(
            f"repository {repository!r}: only local paths and file:// URLs are supported",
            field="repository",
        )
    path = Path(repository)
    if not path.is_absolute():
        raise InvalidArgument(
            f"repository {repository!r} must be an absolute path", field="repository"
        )
    return path


def git_objects_dir(repo: Path) -> Path:
    """The object store of a bare or non-bare repository.

    Raises NotFound when ``repo`` is not a git repository, InvalidArgument
    when the file system refuses the path (too long, a loop, no permission).
    """
    try:
        if (repo / ".git" / "objects").is_dir():
            return repo / ".git" / "objects"
        if (repo / "objects").is_dir() and (repo / "HEAD").is_file():
            return repo / "objects"
    except OSError as exc:
        raise InvalidArgument(
            f"repository {str(repo)!r} cannot be read: {exc.strerror or exc}", field="repository"
        ) from None
    raise NotFound(f"repository not found: {repo} is not a git repository", field="repository")


def _git_env() -> dict[str, str]:
    return {**os.environ, **_GIT_ENV}


async def resolve(
    repo: Path,
    ref: str,
    pipeline_path: str,
    *,
    commit: str = "",
    readers: CatFiles | None = None,
) -> Revision:
    """Resolve ``commit`` (or, without it, ``ref``) to a commit and read
    ``pipeline_path`` at that commit; tell whether ``ref`` names a branch or
    a tag.

    One ``git cat-file --batch`` process answers all of it, so the file is
    read from exactly the commit returned. A short ``ref`` (``main``) is a
    tag if ``refs/tags/main`` exists, else a branch if ``refs/heads/main``
    does (git's own order when it resolves the name). With ``readers``, the
    process is one they keep for the repository between calls.
    """
    target = commit or ref
    if not _REF_RE.match(target) or target.startswith("-"):
        field = "commit" if commit else "ref"
        raise InvalidArgument(f"{field} {target!r} is not a valid git ref or commit", field=field)
    if _CONTROL_RE.search(pipeline_path):
        # a line break would end git's batch input and start another request
        raise InvalidArgument(
            f"pipeline_path {pipeline_path!r} must not contain control characters",
            field="pipeline_path",
        )
    objects, candidates = await trio.to_thread.run_sync(_read_repository, repo, readers is not None)
    ref_type = ref_type_of(ref)
    short_ref = "" if ref_type else ref
    release_tags: tuple[str, ...] | None = None
    if readers is not None:
        async with readers.reader(repo, objects) as reader:
            kind, resolved, blob, content, short_type = await _cat_commit_file(
                reader, repo, target, pipeline_path, short_ref, readers.objects.put, objects
            )
            if candidates is not None:
                release_tags = await _release_tags_at(reader, candidates, resolved)
    else:
        proc = await _open_cat_file(repo)
        try:
            reader = _BatchReader(proc)
            kind, resolved, blob, content, short_type = await _cat_commit_file(
                reader, repo, target, pipeline_path, short_ref
            )
        except (GitError, trio.BrokenResourceError):
            # git gave up before answering (it refuses to trust the repository,
            # the repository is corrupt...): its reason is on stderr
            raise _refused(repo, await _error_output(proc)) from None
        finally:
            await _close_cat_file(proc)
    if kind != b"blob":
        raise InvalidArgument(
            f"{pipeline_path!r} at {resolved[:12]} is not a file", field="pipeline_path"
        )
    try:
        text = content.decode()
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"{pipeline_path}: not UTF-8 text ({exc})", field="pipeline_path"
        ) from None
    return Revision(
        commit=resolved,
        pipeline_text=text,
        pipeline_blob=blob,
        ref_type=ref_type or short_type,
        release_tags=release_tags,
    )


#: Bytes of git's error output kept for the message.
_STDERR_LIMIT = 4096


#: Tag names that may be release versions (see artifacts.versioning); a
#: superset, in characters safe to put on a cat-file request line.
_RELEASE_TAG_RE = re.compile(r"^[vV]?[0-9]+\.[0-9]+\.[0-9]+[0-9A-Za-z.+-]*$")
#: Questions to git about tags, at most, before leaving it to commit_tags.
_MAX_TAG_QUESTIONS = 64


@dataclass(frozen=True)
class _TagCandidates:
    """The release-like tags of a repository as its ref files say: the
    commit each packed one peels to, the object each loose one names, and
    those git itself must peel."""

    packed: dict[str, str]
    loose: dict[str, str]
    ask: tuple[str, ...]


def _read_repository(
    repo: Path, with_tags: bool
) -> tuple[RepositoryIdentity, _TagCandidates | None]:
    """Which repository ``repo`` is (see :func:`_identified_objects_dir`)
    and, with ``with_tags``, its release-like tag candidates (None when its
    refs are not plain files: reftable). Blocking."""
    objects = _identified_objects_dir(repo)
    if not with_tags:
        return objects, None
    try:
        return objects, _tag_candidates(objects[0].parent)
    except (OSError, UnicodeDecodeError):
        return objects, None


def _tag_candidates(git_dir: Path) -> _TagCandidates | None:
    if (git_dir / "reftable").exists():
        return None
    packed: dict[str, str] = {}
    ask: list[str] = []
    packed_refs = git_dir / "packed-refs"
    if packed_refs.is_file():
        peeled = False
        last = ""
        for line in packed_refs.read_text().splitlines():
            if line.startswith("#"):
                peeled = " peeled" in line or " fully-peeled" in line
                continue
            if line.startswith("^"):
                if last:
                    packed[last] = line[1:].strip()
                continue
            sha, _, ref = line.partition(" ")
            name = ref.removeprefix("refs/tags/")
            last = ""
            if name == ref or not _RELEASE_TAG_RE.match(name):
                continue
            if peeled:
                packed[name] = sha
                last = name
            else:
                ask.append(name)
    loose: dict[str, str] = {}
    tags = git_dir / "refs" / "tags"
    if tags.is_dir():
        with os.scandir(tags) as entries:
            for entry in entries:
                if not _RELEASE_TAG_RE.match(entry.name) or not entry.is_file():
                    continue
                content = Path(entry.path).read_text().strip()
                if _SHA_RE.match(content):
                    loose[entry.name] = content
                else:  # a symbolic ref: git follows it
                    ask.append(entry.name)
    for name in loose:
        packed.pop(name, None)  # a loose ref wins over its packed copy
    return _TagCandidates(packed, loose, tuple(dict.fromkeys(ask)))


async def _release_tags_at(
    reader: _BatchReader, candidates: _TagCandidates, commit: str
) -> tuple[str, ...] | None:
    """The candidates that point at ``commit``; None when that would take
    more than :data:`_MAX_TAG_QUESTIONS` questions to git."""
    found = [name for name, peeled in candidates.packed.items() if peeled == commit]
    questions: list[tuple[str, str]] = [(name, f"refs/tags/{name}") for name in candidates.ask]
    for name, sha in candidates.loose.items():
        if sha == commit:
            found.append(name)
        else:  # maybe an annotated tag object: git peels it
            questions.append((name, sha))
    if len(questions) > _MAX_TAG_QUESTIONS:
        return None
    for name, question in questions:
        await reader.ask(f"{question}^{{commit}}")
        header = await reader.header()
        if header.endswith((b" missing", b" ambiguous")):
            continue
        await reader.body(int(header.split()[2]))
        if header.split()[0].decode() == commit:
            found.append(name)
    return tuple(f"refs/tags/{name}" for name in sorted(set(found)))


class RepositoryIdentity(NamedTuple):
    """Which repository a path names now: its object folder, and the
    device and inode of that folder and of the path's own folder."""

    objects: Path
    device: int
    inode: int
    #: A kept ``git -C PATH`` process has this folder as its working
    #: folder, so its inode is not given to another while the process
    #: lives: a repository removed and made again at the same path, whose
    #: object folder may get the old inode back, is told apart.
    top_device: int
    top_inode: int


def _identified_objects_dir(repo: Path) -> RepositoryIdentity:
    """:func:`git_objects_dir` with what tells which repository the path
    names now (blocking)."""
    objects = git_objects_dir(repo)
    try:
        info, top = objects.stat(), repo.stat()
    except OSError as exc:
        raise InvalidArgument(
            f"repository {str(repo)!r} cannot be read: {exc.strerror or exc}", field="repository"
        ) from None
    return RepositoryIdentity(objects, info.st_dev, info.st_ino, top.st_dev, top.st_ino)


async def _open_cat_file(repo: Path) -> trio.Process:
    env = _git_env()
    return await trio.lowlevel.open_process(
        ["git", "-C", str(repo), "cat-file", "--batch"],
        executable=resolved_program("git", env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


async def _close_cat_file(proc: trio.Process) -> None:
    """End a ``cat-file`` process: its input closed, then killed if it
    does not go within 5 s (shielded)."""
    with trio.CancelScope(shield=True):
        if proc.stdin is not None:
            await proc.stdin.aclose()
        if proc.stderr is not None:
            await proc.stderr.aclose()
        with trio.move_on_after(5):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()


class _CatFile:
    """One kept ``git cat-file --batch`` process and what it serves."""

    def __init__(self, proc: trio.Process, identity: RepositoryIdentity) -> None:
        self.proc = proc
        self.reader = _BatchReader(proc)
        self.identity = identity
        self.lock = trio.Lock()
        self.used = trio.current_time()


class CatFiles:
    """``git cat-file --batch`` processes kept between calls of
    :func:`resolve`, one per repository (at most ``size``, each closed after
    ``idle`` seconds unused), so a submit costs no git process start.

    A kept process answers as a new one would: git reads the refs again for
    each question, and finds packs made since it started. It serves the
    repository it was started for only: when the path names another
    repository (another device and inode of its object folder), or the
    process fails, a new one is started. One question at a time per process.

    Resource handling: :meth:`aclose` ends them all; a process whose daemon
    is gone ends too (its input closes).
    """

    def __init__(self, *, size: int = 16, idle: float = 60.0) -> None:
        self.size = size
        self.idle = idle
        self._kept: dict[Path, _CatFile] = {}
        #: Objects read through them, for the checkouts (commits and
        #: pipeline files read by :func:`resolve` among them).
        self.objects = native_checkout.ObjectCache()

    @contextlib.asynccontextmanager
    async def reader(self, repo: Path, identity: RepositoryIdentity) -> AsyncIterator[_BatchReader]:
        """The kept reader for ``repo`` (started if needed), for one
        exchange. An exchange that fails or is cancelled closes the process
        (a half-read answer would confuse the next one); git's reason for a
        failure is raised as FailedPrecondition."""
        now = trio.current_time()
        for path, other in list(self._kept.items()):
            if now - other.used > self.idle:
                await self._retire(path, other)
        kept = self._kept.get(repo)
        if kept is not None and (kept.identity != identity or kept.proc.returncode is not None):
            await self._retire(repo, kept)
            kept = None
        if kept is None:
            if len(self._kept) >= self.size:
                oldest = min(self._kept, key=lambda path: self._kept[path].used)
                await self._retire(oldest, self._kept[oldest])
            kept = self._kept[repo] = _CatFile(await _open_cat_file(repo), identity)
        async with kept.lock:
            kept.used = trio.current_time()
            try:
                yield kept.reader
            except ConveyorError:
                raise  # a question answered (an unknown ref...): the process is fine
            except (GitError, trio.BrokenResourceError):
                self._forget(repo, kept)
                why = await _error_output(kept.proc)
                await _close_cat_file(kept.proc)
                raise _refused(repo, why) from None
            except BaseException:
                self._forget(repo, kept)
                await _close_cat_file(kept.proc)
                raise

    def identity_of(self, repo: Path) -> RepositoryIdentity | None:
        """Which repository the process kept for ``repo`` serves (see
        :func:`_identified_objects_dir`), None when none is kept: a caller
        that reads through it without checking the path first checks,
        after, that the path still names that repository."""
        kept = self._kept.get(repo)
        return kept.identity if kept is not None else None

    def _forget(self, repo: Path, kept: _CatFile) -> None:
        if self._kept.get(repo) is kept:
            del self._kept[repo]

    async def _retire(self, repo: Path, kept: _CatFile) -> None:
        """Close a process nobody else will get, once its exchange (if one
        is under way) ends."""
        self._forget(repo, kept)
        async with kept.lock:
            await _close_cat_file(kept.proc)

    async def aclose(self) -> None:
        for repo, kept in list(self._kept.items()):
            await self._retire(repo, kept)


async def _error_output(proc: trio.Process) -> str:
    """What a git process that ended early wrote to stderr (the start of it)."""
    assert proc.stderr is not None
    data = bytearray()
    with trio.move_on_after(5):
        async for chunk in proc.stderr:
            data += chunk
            if len(data) >= _STDERR_LIMIT:
                break
    return data[:_STDERR_LIMIT].decode(errors="replace").strip()


def _refused(repo: Path, stderr: str) -> FailedPrecondition:
    """Git ended before answering: say why, in git's words."""
    why = stderr or "git cat-file ended without an answer"
    return FailedPrecondition(f"git cannot read repository {repo}: {why}", field="repository")


async def _cat_commit_file(
    reader: _BatchReader,
    repo: Path,
    ref: str,
    pipeline_path: str,
    short_ref: str = "",
    keep: Callable[[Hashable, bytes, bytes, bytes], None] | None = None,
    key: Hashable = None,
) -> tuple[bytes, str, str, bytes, str]:
    """The pipeline file's type, commit, blob id and bytes, and whether the
    short ref name ``short_ref`` (if any) names a ``tag`` or a ``branch``
    (see :func:`_short_ref_questions`); with ``keep``, the commit and the
    file are handed to it as ``(key, id, type, body)`` (see
    :class:`~conveyor.daemon.native_checkout.ObjectCache`).

    Two writes to git: the commit and the short ref's kinds are asked
    together, then the file at exactly that commit."""
    short = _short_ref_questions(short_ref)
    await reader.ask("\n".join([f"{ref}^{{commit}}", *(full for full, _ in short)]))
    header = await reader.header()
    commit_body = None if _unanswered(header) else await reader.body(int(header.split()[2]))
    ref_type = ""
    for _, names in short:
        answer = await reader.header()
        if _unanswered(answer):
            continue
        await reader.body(int(answer.split()[2]))
        ref_type = ref_type or names
    if commit_body is None:
        raise NotFound(f"unknown ref {ref!r} in repository {repo}", field="ref")
    commit = header.split()[0].decode()
    await reader.ask(f"{commit}:{pipeline_path}")
    header = await reader.header()
    if header.endswith(b" missing"):
        raise NotFound(
            f"pipeline file {pipeline_path!r} not found at commit {commit[:12]} ({ref})",
            field="pipeline_path",
        )
    blob, kind, size = header.split()[:3]
    content = await reader.body(int(size))
    if keep is not None:
        keep(key, bytes.fromhex(commit), b"commit", commit_body)
        keep(key, bytes.fromhex(blob.decode()), kind, content)
    return kind, commit, blob.decode(), content, ref_type


def _unanswered(header: bytes) -> bool:
    """Whether git's answer is that it has no such object (no body follows)."""
    return header.endswith((b" missing", b" ambiguous"))


def _short_ref_questions(ref: str) -> list[tuple[str, str]]:
    """What to ask git to tell whether a short ref name is a tag or a
    branch: ``refs/tags/NAME`` first, as git resolves the name; nothing for
    anything else (a commit id, ``HEAD``, ``main~2``, a full ref, none)."""
    plain = _REF_RE.match(ref) and not ref.startswith(("-", "refs/")) and "@{" not in ref
    if not plain or _SHA_RE.match(ref):
        return []  # a line break in it would be another request
    return [(f"refs/tags/{ref}", "tag"), (f"refs/heads/{ref}", "branch")]


class _BatchReader:
    """Questions to, and answers from, a ``git cat-file --batch`` process."""

    def __init__(self, proc: trio.Process) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self._requests = proc.stdin
        self._stream = proc.stdout
        self._buf = bytearray()

    async def ask(self, name: str) -> None:
        await self._requests.send_all(f"{name}\n".encode())

    async def _fill(self) -> None:
        data = await self._stream.receive_some(65536)
        if not data:
            raise GitError("git cat-file ended early")
        self._buf += data

    async def header(self) -> bytes:
        end = self._buf.find(b"\n")
        while end < 0:
            await self._fill()
            end = self._buf.find(b"\n")
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]  # from the front of a bytearray: no copy of the rest
        return line

    async def body(self, size: int) -> bytes:
        while len(self._buf) < size + 1:
            await self._fill()
        data = bytes(self._buf[:size])
        del self._buf[: size + 1]
        return data

    async def skip(self, size: int) -> None:
        """Read past a body of ``size`` bytes without keeping it."""
        left = size + 1
        while len(self._buf) < left:
            left -= len(self._buf)
            self._buf.clear()
            await self._fill()
        del self._buf[:left]


def _prepare_workspace(
    repo: Path, workspace: Path, commit: str, spares: SpareWorkspaces | None
) -> RepositoryIdentity:
    """Make ``workspace`` a work tree with no files, HEAD at ``commit``;
    which repository ``repo`` is (see :func:`_identified_objects_dir`)."""
    if workspace.exists():
        shutil.rmtree(workspace)
    if spares is None or not spares.take(workspace):
        make_skeleton(workspace)
    # Borrow the source repository's objects instead of copying them
    # (what `git clone --shared` does), so a checkout costs only the files.
    identity = _identified_objects_dir(repo)
    objects = identity.objects
    fill_skeleton(workspace, commit, objects, _packed_tags(objects.parent))
    _copy_loose_tags(objects.parent, workspace / ".git")
    return identity


def _packed_tags(source_git_dir: Path) -> str | None:
    """The repository's packed refs, tags only (``git describe`` and
    release tooling need them; branches stay out, HEAD is detached at the
    commit); None when it has no packed refs."""
    packed = source_git_dir / "packed-refs"
    if not packed.is_file():
        return None
    lines: list[str] = []
    keep_peeled = False
    for line in packed.read_text().splitlines():
        if line.startswith("#"):
            lines.append(line)
        elif line.startswith("^"):
            if keep_peeled:
                lines.append(line)
        else:
            keep_peeled = line.partition(" ")[2].startswith("refs/tags/")
            if keep_peeled:
                lines.append(line)
    return "\n".join(lines) + "\n"


def _copy_loose_tags(source_git_dir: Path, git_dir: Path) -> None:
    """Give the workspace the repository's loose tags."""
    tags = source_git_dir / "refs" / "tags"
    if tags.is_dir():
        with os.scandir(tags) as entries:
            if not any(entries):  # an empty folder: git makes it when a tag comes
                return
        shutil.copytree(tags, git_dir / "refs" / "tags", dirs_exist_ok=True)


#: What the checkout pins of git's configuration, whatever the daemon
#: user's says: the work tree holds the commit's bytes (no line-ending
#: conversion, links as links, no attributes but the repository's own).
_CHECKOUT_CONFIG = (
    "core.hooksPath=/dev/null",
    "core.autocrlf=false",
    "core.symlinks=true",
    "core.attributesFile=/dev/null",
)


async def checkout(
    repo: Path,
    workspace: Path,
    commit: str,
    *,
    user: StageUser | None = None,
    spares: SpareWorkspaces | None = None,
    readers: CatFiles | None = None,
) -> None:
    """Make ``workspace`` a git work tree at ``commit`` (detached HEAD),
    starting from one of ``spares`` when one is ready.

    With ``readers``, a small plain tree is written by the daemon from the
    repository's kept ``cat-file`` process (see
    :mod:`~conveyor.daemon.native_checkout`); any other, or without
    ``readers``, by ``git read-tree``. Either way the work tree holds the
    commit's blobs byte for byte: the daemon user's git configuration for
    line endings, links and attributes does not apply (a repository's own
    ``.gitattributes`` does).

    Git runs as the daemon's user; with ``user`` (the stage user) the
    checkout is then handed to it, ``.git`` excepted (see
    :func:`~conveyor.daemon.executors.stage_user.hand_over_workspace`).
    """
    if not _SHA_RE.match(commit):
        raise InvalidArgument(f"not a full commit id: {commit!r}")
    files, read_from = None, None
    if readers is not None:
        files, read_from = await _read_plain_tree(readers, repo, commit)
    # One writer thread makes the workspace, then writes the files read
    # from the repository the path still names.
    written = await native_checkout.in_writer(
        _prepare_and_write, repo, workspace, commit, spares, files, read_from
    )
    if not written:
        await _read_tree(workspace, commit)
    if user is not None:
        await trio.to_thread.run_sync(hand_over_workspace, workspace, user)


async def _read_plain_tree(
    readers: CatFiles, repo: Path, commit: str
) -> tuple[list[native_checkout.TreeFile] | None, RepositoryIdentity | None]:
    """``commit``'s files if it is a small plain tree (see
    :mod:`~conveyor.daemon.native_checkout`), and which repository they
    were read from; None when git is to check it out."""
    try:
        identity = readers.identity_of(repo)
        if identity is None:
            identity = await trio.to_thread.run_sync(_identified_objects_dir, repo)
        async with readers.reader(repo, identity) as reader:
            return await native_checkout.read(reader, commit, readers.objects, identity), identity
    except (ConveyorError, ValueError):
        return None, None  # git cannot read it, or answered oddly: read-tree says why


def _prepare_and_write(
    repo: Path,
    workspace: Path,
    commit: str,
    spares: SpareWorkspaces | None,
    files: list[native_checkout.TreeFile] | None,
    read_from: RepositoryIdentity | None,
) -> bool:
    """Make the workspace and write ``files`` into it when they were read
    from the repository ``repo`` names now; whether they were. Blocking."""
    identity = _prepare_workspace(repo, workspace, commit, spares)
    if files is None or identity != read_from:
        return False
    native_checkout.write_tree(workspace, files)
    return True


async def _read_tree(workspace: Path, commit: str) -> None:
    """Write the index and the files of ``commit`` into ``workspace``
    (whose HEAD already names it) with git."""
    env = {**_git_env(), "GIT_ATTR_NOSYSTEM": "1"}
    pinned = [arg for setting in _CHECKOUT_CONFIG for arg in ("-c", setting)]
    # `read-tree -u --reset` makes the index and the files as `reset
    # --hard` would (the same unpacking, with the checkout filters of
    # .gitattributes), without the ORIG_HEAD, reflog and index refresh that
    # cost `reset` about a millisecond and a half more.
    result = await trio.run_process(
        ["git", *pinned, "read-tree", "-u", "--reset", commit],
        executable=resolved_program("git", env),
        cwd=str(workspace),
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        umask=STAGE_UMASK,
    )
    if result.returncode != 0:
        raise GitError(
            f"checkout of {commit[:12]} failed: {result.stderr.decode(errors='replace').strip()}"
        )


async def _git(argv: list[str], *, stdin: bytes = b"", env: dict[str, str] | None = None) -> bytes:
    """Run git and return its stdout; :class:`GitError` with git's own
    words when it fails."""
    env = env or _git_env()
    result = await trio.run_process(
        ["git", *argv],
        executable=resolved_program("git", env),
        stdin=stdin,
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    if result.returncode != 0:
        why = result.stderr[:_STDERR_LIMIT].decode(errors="replace").strip()
        raise GitError(why or f"git {argv[0]} exited with {result.returncode}")
    return bytes(result.stdout)


async def commit_tags(repo: Path, commit: str) -> list[str]:
    """The tags of ``repo`` that point at ``commit`` (lightweight or
    annotated), as ``refs/tags/NAME``. Raises :class:`GitError`."""
    out = await _git(
        [
            "-C",
            str(repo),
            "for-each-ref",
            f"--points-at={commit}",
            "--format=%(refname)",
            "refs/tags",
        ]
    )
    return [line for line in out.decode(errors="replace").splitlines() if line]


async def changed_files(workspace: Path, commit: str) -> list[str]:
    """Tracked files of a workspace (see :func:`checkout`) that differ from
    ``commit``'s tree: modified, deleted, or added to the index; untracked
    files do not count. Paths are relative to the workspace, sorted.

    The workspace's own ``.git`` is named explicitly, so a stage that
    removed it makes this fail rather than find another repository above.
    Raises :class:`GitError` when git cannot compare (no ``.git`` any more).
    """
    git_dir = workspace / ".git"
    env = {
        **_git_env(),
        "GIT_DIR": str(git_dir),
        "GIT_WORK_TREE": str(workspace),
        "GIT_OPTIONAL_LOCKS": "0",  # stages may run git in the workspace meanwhile
    }
    out = await _git(
        [
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.hooksPath=/dev/null",
            "diff",
            "--name-only",
            "-z",
            "--no-renames",
            "--no-ext-diff",
            "--no-textconv",
            commit,
            "--",
        ],
        env=env,
    )
    return sorted({name.decode(errors="replace") for name in out.split(b"\0") if name})


async def object_ids(repo: Path, commit: str, paths: list[str]) -> dict[str, str | None]:
    """The git object id (tree or blob) of each repository path at
    ``commit``, None for a path that does not exist there; ``.`` is the
    commit's root tree. One ``git cat-file --batch-check`` answers all.
    Raises :class:`GitError`."""
    if not paths:
        return {}
    for path in paths:
        if _CONTROL_RE.search(path):
            raise GitError(f"{path!r}: a path must not contain control characters")
    request = "".join(f"{commit}:{'' if path == '.' else path}\n" for path in paths)
    out = await _git(["-C", str(repo), "cat-file", "--batch-check"], stdin=request.encode())
    lines = out.decode(errors="replace").splitlines()
    if len(lines) != len(paths):
        raise GitError(f"git cat-file answered {len(lines)} of {len(paths)} paths")
    ids: dict[str, str | None] = {}
    for path, line in zip(paths, lines, strict=True):
        ids[path] = None if line.endswith(" missing") else line.split(" ", 1)[0]
    return ids
