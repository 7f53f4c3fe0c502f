"""Schema and migrations, versioned with SQLite's user_version."""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        number INTEGER NOT NULL,
        pipeline TEXT NOT NULL,
        repository TEXT NOT NULL,
        ref TEXT NOT NULL,
        commit_sha TEXT NOT NULL,
        pipeline_path TEXT NOT NULL,
        trigger TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        spec_json TEXT NOT NULL,
        concurrency_group TEXT NOT NULL,
        last_event_seq INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_pipeline ON runs (pipeline, id);
    CREATE INDEX runs_status ON runs (status, id);
    CREATE INDEX runs_commit ON runs (commit_sha);
    CREATE TABLE stages (
        run_id TEXT NOT NULL REFERENCES runs (id),
        name TEXT NOT NULL,
        position INTEGER NOT NULL,
        kind TEXT NOT NULL,
        needs_json TEXT NOT NULL,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER,
        started_at REAL,
        finished_at REAL,
        reason TEXT NOT NULL DEFAULT '',
        log_size INTEGER NOT NULL DEFAULT 0,
        pgid INTEGER,
        PRIMARY KEY (run_id, name)
    );
    CREATE TABLE events (
        run_id TEXT NOT NULL REFERENCES runs (id),
        seq INTEGER NOT NULL,
        time REAL NOT NULL,
        kind TEXT NOT NULL,
        run_status TEXT,
        stage TEXT NOT NULL DEFAULT '',
        stage_status TEXT,
        attempt INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER,
        message TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE idempotency_keys (
        key TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id),
        created_at REAL NOT NULL
    );
    """,
    """
    ALTER TABLE runs ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE runs ADD COLUMN span_id TEXT NOT NULL DEFAULT '';
    """,
    """
    ALTER TABLE stages ADD COLUMN report_json TEXT;
    """,
    """
    ALTER TABLE stages DROP COLUMN pgid;
    """,
    # Idempotency keys are scoped by repository (a fork pushing the same
    # commit with the same hook key is another run) and by caller, once
    # callers have identities ('' until then). Existing keys keep working:
    # they move to their run's repository.
    """
    CREATE TABLE idempotency_scoped (
        caller TEXT NOT NULL DEFAULT '',
        repository TEXT NOT NULL,
        key TEXT NOT NULL,
        run_id TEXT NOT NULL REFERENCES runs (id),
        created_at REAL NOT NULL,
        PRIMARY KEY (caller, repository, key)
    );
    INSERT INTO idempotency_scoped (caller, repository, key, run_id, created_at)
        SELECT '', runs.repository, idempotency_keys.key, idempotency_keys.run_id,
               idempotency_keys.created_at
        FROM idempotency_keys JOIN runs ON runs.id = idempotency_keys.run_id;
    DROP TABLE idempotency_keys;
    ALTER TABLE idempotency_scoped RENAME TO idempotency_keys;
    """,
    # Whether a run's ref names a branch or a tag (vcs.ref.head.type), found
    # when the ref is resolved; unknown ('') for older runs.
    """
    ALTER TABLE runs ADD COLUMN ref_type TEXT NOT NULL DEFAULT '';
    """,
    # Artifacts (one row per digest, never rebuilt), the tags that name them
    # (unique per name), the re-runs that reused one (cache hits), and the
    # version each run builds.
    """
    ALTER TABLE runs ADD COLUMN version TEXT NOT NULL DEFAULT '';
    CREATE TABLE artifacts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        digest TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        size INTEGER NOT NULL DEFAULT 0,
        media_type TEXT NOT NULL DEFAULT '',
        repository TEXT NOT NULL,
        ref TEXT NOT NULL,
        commit_sha TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        run_id TEXT NOT NULL REFERENCES runs (id),
        run_number INTEGER NOT NULL,
        stage TEXT NOT NULL,
        stages_json TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        trace_id TEXT NOT NULL DEFAULT '',
        span_id TEXT NOT NULL DEFAULT '',
        pushed_to_json TEXT NOT NULL DEFAULT '[]',
        manifest_digest TEXT NOT NULL DEFAULT '',
        reproducible INTEGER NOT NULL DEFAULT 1,
        changed_files_json TEXT NOT NULL DEFAULT '[]',
        facts_json TEXT NOT NULL,
        provenance TEXT NOT NULL,
        key_id TEXT NOT NULL,
        attributes_json TEXT NOT NULL DEFAULT '{}',
        cache_key TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX artifacts_pipeline ON artifacts (pipeline, seq);
    CREATE INDEX artifacts_commit ON artifacts (commit_sha);
    CREATE INDEX artifacts_version ON artifacts (version);
    CREATE INDEX artifacts_name ON artifacts (name, seq);
    CREATE INDEX artifacts_run ON artifacts (run_id);
    CREATE INDEX artifacts_cache ON artifacts (pipeline, stage, cache_key);
    CREATE TABLE artifact_tags (
        name TEXT NOT NULL,
        tag TEXT NOT NULL,
        digest TEXT NOT NULL REFERENCES artifacts (digest),
        run_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (name, tag)
    );
    CREATE INDEX artifact_tags_digest ON artifact_tags (digest);
    CREATE INDEX artifact_tags_tag ON artifact_tags (tag);
    CREATE TABLE cache_hits (
        run_id TEXT NOT NULL REFERENCES runs (id),
        stage TEXT NOT NULL,
        digest TEXT NOT NULL REFERENCES artifacts (digest),
        original_run_id TEXT NOT NULL,
        cache_key TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (run_id, stage, digest)
    );
    CREATE INDEX cache_hits_digest ON cache_hits (digest);
    """,
    # Identity (docs/security.md): who submitted each run (the authenticated
    # identity; '' before there were identities), bearer tokens (only the
    # digest of their secret), and the audit log, which the database itself
    # keeps append-only.
    """
    ALTER TABLE runs ADD COLUMN submitted_by TEXT NOT NULL DEFAULT '';
    CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        identity TEXT NOT NULL,
        roles_json TEXT NOT NULL,
        repositories_json TEXT NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        created_by TEXT NOT NULL,
        expires_at REAL NOT NULL,
        revoked_at REAL,
        revoked_by TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE audit_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        identity TEXT NOT NULL,
        auth_method TEXT NOT NULL,
        token_id TEXT NOT NULL DEFAULT '',
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        environment TEXT NOT NULL DEFAULT '',
        outcome TEXT NOT NULL,
        code TEXT NOT NULL,
        detail TEXT NOT NULL,
        peer TEXT NOT NULL
    );
    CREATE INDEX audit_events_identity ON audit_events (identity, seq);
    CREATE INDEX audit_events_action ON audit_events (action, seq);
    CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
    CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
    """,
    # Deployments (one row each, never deleted: the audit trail) and their
    # events: every status transition with its reason, and the rollout log.
    """
    CREATE TABLE deployments (
        id TEXT PRIMARY KEY,
        environment TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        kind TEXT NOT NULL,
        digest TEXT NOT NULL REFERENCES artifacts (digest),
        artifact_name TEXT NOT NULL,
        artifact_kind TEXT NOT NULL,
        version TEXT NOT NULL,
        commit_sha TEXT NOT NULL,
        commit_time REAL,
        repository TEXT NOT NULL,
        run_id TEXT NOT NULL,
        run_number INTEGER NOT NULL,
        deployer TEXT NOT NULL,
        target TEXT NOT NULL,
        replicas INTEGER NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        healthy_at REAL,
        source_environment TEXT NOT NULL DEFAULT '',
        previous_id TEXT NOT NULL DEFAULT '',
        previous_digest TEXT NOT NULL DEFAULT '',
        restores_id TEXT NOT NULL DEFAULT '',
        cause_id TEXT NOT NULL DEFAULT '',
        restored_by TEXT NOT NULL DEFAULT '',
        commits_json TEXT NOT NULL DEFAULT '[]',
        reverted_json TEXT NOT NULL DEFAULT '[]',
        commits_total INTEGER NOT NULL DEFAULT 0,
        config_hash TEXT NOT NULL DEFAULT '',
        config_changed INTEGER NOT NULL DEFAULT 0,
        environment_json TEXT NOT NULL DEFAULT '{}',
        trace_id TEXT NOT NULL DEFAULT '',
        span_id TEXT NOT NULL DEFAULT '',
        approval_expires_at REAL,
        decided_by TEXT NOT NULL DEFAULT '',
        decided_at REAL,
        decision_comment TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX deployments_environment ON deployments (environment, id);
    CREATE INDEX deployments_digest ON deployments (digest, id);
    CREATE INDEX deployments_status ON deployments (status, id);
    CREATE TABLE deployment_events (
        deployment_id TEXT NOT NULL REFERENCES deployments (id),
        seq INTEGER NOT NULL,
        time REAL NOT NULL,
        status TEXT NOT NULL,
        from_status TEXT NOT NULL DEFAULT '',
        message TEXT NOT NULL,
        PRIMARY KEY (deployment_id, seq)
    );
    """,
    # A stopped environment (StopEnvironment): the deployment that ran there
    # is marked stopped, and the environment runs nothing until the next one.
    """
    ALTER TABLE deployments ADD COLUMN stopped_at REAL;
    ALTER TABLE deployments ADD COLUMN stopped_by TEXT NOT NULL DEFAULT '';
    """,
]


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the database to the newest schema version."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
