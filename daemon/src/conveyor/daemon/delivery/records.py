"""What the daemon records about deployments: statuses, kinds, the record
itself, its transitions and its log."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class DeploymentStatus(enum.StrEnum):
    """Where a deployment is in its life (see :mod:`conveyor.daemon.delivery.rollout`)."""

    #: Waiting for ``conveyor approve`` (the environment requires approval).
    PENDING_APPROVAL = "pending_approval"
    #: Rolling out, or watching the new version through the watch window.
    PROGRESSING = "progressing"
    #: Every replica passed its health check and stayed healthy through the
    #: watch window.
    HEALTHY = "healthy"
    #: It did not become healthy and nothing could be restored (no earlier
    #: version, or restoring it failed too).
    FAILED = "failed"
    #: It did not become healthy; the previous version was restored (by a
    #: deployment of its own, ``restored_by``).
    ROLLED_BACK = "rolled_back"
    #: Refused at its approval.
    REJECTED = "rejected"
    #: Nobody approved it in time.
    EXPIRED = "expired"
    #: The daemon stopped during the rollout; the environment was left on a
    #: healthy version at the next start-up.
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self not in (DeploymentStatus.PENDING_APPROVAL, DeploymentStatus.PROGRESSING)


class DeploymentKind(enum.StrEnum):
    """How a deployment came about."""

    #: An artifact deployed to an environment (``conveyor deploy``, a
    #: ``deploy`` stage).
    DEPLOY = "deploy"
    #: The digest healthy in another environment (``conveyor promote``).
    PROMOTE = "promote"
    #: Back to an earlier deployment, asked for (``conveyor rollback``).
    ROLLBACK = "rollback"
    #: Back to the previous version, automatically, after a failed
    #: deployment (``cause_id``) or an interrupted one.
    RESTORE = "restore"


@dataclass(frozen=True)
class Commit:
    id: str
    subject: str


@dataclass(frozen=True)
class DeploymentEvent:
    """A line of a deployment's log; a transition when ``from_status`` is set."""

    seq: int
    time: float
    #: The status after the event.
    status: DeploymentStatus
    message: str
    from_status: DeploymentStatus | None = None


@dataclass
class DeploymentRecord:
    """One deployment: what, where, who, when, how it went, what changed."""

    id: str
    environment: str
    pipeline: str
    kind: DeploymentKind
    #: The artifact: digest, name, kind, version, and where it came from.
    digest: str
    artifact_name: str
    artifact_kind: str
    version: str
    commit: str
    repository: str
    run_id: str
    run_number: int
    #: Who asked for it: the caller's identity as the daemon knows it.
    deployer: str
    target: str
    replicas: int
    status: DeploymentStatus
    reason: str = ""
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    #: When it became healthy (the end of its watch window).
    healthy_at: float | None = None
    #: The commit's committer time (Unix seconds), for lead time.
    commit_time: float | None = None
    #: For a promotion: the environment it came from.
    source_environment: str = ""
    #: The deployment that ran in the environment before this one ("" for
    #: the first), and its digest.
    previous_id: str = ""
    previous_digest: str = ""
    #: For a rollback or restore: the earlier deployment it goes back to.
    restores_id: str = ""
    #: For a restore: the deployment whose failure (or interruption) caused it.
    cause_id: str = ""
    #: For a failed deployment: the restore that put the previous version back.
    restored_by: str = ""
    #: Commits since the previous deployment (``previous..this``), newest
    #: first, at most :data:`MAX_COMMITS`; ``reverted`` for going back
    #: (``this..previous``); ``commits_total`` counts both before the cut.
    commits: list[Commit] = field(default_factory=list)
    reverted: list[Commit] = field(default_factory=list)
    commits_total: int = 0
    #: ``sha256:`` of the effective configuration, and whether it differs
    #: from the previous deployment's.
    config_hash: str = ""
    config_changed: bool = False
    #: The resolved environment (without secret values), to deploy it again.
    environment_json: str = "{}"
    #: The deployment span's context (hex).
    trace_id: str = ""
    span_id: str = ""
    #: Approval: when it expires, and who decided, when, with what comment.
    approval_expires_at: float | None = None
    decided_by: str = ""
    decided_at: float | None = None
    decision_comment: str = ""
    #: When the environment was stopped while this deployment ran there, and
    #: by whom (it stays healthy in the history; the environment runs nothing).
    stopped_at: float | None = None
    stopped_by: str = ""
    #: The log and transitions (filled by :meth:`DeploymentStore.get` only).
    events: list[DeploymentEvent] = field(default_factory=list)

    @property
    def duration(self) -> float | None:
        """Seconds from its start (or creation) to its end; None before it ends."""
        if self.finished_at is None:
            return None
        return self.finished_at - (self.started_at or self.created_at)

    @property
    def transitions(self) -> list[DeploymentEvent]:
        return [event for event in self.events if event.from_status is not None]


#: Commits kept per deployment (``commits`` and ``reverted`` each).
MAX_COMMITS = 200
