"""The CLI's subcommands: each takes the parsed arguments and a session, returns an exit code."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from google.protobuf.message import Message

from conveyor.client import access, artifacts, baseline, delivery, hooks, render
from conveyor.client.errors import CommandError, ConveyorError
from conveyor.client.gitinfo import resolve_target
from conveyor.client.logs import logs
from conveyor.client.provenance import VerificationError
from conveyor.client.session import Session
from conveyor.client.terminal import printable, use_color
from conveyor.client.timeline import timeline
from conveyor.client.watch import watch
from conveyor.v1 import delivery_pb2, runs_pb2

M = TypeVar("M", bound=Message)

TRIGGERS = {
    "manual": runs_pb2.TRIGGER_KIND_MANUAL,
    "push": runs_pb2.TRIGGER_KIND_PUSH,
    "api": runs_pb2.TRIGGER_KIND_API,
}


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        print(line)


def _warn(message: str) -> None:
    print(f"conveyor: warning: {printable(message, multiline=True)}", file=sys.stderr)


def cmd_submit(args: argparse.Namespace, session: Session) -> int:
    target = resolve_target(args.repo, args.ref, args.commit, Path.cwd())
    if target.warning:
        _warn(target.warning)
    response = session.client.submit_run(
        target.repository,
        target.ref,
        pipeline_path=args.file or "",
        trigger=TRIGGERS[args.trigger],
        idempotency_key=args.idempotency_key or "",
        commit=target.commit,
    )
    if session.json and not args.watch:
        data = {"run": render.message_dict(response.run), "created": response.created}
        print(json.dumps(data, indent=2))
        return 0
    print(render.submitted(response), flush=True)
    page = run_page(session, response.run.id)
    if page:
        print(f"  {printable(page)}", flush=True)
    if args.watch:
        return watch(session, response.run.id)
    return 0


def cmd_runs(args: argparse.Namespace, session: Session) -> int:
    response = session.client.list_runs(
        pipeline=args.pipeline or "",
        status=(
            render.run_status_value(args.status) if args.status else runs_pb2.RUN_STATUS_UNSPECIFIED
        ),
        commit=args.commit or "",
        page_size=args.limit or 0,
        page_token=args.page_token or "",
    )
    _print_page(session, list(response.runs), render.runs_table, "runs", response.next_page_token)
    return 0


def _print_page(
    session: Session,
    items: list[M],
    table: Callable[[list[M]], list[str]],
    noun: str,
    next_page_token: str,
) -> None:
    """One page of a listing: JSON, a table or ``no <noun>``; then, on
    stderr, how to get the next page."""
    if session.json:
        print(render.to_json(items))
    elif items:
        _print_lines(table(items))
    else:
        print(f"no {noun}")
    if next_page_token:
        print(f"more {noun}: --page-token {printable(next_page_token)}", file=sys.stderr)


def cmd_show(args: argparse.Namespace, session: Session) -> int:
    run = session.client.get_run(args.run)
    if session.json:
        print(render.to_json(run))
    else:
        _print_lines(render.run_detail(run, limit=args.findings, min_severity=args.severity))
    return 0


def cmd_trace(args: argparse.Namespace, session: Session) -> int:
    if artifacts.looks_like_artifact(args.run):
        return _trace_artifact(args.run, session)
    run = session.client.get_run(args.run)
    if session.json:
        print(render.to_json(run))
    else:
        _print_lines(timeline(run, now=time.time()))
        page = run_page(session, run.id)
        if page:
            print(f"\npage: {printable(page)}")
    return 0


def _trace_artifact(reference: str, session: Session) -> int:
    """`conveyor trace DIGEST`: the artifact, then its run's waterfall."""
    artifact = session.client.get_artifact(reference)
    run = session.client.get_run(artifact.run_id)
    deployments = list(
        session.client.list_deployments(artifact=artifact.digest, page_size=500).deployments
    )
    if session.json:
        data = {
            "artifact": render.message_dict(artifact),
            "run": render.message_dict(run),
            "deployments": [render.message_dict(d) for d in deployments],
        }
        print(json.dumps(data, indent=2))
        return 0
    tags = f"  tags {printable(', '.join(artifact.tags))}" if artifact.tags else ""
    _print_lines(
        [
            f"artifact {printable(artifact.digest)}  {printable(artifact.name)}"
            f"  version {printable(artifact.version)}{tags}",
            f"  commit {printable(artifact.commit)}, built by stage {printable(artifact.stage)}"
            f" of run {printable(artifact.run_id)}",
            f"  trace  {printable(artifact.trace_id) or '-'}",
            *delivery.trace_lines(deployments),
            "",
            *timeline(run, now=time.time()),
        ]
    )
    return 0


