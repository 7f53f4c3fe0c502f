"""Records and artifacts for the in-process delivery tests."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from types import MappingProxyType

import trio

from conveyor.daemon.artifacts.model import FILE, Artifact
from conveyor.daemon.delivery.records import DeploymentKind, DeploymentRecord, DeploymentStatus

_ids = iter(range(1, 1_000_000))


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def artifact(n: int = 1, *, repository: str = "/srv/shop", commit: str = "a" * 40) -> Artifact:
    return Artifact(
        digest=digest(n),
        kind=FILE,
        name="service.py",
        version=f"1.0.{n}",
        tags=(),
        size=10,
        media_type="text/x-python",
        repository=repository,
        ref="main",
        commit=commit,
        pipeline="shop",
        run_id="0123456789ab00000000",
        run_number=n,
        stage="service",
        stages=(),
        created_at=time.time(),
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        pushed_to=(),
        manifest_digest="",
        reproducible=True,
        changed_files=(),
        provenance="",
        key_id="",
        attributes=MappingProxyType({}),
    )


def record(
    environment: str = "staging",
    status: DeploymentStatus = DeploymentStatus.PROGRESSING,
    *,
    n: int = 1,
) -> DeploymentRecord:
    return DeploymentRecord(
        id=f"{next(_ids):012x}00000000",
        environment=environment,
        pipeline="shop",
        kind=DeploymentKind.DEPLOY,
        digest=digest(n),
        artifact_name="service.py",
        artifact_kind=FILE,
        version=f"1.0.{n}",
        commit="a" * 40,
        repository="/srv/shop",
        run_id="0123456789ab00000000",
        run_number=n,
        deployer="uid:1000",
        target="process",
        replicas=2,
        status=status,
        created_at=time.time(),
    )


async def until(check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0) -> None:
    """Poll ``check`` (sync or async) until it is true, with a deadline:
    for state another process changes, which no trio event can signal."""
    with trio.fail_after(timeout):
        while True:
            result = check()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return
            await trio.sleep(0.01)
