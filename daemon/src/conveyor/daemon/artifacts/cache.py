"""The build-once cache key of a stage.

A stage that declares ``inputs:`` gets a key: the SHA-256 over the git
object ids, at the run's commit, of its inputs and of the paths its kind
adds (``cache_inputs(spec)``, e.g. the Dockerfile), the stage as written
(``uses``, ``with``, ``run``, ``env``), the pipeline's ``env`` and the kind.
A later run whose stage has the same key may reuse what it recorded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from conveyor.daemon import vcs
from conveyor.daemon.artifacts.outputs import listing
from conveyor.daemon.pipeline import StageSpec
from conveyor.daemon.pipeline.model import inside_repository
from conveyor.daemon.records import RunRecord
from conveyor.daemon.stages import StageKind

#: What goes into a cache key, and how: bump when that changes.
CACHE_KEY_VERSION: Final = 1


class NoCacheKey(Exception):
    """The stage gets no key this time; the message says why."""


def _kind_inputs(spec: StageSpec, kind: StageKind) -> list[str]:
    """The paths the stage's kind adds to its cache key (they may be absent
    at the commit, e.g. a ``.dockerignore``: absence is part of the key)."""
    cache_inputs = getattr(kind, "cache_inputs", None)
    if not callable(cache_inputs):
        return []
    try:
        return [inside_repository(str(path)) for path in cache_inputs(spec)]
    except Exception as exc:
        raise NoCacheKey(
            f"stage kind {kind.name!r} could not name its cache inputs"
            f" ({type(exc).__name__}: {exc})"
        ) from None


async def stage_cache_key(
    spec: StageSpec, kind: StageKind, run: RunRecord, pipeline_env: Mapping[str, str]
) -> str:
    """``sha256:<hex>``, the key of ``spec`` (a stage with ``inputs:``) in
    ``run``. Raises :class:`NoCacheKey` when an input does not exist at the
    commit, git cannot read them, or the kind's ``cache_inputs`` fails."""
    declared = list(spec.inputs)
    paths = list(dict.fromkeys([*declared, *_kind_inputs(spec, kind)]))
    try:
        ids = await vcs.object_ids(Path(run.repository), run.commit, paths)
    except (vcs.GitError, OSError) as exc:
        raise NoCacheKey(f"cannot read the inputs ({exc})") from None
    # The stage's own inputs must exist; a path its kind adds may be absent.
    missing = [path for path in declared if ids.get(path) is None]
    if missing:
        raise NoCacheKey(
            f"{listing(missing)} not found at commit {run.commit[:12]} (check the stage's inputs)"
        )
    payload = {
        "version": CACHE_KEY_VERSION,
        "kind": spec.uses,
        "stage": {"uses": spec.uses, "with": spec.with_, "run": spec.run, "env": spec.env},
        "pipeline_env": dict(pipeline_env),
        "inputs": sorted((path, oid or "absent") for path, oid in ids.items()),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