def cmd_artifacts_ls(args: argparse.Namespace, session: Session) -> int:
    response = session.client.list_artifacts(
        pipeline=args.pipeline or "",
        commit=args.commit or "",
        version=args.version or "",
        tag=args.tag or "",
        name=args.name or "",
        page_size=args.limit or 0,
        page_token=args.page_token or "",
    )
    _print_page(
        session,
        list(response.artifacts),
        artifacts.artifacts_table,
        "artifacts",
        response.next_page_token,
    )
    return 0


def cmd_artifacts_show(args: argparse.Namespace, session: Session) -> int:
    artifact = session.client.get_artifact(args.artifact)
    if session.json:
        print(render.to_json(artifact))
        return 0
    trusted = artifacts.key_from_daemon(session.client.signing_key(), session.address)
    try:
        artifacts.verify(artifact, trusted)
        status = f"signed by {printable(artifact.key_id)}, verifies with the daemon's key"
    except VerificationError as exc:
        status = f"DOES NOT VERIFY with the daemon's key: {printable(str(exc))}"
    _print_lines(artifacts.artifact_detail(artifact, status))
    return 0


def cmd_artifacts_verify(args: argparse.Namespace, session: Session) -> int:
    artifact = session.client.get_artifact(args.artifact)
    if args.key:
        trusted = artifacts.key_from_file(args.key)
    else:
        trusted = artifacts.key_from_daemon(session.client.signing_key(), session.address)
    try:
        verified = artifacts.verify(artifact, trusted)
    except VerificationError as exc:
        raise CommandError(
            f"{artifact.digest} does not verify: {exc} (trusted key: {trusted.source})"
        ) from None
    if session.json:
        data = {
            "verified": True,
            "digest": artifact.digest,
            "key_id": verified.key_id,
            "trusted_key": trusted.source,
            "statement": verified.statement,
        }
        print(json.dumps(data, indent=2))
    else:
        _print_lines(artifacts.verified_lines(artifact, verified, trusted))
    return 0


# -- delivery --------------------------------------------------------------------


def _deployed(args: argparse.Namespace, session: Session, d: delivery_pb2.Deployment) -> int:
    """After Deploy/Promote/Rollback/Approve: print it, follow it to its end
    unless ``--no-wait``; 0 when it is healthy (or waits for approval)."""
    if session.json and args.no_wait:
        print(render.to_json(d))
        return 0
    if not session.json:
        print(delivery.started(d), flush=True)
    if args.no_wait or d.status == delivery_pb2.DEPLOYMENT_STATUS_PENDING_APPROVAL:
        if session.json:
            print(render.to_json(d))
        return 0
    emit = (lambda line: None) if session.json else (lambda line: print(line, flush=True))
    final = delivery.follow(session.client.get_deployment, d.id, emit)
    if session.json:
        print(render.to_json(final))
    else:
        print(delivery.finished_line(final))
    healthy = final.status == delivery_pb2.DEPLOYMENT_STATUS_HEALTHY
    return 0 if healthy or final.status == delivery_pb2.DEPLOYMENT_STATUS_PENDING_APPROVAL else 1


def cmd_deploy(args: argparse.Namespace, session: Session) -> int:
    return _deployed(args, session, session.client.deploy(args.environment, args.artifact))


def cmd_promote(args: argparse.Namespace, session: Session) -> int:
    return _deployed(args, session, session.client.promote(args.source, args.environment))


def cmd_rollback(args: argparse.Namespace, session: Session) -> int:
    return _deployed(args, session, session.client.rollback(args.environment, args.to or ""))


def cmd_approve(args: argparse.Namespace, session: Session) -> int:
    return _deployed(args, session, session.client.approve(args.deployment, args.comment or ""))


def cmd_reject(args: argparse.Namespace, session: Session) -> int:
    d = session.client.reject(args.deployment, args.comment or "")
    if session.json:
        print(render.to_json(d))
    else:
        print(delivery.finished_line(d))
    return 0


def cmd_history(args: argparse.Namespace, session: Session) -> int:
    if args.deployment:
        d = session.client.get_deployment(args.deployment)
        if session.json:
            print(render.to_json(d))
        else:
            _print_lines(delivery.deployment_detail(d))
        return 0
    response = session.client.list_deployments(
        environment=args.environment or "",
        artifact=args.artifact or "",
        page_size=args.limit or 0,
        page_token=args.page_token or "",
    )
    _print_page(
        session,
        list(response.deployments),
        delivery.deployments_table,
        "deployments",
        response.next_page_token,
    )
    return 0


