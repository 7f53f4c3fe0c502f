"""The ``file`` stage kind: build a file and keep it as an artifact.

```yaml
version: 1.4.0
stages:
  wheel:
    uses: file
    inputs: [src, pyproject.toml]     # optional: the build-once cache key
    run: python -m build --wheel      # optional, as in the run kind
    with:
      path: dist/*.whl                # must match exactly one file
```

The ``run:`` commands run first, in one shell that stops at the first
failing command (``with: {shell: bash}`` as in the ``run`` kind). Then
``with.path``, a glob pattern relative to the workspace, must match exactly
one file; it is hashed and copied into the daemon's content-addressed store
(``$CONVEYOR_HOME/artifacts/sha256/<hex>``) and returned as a ``file``
artifact named after the file, tagged with the run's version. The daemon
records it with signed provenance, checks the workspace against the commit
before and after the stage, and reuses it when the stage's ``inputs:`` did
not change.
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from conveyor.plugin import (
    FILE,
    Artifact,
    ArtifactOutput,
    Parameters,
    StageContext,
    StageKind,
    StageOutcome,
    StageSpec,
    StageStatus,
    hookimpl,
)
from conveyor.plugins.parameters import Shell, WorkspacePath, invalid_parameters, read_parameters
from conveyor.plugins.run import run_commands

#: Matches named when a pattern matches more than one file.
SHOWN_MATCHES = 10
_CHUNK = 1 << 20
#: A compressed file's media type is its compression's (``.tar.gz``: gzip).
_COMPRESSED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}


class FileParameters(Parameters):
    """``with:`` of a ``file`` stage."""

    path: WorkspacePath
    shell: Shell = "sh"


PARAMETERS = tuple(FileParameters.model_fields)


class FileNotCollected(Exception):
    """The pattern matched no file, or more than one; the message says which."""


def find_one(workspace: Path, pattern: str) -> Path:
    """The one regular file inside ``workspace`` that ``pattern`` matches
    (``.git`` left out). Blocking: call it in a thread.

    Raises :class:`FileNotCollected` naming what matched instead.
    """
    root = workspace.resolve()
    found: list[Path] = []
    outside: list[str] = []
    for match in sorted(workspace.glob(pattern)):
        relative = match.relative_to(workspace)
        if relative.parts[:1] == (".git",) or not match.is_file():
            continue
        if not match.resolve().is_relative_to(root):
            outside.append(relative.as_posix())
            continue
        found.append(match)
    if len(found) == 1:
        return found[0]
    if not found:
        why = f"with.path {pattern!r} matched no file in the workspace"
        if outside:
            why += f" (left out, links to outside the workspace: {', '.join(outside)})"
        raise FileNotCollected(why + "; did the build write it there?")
    names = [m.relative_to(workspace).as_posix() for m in found]
    shown = ", ".join(names[:SHOWN_MATCHES])
    if len(names) > SHOWN_MATCHES:
        shown += f" ... and {len(names) - SHOWN_MATCHES} more"
    raise FileNotCollected(
        f"with.path {pattern!r} matched {len(names)} files: {shown}; it must match exactly one"
        " (make the pattern narrower, or clean the folder before building)"
    )


@dataclass(frozen=True)
class Stored:
    digest: str
    size: int
    path: Path


def store_file(source: Path, store: Path) -> Stored:
    """Copy ``source`` into the content-addressed ``store`` (at
    ``sha256/<hex>``, read-only), hashing it on the way. Blocking: call it
    in a thread. A file already there with that digest is kept as it is.

    Raises OSError (a full disk, a file that went away).
    """
    staging = store / "tmp"
    staging.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=staging, prefix="incoming-")
    try:
        digest = hashlib.sha256()
        size = 0
        with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.chmod(temporary, 0o444)
        final = store / "sha256" / digest.hexdigest()
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_file():
            os.unlink(temporary)
        else:
            os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return Stored(f"sha256:{digest.hexdigest()}", size, final)


class FileStage:
    name = "file"
    description = "Build a file (run commands), keep it by digest as an artifact"
    produces_artifacts = True

    def validate(self, spec: StageSpec) -> Iterable[tuple[str, str]]:
        yield from read_parameters(FileParameters, spec, self.name)[1]

    async def artifact_available(self, artifact: Artifact) -> bool:
        """Whether the stored copy is still in the store, whole."""
        stored = artifact.attributes.get("stored_at", "")
        if not stored:
            return False
        try:
            stat = await trio.Path(stored).stat()
        except OSError:
            return False
        return stat.st_size == artifact.size

    async def restore_artifacts(self, ctx: StageContext, artifacts: Sequence[Artifact]) -> None:
        """On a cache hit, put each stored file back where the stage made it
        (``attributes["path"]`` in the workspace), so later stages find it
        as if the stage had run."""
        for artifact in artifacts:
            relative = artifact.attributes.get("path", "")
            stored = artifact.attributes.get("stored_at", "")
            if not relative or not stored:
                raise ValueError(f"{artifact.digest} does not say where it was made")
            target = (ctx.workspace / relative).resolve()
            if not target.is_relative_to(ctx.workspace.resolve()):
                raise ValueError(f"{relative!r} is outside the workspace")

            def copy(source: str = stored, destination: Path = target) -> None:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, destination)

            await trio.to_thread.run_sync(copy)
            await ctx.log_line(f"put back {relative} ({artifact.digest})")

    async def run(self, ctx: StageContext) -> StageOutcome:
        params, problems = read_parameters(FileParameters, ctx.spec, self.name)
        if params is None:  # checked when the pipeline loaded: not reached
            return invalid_parameters(problems)
        if ctx.spec.run:
            code = await run_commands(ctx, params.shell)
            if code != 0:
                return StageOutcome.from_exit_code(code)
        if ctx.artifact_store == Path():
            reason = "this daemon gives stages no artifact store (ctx.artifact_store)"
            return StageOutcome(
                StageStatus.FAILED, reason, error_type="no_store", system_error=True
            )
        try:
            source = await trio.to_thread.run_sync(find_one, ctx.workspace, params.path)
        except FileNotCollected as exc:
            await ctx.log_line(str(exc))
            return StageOutcome(StageStatus.FAILED, str(exc), error_type="no_file")
        relative = source.relative_to(ctx.workspace).as_posix()
        try:
            stored = await trio.to_thread.run_sync(store_file, source, ctx.artifact_store)
        except OSError as exc:
            reason = f"cannot store {relative}: {exc.strerror or exc}"
            await ctx.log_line(reason)
            return StageOutcome(
                StageStatus.FAILED, reason, error_type="store_error", system_error=True
            )
        await ctx.log_line(f"stored {relative} ({stored.size} bytes) as {stored.digest}")
        media_type, encoding = mimetypes.guess_type(source.name)
        media_type = _COMPRESSED.get(encoding or "", media_type)
        output = ArtifactOutput(
            kind=FILE,
            name=source.name,
            digest=stored.digest,
            size=stored.size,
            tags=(ctx.version,) if ctx.version else (),
            media_type=media_type or "application/octet-stream",
            attributes={"path": relative, "stored_at": str(stored.path)},
        )
        return StageOutcome(StageStatus.SUCCEEDED, artifacts=(output,))


@hookimpl
def conveyor_stage_kinds() -> list[StageKind]:
    return [FileStage()]
