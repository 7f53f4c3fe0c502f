"""`conveyor baseline`: a scan baseline file from the findings of a run.

Writes the document the ``scan`` kind reads (``baseline:`` in the pipeline,
see docs/pipeline.md#baselines): ``{"version": 1, "findings": [...]}`` with
one fingerprint entry per finding. The format is the plugins' (their
``load_baseline`` reads it); the client writes it itself so that it needs
nothing of the daemon's packages.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.client import render, severity
from conveyor.client.errors import CommandError
from conveyor.client.terminal import printable
from conveyor.v1 import runs_pb2

BASELINE_VERSION = 1
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")
_ENTRY_KEYS = ("fingerprint", "tool", "rule", "file", "reason")


@dataclass
class Selection:
    """The findings of a report that go into a baseline, and what was left out."""

    findings: list[runs_pb2.Finding] = field(default_factory=list)
    #: Findings below ``--min-severity``.
    below: int = 0
    #: Findings already baselined in the run (left out without ``--include-baselined``).
    baselined: int = 0
    #: Findings without a usable fingerprint (a plugin that sets none).
    unfingerprinted: int = 0


def scan_report(run: runs_pb2.Run, stage_name: str) -> runs_pb2.StageReport:
    """The report of ``stage_name``; CommandError when there is no such stage,
    it has no report, or its report holds no findings (a test report)."""
    stages = {stage.name: stage for stage in run.stages}
    stage = stages.get(stage_name)
    run_id = printable(run.id)
    if stage is None:
        names = ", ".join(printable(name) for name in stages) or "none"
        raise CommandError(f"run {run_id} has no stage {stage_name!r} (stages: {names})")
    if stage.kind in ("run", "test", "lint") and not stage.HasField("report"):
        raise CommandError(
            f"stage {stage_name!r} is a {stage.kind} stage: a baseline takes the findings"
            " of a scan stage"
        )
    if not stage.HasField("report"):
        why = f": {printable(stage.reason)}" if stage.reason else ""
        raise CommandError(
            f"stage {stage_name!r} of run {run_id} has no report"
            f" ({render.stage_status_name(stage.status)}{why}); a baseline needs the findings"
            " of a scan that ran to its end"
        )
    report = stage.report
    if report.kind == "test" or (report.tests and not report.findings):
        raise CommandError(f"stage {stage_name!r} is a test stage: a baseline takes findings")
    if report.kind == "lint":
        raise CommandError(
            f"stage {stage_name!r} is a lint stage, which reads no baseline file;"
            " suppress lint findings in the source (# noqa) or in the tool's configuration"
        )
    return report


def select(
    report: runs_pb2.StageReport, *, min_severity: str | None, include_baselined: bool
) -> Selection:
    """The findings at or above ``min_severity`` (None: all), without those
    the run's baseline already accepted unless ``include_baselined``."""
    chosen = Selection()
    for finding in report.findings:
        if not severity.at_least(finding.severity, min_severity):
            chosen.below += 1
        elif finding.baselined and not include_baselined:
            chosen.baselined += 1
        elif not _FINGERPRINT.fullmatch(finding.fingerprint):
            chosen.unfingerprinted += 1
        else:
            chosen.findings.append(finding)
    return chosen


def entries(findings: Iterable[runs_pb2.Finding]) -> list[dict[str, str]]:
    """One entry per fingerprint, ordered by file, line, tool and rule, with
    an empty ``reason`` to fill in (as the plugins' ``baseline_document``)."""
    unique: dict[str, dict[str, str]] = {}
    for f in sorted(findings, key=lambda f: (f.file, f.line, f.column, f.tool, f.rule)):
        unique.setdefault(
            f.fingerprint,
            {
                "fingerprint": f.fingerprint,
                "tool": f.tool,
                "rule": f.rule,
                "file": f.file,
                "reason": "",
            },
        )
    return list(unique.values())


def read_existing(path: Path) -> list[dict[str, Any]] | None:
    """The entries of the baseline file at ``path`` (None when there is none),
    kept as they are; CommandError when it is not a baseline file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CommandError(f"cannot read {path}: {reason}") from None

    def refuse(problem: str) -> CommandError:
        return CommandError(
            f"{path} is not a baseline file ({problem}); use --replace to overwrite it"
        )

    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise refuse(f"not valid JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("version") != BASELINE_VERSION:
        raise refuse(f'expected {{"version": {BASELINE_VERSION}, "findings": [...]}}')
    items = document.get("findings")
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise refuse("'findings' should be a list of entries")
    return items


def merged(
    existing: Sequence[dict[str, Any]], new: Sequence[dict[str, str]]
) -> list[dict[str, Any]]:
    """``existing`` entries unchanged (with their reasons), then the ``new``
    ones whose fingerprint is not among them."""
    known = {entry.get("fingerprint") for entry in existing}
    return [*existing, *(entry for entry in new if entry["fingerprint"] not in known)]


def document(items: Sequence[dict[str, Any]]) -> str:
    """The baseline file's text."""
    return json.dumps({"version": BASELINE_VERSION, "findings": list(items)}, indent=2) + "\n"


def write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a reader sees the old file or
    the new one, never half of one), making its folder if needed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _file_mode(path)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(temporary, mode)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None


def _file_mode(path: Path) -> int:
    """The mode of the file being replaced, else what the umask gives a new file."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