def cmd_envs(args: argparse.Namespace, session: Session) -> int:
    if args.environment:
        env = session.client.get_environment(args.environment)
        if session.json:
            print(render.to_json(env))
        else:
            _print_lines(delivery.environment_detail(env))
        return 0
    environments = session.client.list_environments()
    if session.json:
        print(render.to_json(environments))
    elif environments:
        _print_lines(delivery.environments_table(environments))
    else:
        print("no environments")
    return 0


def cmd_stop(args: argparse.Namespace, session: Session) -> int:
    response = session.client.stop_environment(args.environment)
    if session.json:
        print(render.to_json(response))
    else:
        print(delivery.stopped_line(response))
    return 0


def cmd_dora(args: argparse.Namespace, session: Session) -> int:
    seconds = 0
    if args.window:
        try:
            seconds = access.parse_duration(args.window)
        except ValueError as exc:
            raise CommandError(f"--window: {exc}", exit_code=2) from None
    metrics = session.client.dora_metrics(args.environment, seconds)
    if session.json:
        print(render.to_json(metrics))
    else:
        _print_lines(delivery.dora_lines(metrics))
    return 0


def cmd_watch(args: argparse.Namespace, session: Session) -> int:
    return watch(session, args.run)


def cmd_logs(args: argparse.Namespace, session: Session) -> int:
    sys.stdout.flush()
    return logs(
        session,
        args.run,
        args.stage,
        follow=args.follow,
        out=sys.stdout.buffer,
        color=use_color(session.color, sys.stdout),
    )


def cmd_cancel(args: argparse.Namespace, session: Session) -> int:
    run = session.client.cancel_run(args.run, args.reason or "")
    if session.json:
        print(render.to_json(run))
    else:
        print(
            f"cancel requested for run {printable(run.id)} #{run.number} {printable(run.pipeline)}"
            f" (status: {render.run_status_name(run.status)})"
        )
    return 0


def cmd_validate(args: argparse.Namespace, session: Session) -> int:
    file = args.file
    try:
        content = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CommandError(f"cannot read {file}: {reason}") from None
    response = session.client.validate_pipeline(content, file=file)
    if session.json:
        print(render.to_json(response))
    else:
        _print_lines(render.validation(response, file))
    return 0 if response.valid else 1


def cmd_baseline(args: argparse.Namespace, session: Session) -> int:
    run = session.client.get_run(args.run)
    report = baseline.scan_report(run, args.stage)
    chosen = baseline.select(
        report, min_severity=args.min_severity, include_baselined=args.include_baselined
    )
    new = baseline.entries(chosen.findings)
    target = Path(args.write) if args.write else None
    existing = None if target is None or args.replace else baseline.read_existing(target)
    items = baseline.merged(existing or [], new)
    added = len(items) - len(existing or [])

    left_out = []
    if chosen.below:
        left_out.append(f"{chosen.below} below {args.min_severity}")
    if chosen.baselined:
        left_out.append(f"{chosen.baselined} already baselined (--include-baselined adds them)")
    if chosen.unfingerprinted:
        _warn(
            f"{chosen.unfingerprinted} findings have no fingerprint and are not in the baseline;"
            " accept them with tool and rule entries (docs/pipeline.md#baselines)"
        )
    if report.truncated:
        _warn(
            f"the report kept {len(report.findings)} findings and left out {report.truncated};"
            " those are not in the baseline: run the scan again with it to see them"
        )
    summary = f"{added} {'entry' if added == 1 else 'entries'} added"
    if existing:
        summary += f" to the {len(existing)} already in the file"
    if left_out:
        summary += f"; left out: {', '.join(left_out)}"
    text = baseline.document(items)
    if target is None:
        sys.stdout.write(text)
        print(f"conveyor: {summary}", file=sys.stderr)
        return 0
    baseline.write(target, text)
    where = "PATH" if target.is_absolute() else target.as_posix()
    print(f"wrote {target}: {summary}")
    if added:
        print(
            "  give each new entry a reason, commit the file, and point the scan stage at it"
            f" (a path from the repository's root): with: {{baseline: {where}}}"
        )
    return 0


def cmd_plugins(args: argparse.Namespace, session: Session) -> int:
    plugins = session.client.list_plugins()
    if session.json:
        print(render.to_json(plugins))
    elif plugins:
        _print_lines(render.plugins_table(plugins))
    else:
        print("no plugins")
    return 0


