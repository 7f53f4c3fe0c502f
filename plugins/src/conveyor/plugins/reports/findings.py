"""Parsers for the findings of lint and security tools.

Each parser reads one report file and returns :class:`Finding` records with
file paths relative to the workspace (``root``). Messages are redacted:
security tools' messages with :func:`redact`, lint messages with
:func:`redact_credentials`. Fields that quote source code (bandit's ``code``,
detect-secrets' ``hashed_secret``) are never copied.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from conveyor.plugin import Finding
from conveyor.plugins.reports._files import (
    ReportError,
    Shape,
    join_under_root,
    load_json,
    relative_path,
    type_name,
    uri_path,
)
from conveyor.plugins.reports.gates import LINT_LEVELS
from conveyor.plugins.reports.redaction import redact, redact_credentials

#: Longer messages are cut (with an ellipsis).
MAX_MESSAGE_CHARS = 2000

# ruff has spelled syntax errors three ways: E999 (before 0.5), a null code
# (0.5 to 0.11), "invalid-syntax" (since). One rule keeps baselines stable.
_RUFF_SYNTAX_CODES = frozenset({"", "E999", "invalid-syntax"})


def _cut(text: str) -> str:
    text = text.strip()
    if len(text) > MAX_MESSAGE_CHARS:
        return text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text


def _document_list(path: Path, data: object, expected: str) -> list[Any]:
    if not isinstance(data, list):
        raise ReportError(path, f"expected {expected}, got {type_name(data)}")
    return data


def _document_obj(path: Path, data: object, expected: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ReportError(path, f"expected {expected}, got {type_name(data)}")
    return data


# --- ruff ---------------------------------------------------------------------


def parse_ruff_json(path: Path, *, root: Path) -> list[Finding]:
    """Findings from ``ruff check --output-format json``.

    Every diagnostic is an ``error`` (ruff has no levels; a ``severity`` field
    that names a lint level is honoured). Syntax errors have rule
    ``syntax-error``. For notebooks, the line is within the cell, and the
    message names the cell.
    """
    shape = Shape(path)
    items = _document_list(
        path, load_json(path), "a JSON list of diagnostics (ruff check --output-format json)"
    )
    findings: list[Finding] = []
    for number, item in enumerate(items, 1):
        where = f"diagnostic {number}"
        diagnostic = shape.obj(item, where)
        code = shape.field_str(diagnostic, "code", where)
        rule = "syntax-error" if code in _RUFF_SYNTAX_CODES else code
        severity = shape.field_str(diagnostic, "severity", where).lower()
        if severity not in LINT_LEVELS:
            severity = "error"
        location = shape.field_obj(diagnostic, "location", where)
        message = shape.field_str(diagnostic, "message", where)
        if rule == "syntax-error" and message.startswith("SyntaxError: "):
            message = message[len("SyntaxError: ") :]
        cell = diagnostic.get("cell")
        if isinstance(cell, int) and not isinstance(cell, bool):
            message = f"{message} (notebook cell {cell})"
        findings.append(
            Finding(
                tool="ruff",
                rule=rule,
                severity=severity,
                file=relative_path(shape.field_str(diagnostic, "filename", where), root),
                line=shape.field_int(location, "row", f"{where} location"),
                column=shape.field_int(location, "column", f"{where} location"),
                message=_cut(redact_credentials(message)),
            )
        )
    return findings


# --- bandit -------------------------------------------------------------------


def parse_bandit_json(path: Path, *, root: Path) -> list[Finding]:
    """Findings from ``bandit -f json``; severity is bandit's (low, medium,
    high). The ``code`` excerpt is never copied and messages are redacted."""
    shape = Shape(path)
    document = _document_obj(path, load_json(path), "a bandit JSON report (bandit -f json)")
    if "results" not in document:
        raise ReportError(path, "missing 'results' (is this a bandit -f json report?)")
    findings: list[Finding] = []
    for number, item in enumerate(shape.field_list(document, "results", "report"), 1):
        where = f"result {number}"
        result = shape.obj(item, where)
        severity = shape.field_str(result, "issue_severity", where).lower()
        if severity not in ("low", "medium", "high"):
            severity = "low"  # bandit's UNDEFINED
        column = 0
        if result.get("col_offset") is not None:
            column = shape.field_int(result, "col_offset", where) + 1
        findings.append(
            Finding(
                tool="bandit",
                rule=shape.field_str(result, "test_id", where, required=True),
                severity=severity,
                file=relative_path(shape.field_str(result, "filename", where), root),
                line=shape.field_int(result, "line_number", where),
                column=column,
                message=_cut(redact(shape.field_str(result, "issue_text", where))),
            )
        )
    return findings


# --- detect-secrets -----------------------------------------------------------


def parse_detect_secrets_json(path: Path, *, root: Path) -> list[Finding]:
    """Findings from ``detect-secrets scan`` (or a detect-secrets baseline).

    Severity is always ``high``. Neither the secret nor its hash appears in a
    finding. Results audited as not secret (``"is_secret": false``) come back
    baselined.
    """
    shape = Shape(path)
    document = _document_obj(path, load_json(path), "a detect-secrets JSON report")
    if "results" not in document:
        raise ReportError(path, "missing 'results' (is this a detect-secrets scan report?)")
    results = shape.field_obj(document, "results", "report")
    findings: list[Finding] = []
    for name, entries in results.items():
        where = f"results for {name!r}"
        for number, item in enumerate(shape.lst(entries, where), 1):
            entry = shape.obj(item, f"{where}, secret {number}")
            kind = redact_credentials(
                shape.field_str(entry, "type", f"{where}, secret {number}", required=True)
            )
            findings.append(
                Finding(
                    tool="detect-secrets",
                    rule=kind,
                    severity="high",
                    file=relative_path(name, root),
                    line=shape.field_int(entry, "line_number", f"{where}, secret {number}"),
                    message=f"possible {kind} committed",
                    baselined=entry.get("is_secret") is False,
                )
            )
    return findings


# --- SARIF --------------------------------------------------------------------

_SARIF_LEVELS = ("none", "note", "warning", "error")
_SECURITY_FROM_LEVEL = {"error": "high", "warning": "medium", "note": "low", "none": "low"}


def security_severity(score: float) -> str:
    """The scan severity of a CVSS-like score (``security-severity``)."""
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low"


def _score(properties: dict[str, Any]) -> float | None:
    value = properties.get("security-severity")
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class _SarifRun:
    """Rule descriptors and URI bases of one run, for resolving its results."""

    def __init__(self, shape: Shape, run: dict[str, Any], where: str, root: Path) -> None:
        self.shape = shape
        self.root = root
        tool = shape.field_obj(run, "tool", where)
        driver = shape.field_obj(tool, "driver", f"{where} tool")
        self.tool = shape.field_str(driver, "name", f"{where} driver") or "sarif"
        components = [driver] + [
            shape.obj(ext, f"{where} extension {i}")
            for i, ext in enumerate(shape.field_list(tool, "extensions", f"{where} tool"), 1)
        ]
        # rules per tool component (driver first), and all by id
        self.rules: list[list[dict[str, Any]]] = []
        self.by_id: dict[str, dict[str, Any]] = {}
        for number, component in enumerate(components):
            rules = [
                shape.obj(rule, f"{where} component {number} rule {i}")
                for i, rule in enumerate(shape.field_list(component, "rules", where), 1)
            ]
            self.rules.append(rules)
            for rule in rules:
                rule_id = rule.get("id")
                if isinstance(rule_id, str):
                    self.by_id.setdefault(rule_id, rule)
        self.bases = shape.field_obj(run, "originalUriBaseIds", where)
        self.artifacts = shape.field_list(run, "artifacts", where)

    def rule(self, result: dict[str, Any], where: str) -> tuple[str, dict[str, Any]]:
        """The rule id of a result and its descriptor (``{}`` when unknown)."""
        reference = self.shape.field_obj(result, "rule", where)
        rule_id = self.shape.field_str(result, "ruleId", where) or self.shape.field_str(
            reference, "id", f"{where} rule"
        )
        index = result.get("ruleIndex", reference.get("index"))
        component = 0
        tool_component = self.shape.field_obj(reference, "toolComponent", f"{where} rule")
        component_index = tool_component.get("index")
        if isinstance(component_index, int) and 0 <= component_index + 1 < len(self.rules):
            component = component_index + 1
        descriptor: dict[str, Any] = {}
        rules = self.rules[component]
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(rules):
            descriptor = rules[index]
        elif rule_id:
            # hierarchical ids ("CA2101/1") fall back to their base rule
            descriptor = self.by_id.get(rule_id) or self.by_id.get(rule_id.split("/")[0], {})
        if not rule_id:
            rule_id = str(descriptor.get("id") or "unknown-rule")
        return rule_id, descriptor

    def _base(self, base_id: str, depth: int = 0) -> str | None:
        """The absolute path a ``uriBaseId`` stands for, when the run says."""
        entry = self.bases.get(base_id)
        if depth > 5 or not isinstance(entry, dict):
            return None
        uri = entry.get("uri")
        if not isinstance(uri, str):
            return None
        path, kind = uri_path(uri)
        if kind == "file" or (kind == "relative" and PurePosixPath(path).is_absolute()):
            return path
        parent_id = entry.get("uriBaseId")
        if kind == "relative" and isinstance(parent_id, str):
            parent = self._base(parent_id, depth + 1)
            if parent is not None:
                return str(PurePosixPath(parent) / path)
        return None

    def file(self, artifact: dict[str, Any], where: str) -> str:
        uri = self.shape.field_str(artifact, "uri", where)
        base_id = self.shape.field_str(artifact, "uriBaseId", where)
        index = artifact.get("index")
        if not uri and isinstance(index, int) and 0 <= index < len(self.artifacts):
            listed = self.artifacts[index]
            location = listed.get("location") if isinstance(listed, dict) else None
            if isinstance(location, dict):
                uri = self.shape.field_str(location, "uri", where)
                base_id = self.shape.field_str(location, "uriBaseId", where) or base_id
        if not uri:
            return ""
        path, kind = uri_path(uri)
        if kind == "other":
            return path
        if kind == "file" or PurePosixPath(path).is_absolute():
            return relative_path(path, self.root)
        if base_id:
            base = self._base(base_id)
            if base is not None:
                inside = join_under_root(base, path, self.root)
                if inside is not None:
                    return inside
        # loosely: a relative reference is relative to the checkout
        return relative_path(path, self.root)


def _message(shape: Shape, result: dict[str, Any], descriptor: dict[str, Any], where: str) -> str:
    message = shape.field_obj(result, "message", where)
    text = shape.field_str(message, "text", f"{where} message")
    if not text:
        message_id = shape.field_str(message, "id", f"{where} message")
        strings = descriptor.get("messageStrings")
        if message_id and isinstance(strings, dict):
            template = strings.get(message_id)
            if isinstance(template, dict) and isinstance(template.get("text"), str):
                text = template["text"]
    arguments = message.get("arguments")
    if text and isinstance(arguments, list):
        for number, argument in enumerate(arguments):
            text = text.replace(f"{{{number}}}", str(argument))
    if not text:
        text = shape.field_str(message, "markdown", f"{where} message")
    if not text:
        short = descriptor.get("shortDescription")
        if isinstance(short, dict) and isinstance(short.get("text"), str):
            text = short["text"]
    return text


def _suppressed(result: dict[str, Any]) -> bool:
    """Suppressed in the source (``# nosec``, ``// NOSONAR``) and accepted."""
    suppressions = result.get("suppressions")
    if not isinstance(suppressions, list) or not suppressions:
        return False
    return any(isinstance(s, dict) and s.get("status") in (None, "accepted") for s in suppressions)


def parse_sarif(path: Path, *, root: Path, security: bool = False) -> list[Finding]:
    """Findings from a SARIF 2.1.0 log, every run.

    ``security=False`` (lint): the severity is the result's level, else its
    rule's default level, else ``warning``; ``none`` becomes ``note``.
    ``security=True`` (scan): the rule's ``security-severity`` score
    (>= 9 critical, >= 7 high, >= 4 medium, else low) when present, else the
    level (error high, warning medium, note and none low); messages are fully
    redacted.

    Results of kind ``pass``/``notApplicable`` and results a baseline marks
    ``absent`` are skipped; results suppressed in the source come back
    baselined.
    """
    shape = Shape(path)
    document = _document_obj(path, load_json(path), "a SARIF log (a JSON object with 'runs')")
    version = document.get("version")
    if version is not None and not str(version).startswith("2.1"):
        raise ReportError(path, f"unsupported SARIF version {version!r}, expected 2.1.0")
    if "runs" not in document:
        raise ReportError(path, "missing 'runs' (is this a SARIF log?)")
    findings: list[Finding] = []
    for run_number, item in enumerate(shape.field_list(document, "runs", "log"), 1):
        where_run = f"run {run_number}"
        run = _SarifRun(shape, shape.obj(item, where_run), where_run, root)
        results = shape.field_list(shape.obj(item, where_run), "results", where_run)
        for number, entry in enumerate(results, 1):
            where = f"{where_run}, result {number}"
            result = shape.obj(entry, where)
            kind = shape.field_str(result, "kind", where) or "fail"
            if kind in ("pass", "notApplicable"):
                continue
            if shape.field_str(result, "baselineState", where) == "absent":
                continue
            rule, descriptor = run.rule(result, where)
            level = shape.field_str(result, "level", where).lower()
            if not level:
                default = descriptor.get("defaultConfiguration")
                if isinstance(default, dict) and isinstance(default.get("level"), str):
                    level = default["level"].lower()
            if level not in _SARIF_LEVELS:
                level = "warning" if kind == "fail" else "note"
            if security:
                rule_properties = descriptor.get("properties")
                score = _score(rule_properties) if isinstance(rule_properties, dict) else None
                if score is None:
                    score = _score(shape.field_obj(result, "properties", where))
                severity = (
                    security_severity(score) if score is not None else _SECURITY_FROM_LEVEL[level]
                )
            else:
                severity = "note" if level == "none" else level
            file, line, column = "", 0, 0
            for number_loc, location in enumerate(shape.field_list(result, "locations", where), 1):
                where_loc = f"{where} location {number_loc}"
                physical = shape.field_obj(
                    shape.obj(location, where_loc), "physicalLocation", where
                )
                if not physical:
                    continue
                artifact = shape.field_obj(physical, "artifactLocation", where_loc)
                region = shape.field_obj(physical, "region", where_loc)
                file = run.file(artifact, where_loc)
                line = shape.field_int(region, "startLine", where_loc)
                column = shape.field_int(region, "startColumn", where_loc)
                break
            text = _message(shape, result, descriptor, where)
            findings.append(
                Finding(
                    tool=run.tool,
                    rule=rule,
                    severity=severity,
                    file=file,
                    line=line,
                    column=column,
                    message=_cut(redact(text) if security else redact_credentials(text)),
                    baselined=_suppressed(result),
                )
            )
    return findings
