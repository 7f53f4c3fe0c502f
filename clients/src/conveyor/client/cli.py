"""`conveyor`: submit, follow and inspect runs of the Conveyor daemon."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from conveyor.client import commands, render, severity
from conveyor.client.connection import TlsOptions
from conveyor.client.errors import CommandError, ConveyorError, DaemonUnavailable
from conveyor.client.session import Session
from conveyor.client.terminal import COLOR_MODES, printable

Command = Callable[[argparse.Namespace, Session], int]

EXIT_UNAVAILABLE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= 500:
        raise argparse.ArgumentTypeError("must be between 1 and 500")
    return value


def _findings_limit(text: str) -> int:
    """``--findings``: ``all`` (every one: render.ALL) or how many, 1-10000."""
    if text.lower() == "all":
        return render.ALL
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'all', got {text!r}") from None
    if not 1 <= value <= 10000:
        raise argparse.ArgumentTypeError("must be 'all' or between 1 and 10000")
    return value


def _severity(text: str) -> str:
    try:
        return severity.check(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """--address, the credentials, --output and --color, accepted before and after
    the subcommand."""

    def default(value: str | None) -> str | None:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--address",
        default=default(None),
        help="daemon gRPC address (default: $CONVEYOR_ADDRESS or unix://$CONVEYOR_HOME/conveyord.sock)",
    )
    parser.add_argument(
        "--token-file",
        default=default(None),
        metavar="FILE",
        help="file holding a bearer token (default: $CONVEYOR_TOKEN, or the file"
        " $CONVEYOR_TOKEN_FILE names); not needed on the daemon's unix socket",
    )
    parser.add_argument(
        "--tls-ca",
        default=default(None),
        metavar="FILE",
        help="CA certificates to trust for a TLS address (default: $CONVEYOR_TLS_CA, or the"
        " system's); TCP addresses other than loopback IPs always use TLS",
    )
    parser.add_argument(
        "--tls-cert",
        default=default(None),
        metavar="FILE",
        help="client certificate for mutual TLS (default: $CONVEYOR_TLS_CERT)",
    )
    parser.add_argument(
        "--tls-key",
        default=default(None),
        metavar="FILE",
        help="key of --tls-cert (default: $CONVEYOR_TLS_KEY)",
    )
    parser.add_argument(
        "--output",
        "-o",
        choices=["text", "json"],
        default=default("text"),
        help="output format of listings and details (default: text)",
    )
    parser.add_argument(
        "--color",
        choices=COLOR_MODES,
        default=default("auto"),
        help="colours in logs and watch: auto (on a terminal, unless NO_COLOR is set),"
        " always or never (default: auto)",
    )


def _add(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
    name: str,
    func: Command,
    help: str,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, parents=parents, help=help, description=help)
    parser.set_defaults(func=func)
    return parser


def _add_submit(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--repo", help="git repository (default: the checkout around the cwd)")
    sub.add_argument("--ref", help="branch, tag or commit (default: the current branch)")
    sub.add_argument("--file", help="pipeline file inside the repository (default: conveyor.yaml)")
    sub.add_argument("--idempotency-key", help="submitting twice with a key returns one run")
    sub.add_argument("--trigger", choices=sorted(commands.TRIGGERS), default="manual")
    sub.add_argument("--commit", help="advanced: the exact commit to run (the git hook uses it)")
    sub.add_argument("--watch", "-w", action="store_true", help="watch the run until it ends")


def _add_artifacts(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    artifacts = subparsers.add_parser(
        "artifacts",
        help="list, show and verify artifacts",
        description="Artifacts: immutable build outputs, by digest, with signed provenance.",
    )
    actions = artifacts.add_subparsers(dest="artifacts_command", metavar="ACTION", required=True)
    reference = "sha256:DIGEST (or its first 8+ hex digits), NAME:TAG or NAME@DIGEST"
    sub = _add(actions, parents, "ls", commands.cmd_artifacts_ls, "list artifacts, newest first")
    sub.add_argument("--pipeline", help="only artifacts of this pipeline")
    sub.add_argument("--commit", help="only artifacts of this commit (or a prefix of 4+ digits)")
    sub.add_argument("--version", help="only artifacts of this version")
    sub.add_argument("--tag", help="only artifacts with this tag")
    sub.add_argument("--name", help="only artifacts with this name (image repository, file name)")
    sub.add_argument("--limit", type=_positive_int, help="at most N artifacts (1-500, default 50)")
    sub.add_argument("--page-token", help="the next page, from a previous listing")
    sub = _add(
        actions,
        parents,
        "show",
        commands.cmd_artifacts_show,
        "an artifact: version, tags, commit, run, stage timings, provenance",
    )
    sub.add_argument("artifact", metavar="ARTIFACT", help=reference)
    sub = _add(
        actions,
        parents,
        "verify",
        commands.cmd_artifacts_verify,
        "check an artifact's signed provenance offline",
    )
    sub.add_argument("artifact", metavar="ARTIFACT", help=reference)
    sub.add_argument(
        "--key",
        metavar="PUBKEY.pem",
        help="trust this Ed25519 public key (PEM) instead of the key the daemon serves",
    )


def _add_delivery(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    reference = "sha256:DIGEST (or its first 8+ hex digits), NAME:TAG or NAME@DIGEST"

    def no_wait(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--no-wait", action="store_true", help="return at once instead of following it"
        )

    sub = _add(
        subparsers, parents, "deploy", commands.cmd_deploy, "deploy an artifact to an environment"
    )
    sub.add_argument("environment", metavar="ENV")
    sub.add_argument("artifact", metavar="ARTIFACT", help=reference)
    no_wait(sub)
    sub = _add(
        subparsers,
        parents,
        "promote",
        commands.cmd_promote,
        "deploy the digest healthy in one environment to another",
    )
    sub.add_argument("source", metavar="FROM")
    sub.add_argument("environment", metavar="TO")
    no_wait(sub)
    sub = _add(
        subparsers,
        parents,
        "rollback",
        commands.cmd_rollback,
        "deploy an earlier healthy deployment of an environment again",
    )
    sub.add_argument("environment", metavar="ENV")
    sub.add_argument(
        "--to", metavar="DEPLOYMENT", help="a deployment id (default: previous, the one before)"
    )
    no_wait(sub)
    sub = _add(
        subparsers, parents, "approve", commands.cmd_approve, "let a deployment pending approval go"
    )
    sub.add_argument("deployment", metavar="DEPLOYMENT")
    sub.add_argument("--comment", "-m", help="recorded with the approval")
    no_wait(sub)
    sub = _add(
        subparsers, parents, "reject", commands.cmd_reject, "refuse a deployment pending approval"
    )
    sub.add_argument("deployment", metavar="DEPLOYMENT")
    sub.add_argument("--comment", "-m", help="recorded with the rejection")
    sub = _add(
        subparsers,
        parents,
        "history",
        commands.cmd_history,
        "deployments, newest first: who deployed what, where and when; or one in full",
    )
    sub.add_argument("environment", metavar="ENV", nargs="?", help="only this environment's")
    sub.add_argument("deployment", metavar="DEPLOYMENT", nargs="?", help="show this one in full")
    sub.add_argument("--artifact", help="only deployments of this artifact: " + reference)
    sub.add_argument("--limit", type=_positive_int, help="at most N (1-500, default 50)")
    sub.add_argument("--page-token", help="the next page, from a previous listing")
    sub = _add(
        subparsers,
        parents,
        "envs",
        commands.cmd_envs,
        "environments: which version runs where, since when; one in detail, probed now",
    )
    sub.add_argument("environment", metavar="ENV", nargs="?")
    sub = _add(
        subparsers,
        parents,
        "stop",
        commands.cmd_stop,
        "stop what runs in an environment: its replicas and front proxy",
    )
    sub.add_argument("environment", metavar="ENV")
    sub = _add(
        subparsers,
        parents,
        "dora",
        commands.cmd_dora,
        "the DORA figures of an environment: deployment frequency, lead time, change"
        " failure rate, time to restore",
    )
    sub.add_argument("environment", metavar="ENV")
    sub.add_argument(
        "--window",
        metavar="DURATION",
        help="how far back: 30d, 12h, 2w, ... (default: the daemon's dora_window_days)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conveyor", description="Submit, follow and inspect runs of the Conveyor daemon."
    )
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    parents = [common]
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_submit(_add(subparsers, parents, "submit", commands.cmd_submit, "queue a run"))

    sub = _add(subparsers, parents, "runs", commands.cmd_runs, "list runs, newest first")
    sub.add_argument("--pipeline", help="only runs of this pipeline")
    sub.add_argument("--status", choices=render.run_status_choices(), help="only this status")
    sub.add_argument("--commit", help="only runs of this commit (or a prefix of 4+ digits)")
    sub.add_argument("--limit", type=_positive_int, help="at most N runs (1-500, default 50)")
    sub.add_argument("--page-token", help="the next page, from a previous listing")

    sub = _add(subparsers, parents, "show", commands.cmd_show, "a run and its stages")
    sub.add_argument("run", metavar="RUN")
    sub.add_argument(
        "--findings",
        type=_findings_limit,
        default=render.REPORT_ITEMS,
        metavar="N|all",
        help=f"findings or tests listed per stage report (default: {render.REPORT_ITEMS})",
    )
    sub.add_argument(
        "--severity",
        type=_severity,
        metavar="SEVERITY",
        help="only findings of this severity or worse: " + ", ".join(severity.SEVERITIES),
    )

    sub = _add(
        subparsers,
        parents,
        "trace",
        commands.cmd_trace,
        "a run, or the run that built an artifact, as a timeline of its stages",
    )
    sub.add_argument(
        "run",
        metavar="RUN|ARTIFACT",
        help="run id, or an artifact: sha256:DIGEST (8+ hex digits), NAME:TAG or NAME@DIGEST",
    )

    sub = _add(subparsers, parents, "watch", commands.cmd_watch, "follow a run live")
    sub.add_argument("run", metavar="RUN")

    sub = _add(subparsers, parents, "logs", commands.cmd_logs, "print stage logs")
    sub.add_argument("run", metavar="RUN")
    sub.add_argument("stage", metavar="STAGE", nargs="?", help="one stage (default: all)")
    sub.add_argument("--follow", "-f", action="store_true", help="stream until stages end")

    sub = _add(subparsers, parents, "cancel", commands.cmd_cancel, "cancel a run")
    sub.add_argument("run", metavar="RUN")
    sub.add_argument("--reason", help="recorded with the cancellation")

    sub = _add(subparsers, parents, "validate", commands.cmd_validate, "check a pipeline file")
    sub.add_argument("file", metavar="FILE", nargs="?", default="conveyor.yaml")

    sub = _add(
        subparsers,
        parents,
        "baseline",
        commands.cmd_baseline,
        "write a scan baseline file from the findings of a run",
    )
    sub.add_argument("run", metavar="RUN")
    sub.add_argument("stage", metavar="STAGE", help="the scan stage")
    sub.add_argument(
        "--min-severity",
        type=_severity,
        metavar="SEVERITY",
        help="only findings of this severity or worse (default: all): "
        + ", ".join(severity.SEVERITIES),
    )
    sub.add_argument(
        "--include-baselined",
        action="store_true",
        help="also the findings the run's baseline already accepted",
    )
    sub.add_argument(
        "--write",
        metavar="FILE",
        help="write the baseline to FILE, keeping the entries already in it (default: print it)",
    )
    sub.add_argument(
        "--replace", action="store_true", help="with --write: drop the entries already in FILE"
    )

    _add_artifacts(subparsers, parents)
    _add_delivery(subparsers, parents)

    _add(subparsers, parents, "plugins", commands.cmd_plugins, "list the daemon's plugins")
    _add(subparsers, parents, "status", commands.cmd_status, "the daemon's status")

    _add(subparsers, parents, "whoami", commands.cmd_whoami, "who the daemon takes you for")
    _add(
        subparsers,
        parents,
        "web-login",
        commands.cmd_web_login,
        "a one-time link that signs you in to the web dashboard as yourself",
    )

    sub = _add(
        subparsers, parents, "audit", commands.cmd_audit, "the audit log, newest first (admin)"
    )
    sub.add_argument("--identity", help="only events of this identity")
    sub.add_argument("--action", help="only this action (SubmitRun, CancelRun, IssueToken, ...)")
    sub.add_argument(
        "--since", metavar="WHEN", help="only events since WHEN: 1h, 7d, or 2025-06-01T12:00"
    )
    sub.add_argument("--limit", type=_positive_int, help="at most N events (1-500, default 50)")
    sub.add_argument("--page-token", help="the next page, from a previous listing")

    admin = subparsers.add_parser(
        "admin", help="administer the daemon (admin)", description="Administration."
    )
    admin_sub = admin.add_subparsers(dest="admin_command", metavar="AREA", required=True)
    tokens = admin_sub.add_parser(
        "tokens", help="bearer tokens: issue, list, revoke", description="Bearer tokens."
    )
    tokens_sub = tokens.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    sub = _add(tokens_sub, parents, "issue", commands.cmd_tokens_issue, "issue a bearer token")
    sub.add_argument("name", metavar="NAME", help="what the token is for")
    sub.add_argument("--identity", required=True, help="the identity calls with the token act as")
    sub.add_argument(
        "--role",
        action="append",
        default=[],
        help="viewer, developer, deployer:ENV, approver:ENV or admin (repeatable; without"
        " one the token may only call whoami)",
    )
    sub.add_argument(
        "--repository",
        action="append",
        metavar="FOLDER",
        help="folder whose repositories the token may build (repeatable; developers need one)",
    )
    sub.add_argument(
        "--expires-in",
        default="90d",
        metavar="DURATION",
        help="lifetime: 90d, 12h, ... (default 90d)",
    )
    sub.add_argument(
        "--write", metavar="FILE", help="write the token to FILE (mode 0600) instead of printing it"
    )
    sub = _add(tokens_sub, parents, "list", commands.cmd_tokens_list, "list tokens")
    sub.add_argument("--all", action="store_true", help="also revoked and expired tokens")
    sub = _add(tokens_sub, parents, "revoke", commands.cmd_tokens_revoke, "revoke a token")
    sub.add_argument("token_id", metavar="TOKEN_ID", help="the token's id (t_...)")

    hook = subparsers.add_parser(
        "hook", help="manage the git post-receive hook", description="Git hook management."
    )
    hook_sub = hook.add_subparsers(dest="hook_command", metavar="ACTION", required=True)
    sub = _add(
        hook_sub,
        parents,
        "install",
        commands.cmd_hook_install,
        "submit a run on every push to a repository",
    )
    sub.add_argument("repo", metavar="BARE_REPO")
    sub.add_argument("--file", help="pipeline file the runs use (default: conveyor.yaml)")
    sub.add_argument("--force", action="store_true", help="replace a hook not written by us")
    sub = _add(hook_sub, parents, "uninstall", commands.cmd_hook_uninstall, "remove the hook")
    sub.add_argument("repo", metavar="BARE_REPO")
    sub.add_argument("--force", action="store_true", help="remove a hook not written by us")
    return parser


def _tls_options(args: argparse.Namespace) -> TlsOptions | None:
    """TLS from the flags, each defaulting to its CONVEYOR_TLS_* variable;
    None when neither says anything."""
    env = TlsOptions.from_environment() or TlsOptions()
    options = TlsOptions(
        args.tls_ca or env.ca_file, args.tls_cert or env.cert_file, args.tls_key or env.key_file
    )
    return options if options != TlsOptions() else None


def _error(message: str) -> None:
    # messages quote what the daemon and the user sent: show, never act on, escapes
    print(f"conveyor: error: {printable(message, multiline=True)}", file=sys.stderr)


def _run(func: Command, args: argparse.Namespace, session: Session) -> int:
    try:
        return func(args, session)
    except DaemonUnavailable as exc:
        _error(str(exc))
        return EXIT_UNAVAILABLE
    except ConveyorError as exc:
        _error(str(exc))
        return 1
    except CommandError as exc:
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`conveyor logs RUN | head`): exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    session = Session(
        args.address,
        args.output,
        color=args.color,
        token_file=args.token_file,
        tls=_tls_options(args),
    )
    try:
        return _run(func, args, session)
    finally:
        session.close()


if __name__ == "__main__":
    sys.exit(main())