def cmd_status(args: argparse.Namespace, session: Session) -> int:
    status = session.client.server_status()
    if session.json:
        print(render.to_json(status))
    else:
        _print_lines(render.server_status(status, session.address))
    return 0


def cmd_hook_install(args: argparse.Namespace, session: Session) -> int:
    installed = hooks.install(
        Path(args.repo),
        address=session.address,
        pipeline_file=args.file,
        force=args.force,
    )
    if installed.backup is not None:
        print(f"moved the previous hook to {installed.backup}")
    print(f"installed {installed.hook}")
    print(f"  pushes submit runs to the daemon at {session.address}")
    print(f"  using {sys.executable}")
    return 0


def cmd_hook_uninstall(args: argparse.Namespace, session: Session) -> int:
    result = hooks.uninstall(Path(args.repo), force=args.force)
    if result.hook is None:
        print(f"no {hooks.HOOK_NAME} hook in {args.repo}: nothing to do")
    else:
        print(f"removed {result.hook}")
    if result.restored is not None:
        print(f"restored the previous hook from {result.restored}")
    return 0


def cmd_web_login(args: argparse.Namespace, session: Session) -> int:
    link = session.client.create_web_login()
    if session.json:
        print(render.to_json(link))
    else:
        print(printable(link.url))
        print(
            f"open it within {max(0, round(link.expires_at.seconds - time.time()))} s;"
            " it works once",
            file=sys.stderr,
        )
    return 0


def run_page(session: Session, run_id: str) -> str:
    """The run's page on the web dashboard; "" when the daemon serves none
    (or cannot say)."""
    try:
        web_url = session.client.server_status().web_url
    except ConveyorError:
        return ""
    return f"{web_url}/runs/{quote(run_id, safe='')}" if web_url else ""


def cmd_whoami(args: argparse.Namespace, session: Session) -> int:
    me = session.client.whoami()
    if session.json:
        print(render.to_json(me))
    else:
        _print_lines(access.whoami_lines(me))
    return 0


def _write_secret(path: Path, secret: str) -> None:
    """Write a token to a new file only its owner can read."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise CommandError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")


def cmd_tokens_issue(args: argparse.Namespace, session: Session) -> int:
    try:
        seconds = access.parse_duration(args.expires_in)
    except ValueError as exc:
        raise CommandError(f"--expires-in: {exc}", exit_code=2) from None
    repositories = [str(Path(folder).expanduser().absolute()) for folder in args.repository or []]
    response = session.client.issue_token(
        args.name,
        args.identity,
        args.role,
        repositories=repositories,
        expires_in_seconds=seconds,
    )
    if args.write:
        _write_secret(Path(args.write), response.secret)
    if session.json:
        data: dict[str, object] = {"token": render.message_dict(response.token)}
        if not args.write:
            data["secret"] = response.secret
        print(json.dumps(data, indent=2))
        return 0
    _print_lines(access.token_lines(response.token))
    if args.write:
        print(f"wrote the token to {args.write} (mode 0600); it is not shown again")
    else:
        print(response.secret)
        print("conveyor: copy the token now: it is not shown again", file=sys.stderr)
    return 0


def cmd_tokens_list(args: argparse.Namespace, session: Session) -> int:
    tokens = session.client.list_tokens(include_inactive=args.all)
    if session.json:
        print(render.to_json(tokens))
    elif tokens:
        _print_lines(access.tokens_table(tokens))
    else:
        print("no tokens" if args.all else "no active tokens (--all lists revoked and expired)")
    return 0


def cmd_tokens_revoke(args: argparse.Namespace, session: Session) -> int:
    token = session.client.revoke_token(args.token_id)
    if session.json:
        print(render.to_json(token))
    else:
        print(f"revoked token {printable(token.id)} {printable(token.name)!r}")
    return 0


def cmd_audit(args: argparse.Namespace, session: Session) -> int:
    since = None
    if args.since:
        try:
            since = access.parse_since(args.since)
        except ValueError as exc:
            raise CommandError(f"--since: {exc}", exit_code=2) from None
    response = session.client.list_audit_events(
        identity=args.identity or "",
        action=args.action or "",
        since=since,
        page_size=args.limit or 0,
        page_token=args.page_token or "",
    )
    if session.json:
        print(render.to_json(list(response.events)))
    elif response.events:
        _print_lines(access.audit_table(list(response.events)))
    else:
        print("no audit events")
    if response.next_page_token:
        print(f"more events: --page-token {printable(response.next_page_token)}", file=sys.stderr)
    return 0
