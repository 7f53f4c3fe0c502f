"""Fingerprints and baselines: accepting known findings so that only new ones
fail a gate.

A baseline file is JSON::

    {
      "version": 1,
      "findings": [
        {"fingerprint": "3f1c9a0b7d2e4f68", "reason": "legacy endpoint, ticket OPS-12"},
        {"tool": "bandit", "rule": "B101", "file": "tests/*", "reason": "asserts in tests"}
      ]
    }

An entry with a ``fingerprint`` accepts exactly that finding (its ``tool``,
``rule`` and ``file`` are then only for the reader); an entry without one
accepts every finding of ``tool`` and ``rule``, in files matching the
``file`` glob (``*`` matches across folders; empty means any file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cached_property
from pathlib import Path
from typing import Any

from conveyor.plugin import Finding
from conveyor.plugins.reports._files import ReportError, Shape, is_inside, load_json, type_name

BASELINE_VERSION = 1
#: Source files larger than this are not read for fingerprints.
MAX_SOURCE_BYTES = 10 * 1024 * 1024

_FINGERPRINT = re.compile(r"[0-9a-f]{16}")
_ENTRY_KEYS = ("fingerprint", "tool", "rule", "file", "reason")


class _SourceLines:
    """Lines of workspace files, read at most once each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, list[bytes] | None] = {}

    def line(self, file: str, number: int) -> str:
        """The stripped content of line ``number`` (1-based) of ``file``, or
        ``""`` when the file is outside the workspace, unreadable or shorter."""
        if number <= 0 or not is_inside(file):
            return ""
        if file not in self.files:
            self.files[file] = self._read(self.root / file)
        lines = self.files[file]
        if lines is None or number > len(lines):
            return ""
        return lines[number - 1].decode("utf-8", "replace").strip()

    @staticmethod
    def _read(path: Path) -> list[bytes] | None:
        try:
            if path.stat().st_size > MAX_SOURCE_BYTES:
                return None
            # split on "\n" only, as tools count lines (not on "\f" or "\x1c")
            return path.read_bytes().split(b"\n")
        except OSError:
            return None


def _fingerprint(finding: Finding, lines: _SourceLines) -> str:
    content = lines.line(finding.file, finding.line)
    key = "|".join((finding.tool, finding.rule, finding.file, content))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def fingerprint(finding: Finding, root: Path) -> str:
    """16 hex digits identifying a finding by tool, rule, file and the content
    of its line (stripped), so it survives the code moving to another line.

    The line is read from ``root / finding.file``; when it cannot be read the
    content is empty. Only a hash of the line is kept, never the line.
    """
    return _fingerprint(finding, _SourceLines(root))


def with_fingerprints(findings: Iterable[Finding], root: Path) -> list[Finding]:
    """The findings with their ``fingerprint`` set (each file read once)."""
    lines = _SourceLines(root)
    return [dataclasses.replace(f, fingerprint=_fingerprint(f, lines)) for f in findings]


@dataclass(frozen=True)
class BaselineEntry:
    """One accepted finding (``fingerprint``) or rule (``tool`` + ``rule``,
    optionally only in files matching the ``file`` glob)."""

    fingerprint: str = ""
    tool: str = ""
    rule: str = ""
    file: str = ""
    reason: str = ""

    def matches(self, finding: Finding) -> bool:
        if self.fingerprint:
            return finding.fingerprint == self.fingerprint
        return (
            finding.tool == self.tool
            and finding.rule == self.rule
            and (not self.file or fnmatchcase(finding.file, self.file))
        )


@dataclass(frozen=True)
class Baseline:
    """Accepted findings; see the module documentation for the file format."""

    entries: tuple[BaselineEntry, ...] = ()

    @cached_property
    def _fingerprints(self) -> frozenset[str]:
        return frozenset(e.fingerprint for e in self.entries if e.fingerprint)

    @cached_property
    def _rules(self) -> tuple[BaselineEntry, ...]:
        return tuple(e for e in self.entries if not e.fingerprint)

    def matches(self, finding: Finding) -> bool:
        """Whether an entry accepts ``finding`` (fingerprint entries need the
        finding's fingerprint: see :func:`with_fingerprints`)."""
        if finding.fingerprint and finding.fingerprint in self._fingerprints:
            return True
        return any(entry.matches(finding) for entry in self._rules)


def load_baseline(path: Path) -> Baseline:
    """The baseline in ``path``; :class:`ReportError` naming the file and the
    problem (and the entry, as ``findings[i]``) when it is missing or malformed."""
    shape = Shape(path)
    document = load_json(path, missing="baseline file not found")
    if not isinstance(document, dict):
        raise ReportError(
            path,
            'expected a baseline object {"version": 1, "findings": [...]}, '
            f"got {type_name(document)}",
        )
    if "version" not in document:
        raise ReportError(path, f"missing 'version' (expected {BASELINE_VERSION})")
    version = document["version"]
    if version != BASELINE_VERSION or isinstance(version, bool):
        raise ReportError(
            path, f"unsupported baseline version {version!r}, expected {BASELINE_VERSION}"
        )
    if "findings" not in document:
        raise ReportError(path, "missing 'findings' (a list of accepted findings)")
    items = document["findings"]
    if not isinstance(items, list):
        raise ReportError(path, f"'findings' should be a list, got {type_name(items)}")
    entries: list[BaselineEntry] = []
    for index, item in enumerate(items):
        where = f"findings[{index}]"
        entry = shape.obj(item, where)
        unknown = sorted(set(entry) - set(_ENTRY_KEYS))
        if unknown:
            raise ReportError(
                path,
                f"{where}: unknown key {unknown[0]!r} (an entry has: {', '.join(_ENTRY_KEYS)})",
            )
        values = {key: shape.field_str(entry, key, where) for key in _ENTRY_KEYS}
        if values["fingerprint"]:
            if not _FINGERPRINT.fullmatch(values["fingerprint"]):
                raise ReportError(
                    path,
                    f"{where}: 'fingerprint' should be 16 lowercase hex digits, "
                    f"got {values['fingerprint']!r}",
                )
        elif not (values["tool"] and values["rule"]):
            raise ReportError(
                path,
                f"{where}: needs a 'fingerprint', or a 'tool' and a 'rule' "
                "(with an optional 'file' glob)",
            )
        entries.append(BaselineEntry(**values))
    return Baseline(tuple(entries))


def apply_baseline(findings: Iterable[Finding], baseline: Baseline) -> list[Finding]:
    """The findings, with ``baselined=True`` on those the baseline accepts
    (findings already baselined stay so)."""
    return [
        f if f.baselined or not baseline.matches(f) else dataclasses.replace(f, baselined=True)
        for f in findings
    ]


def baseline_document(findings: Iterable[Finding]) -> dict[str, Any]:
    """A baseline document (for ``json.dump``) accepting exactly these findings:
    one fingerprint entry each, with tool, rule and file for the reader.

    Raises ValueError for a finding without a fingerprint.
    """
    entries: dict[str, dict[str, str]] = {}
    for f in sorted(findings, key=lambda f: (f.file, f.line, f.column, f.tool, f.rule)):
        if not f.fingerprint:
            raise ValueError(
                f"{f.tool} {f.rule} at {f.file or '?'}:{f.line} has no fingerprint; "
                "compute fingerprints with with_fingerprints() first"
            )
        entries.setdefault(
            f.fingerprint,
            {
                "fingerprint": f.fingerprint,
                "tool": f.tool,
                "rule": f.rule,
                "file": f.file,
                "reason": "",
            },
        )
    return {"version": BASELINE_VERSION, "findings": list(entries.values())}
