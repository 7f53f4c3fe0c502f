"""JUnit XML test reports (pytest ``--junitxml``, Maven Surefire, Jest,
PHPUnit, Go's gotestsum...) and flaky-test detection."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

import defusedxml.ElementTree as defused
from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

from conveyor.plugin import TestCaseResult
from conveyor.plugins.reports._files import ReportError, read_report
from conveyor.plugins.reports.redaction import redact_credentials

#: Failure and skip messages are cut to this many characters.
MAX_MESSAGE_CHARS = 2000

_OUTCOMES = {"failure": "failed", "error": "error", "skipped": "skipped"}


@dataclass
class JUnitResult:
    """Counts of one or more JUnit reports, with the non-passing cases."""

    total: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    #: Non-passing cases only: outcome ``failed``, ``error`` or ``skipped``.
    cases: list[TestCaseResult] = field(default_factory=list)
    passed_names: set[str] = field(default_factory=set)

    def merge(self, other: JUnitResult) -> JUnitResult:
        """A new result holding both (e.g. one report per test module)."""
        return JUnitResult(
            total=self.total + other.total,
            passed=self.passed + other.passed,
            failed=self.failed + other.failed,
            errors=self.errors + other.errors,
            skipped=self.skipped + other.skipped,
            cases=[*self.cases, *other.cases],
            passed_names=self.passed_names | other.passed_names,
        )


def _local(name: object) -> str:
    """A name without its namespace (``"{uri}testcase"``)."""
    if not isinstance(name, str):
        return ""
    return name.rsplit("}", 1)[-1]


def _seconds(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        # Surefire writes thousands separators ("1,234.567")
        seconds = float(value.replace(",", ""))
    except ValueError:
        return 0.0
    return seconds if math.isfinite(seconds) and seconds >= 0 else 0.0


def _message(element: ET.Element) -> str:
    text = element.get("message") or "".join(element.itertext())
    text = text.strip()[:MAX_MESSAGE_CHARS]
    return redact_credentials(text)


def _case_name(case: ET.Element) -> str:
    name = case.get("name", "")
    classname = case.get("classname") or case.get("class") or ""
    # jest-junit repeats the title in classname by default
    if not classname or classname == name:
        return name or classname or "(unnamed test)"
    return f"{classname}.{name}" if name else classname


def _collect(element: ET.Element, suite_file: str, result: JUnitResult) -> None:
    for child in element:
        tag = _local(child.tag)
        if tag in ("testsuite", "testsuites"):
            _collect(child, child.get("file") or suite_file, result)
        elif tag == "testcase":
            _add_case(child, suite_file, result)


def _add_case(case: ET.Element, suite_file: str, result: JUnitResult) -> None:
    name = _case_name(case)
    result.total += 1
    for child in case:
        outcome = _OUTCOMES.get(_local(child.tag))
        if outcome is None:
            continue
        if outcome == "failed":
            result.failed += 1
        elif outcome == "error":
            result.errors += 1
        else:
            result.skipped += 1
        result.cases.append(
            TestCaseResult(
                name=name,
                outcome=outcome,
                message=_message(child),
                file=case.get("file") or suite_file,
                duration_seconds=_seconds(case.get("time")),
            )
        )
        return
    result.passed += 1
    result.passed_names.add(name)


def _parse_xml(path: Path, data: bytes) -> ET.Element:
    """The element tree of ``data``, refusing DOCTYPEs and entity declarations.

    defusedxml stops the parse at a DOCTYPE, before any entity is declared or
    expanded (no billion laughs, no external entities), while
    ``<!DOCTYPE html>`` inside a CDATA section (a web page in a failure
    message) is only text. Names keep their namespace (``{uri}testcase``).
    """
    try:
        return defused.fromstring(data, forbid_dtd=True)
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden):
        raise ReportError(
            path, "refusing an XML document with a DOCTYPE or entity declarations"
        ) from None
    except ET.ParseError as exc:
        raise ReportError(
            path, f"not valid XML: {expat.ErrorString(exc.code)} (line {exc.position[0]})"
        ) from None


def parse_junit(path: Path) -> JUnitResult:
    """The tests in a JUnit XML report (root ``<testsuites>`` or
    ``<testsuite>``, suites nested at any depth).

    A case is named ``classname.name`` (``name`` alone without a classname);
    ``<failure>`` makes it failed, ``<error>`` an error, ``<skipped>`` skipped
    (pytest reports xfail as skipped too). Documents with a DOCTYPE or entity
    declarations and files over 50 MB are refused with :class:`ReportError`.
    """
    data = read_report(path)
    if not data.strip():
        raise ReportError(path, "empty file, expected a JUnit XML report (did the tests run?)")
    root = _parse_xml(path, data)
    tag = _local(root.tag)
    result = JUnitResult()
    if tag == "testsuite":
        _collect(root, root.get("file") or "", result)
    elif tag == "testsuites":
        _collect(root, "", result)
    else:
        raise ReportError(
            path, f"root element is <{tag}>, expected <testsuites> or <testsuite> (not JUnit XML?)"
        )
    return result


def flaky_tests(first: JUnitResult, rerun: JUnitResult) -> list[str]:
    """Names that failed or errored in ``first`` and passed in ``rerun``, in
    the order of ``first``."""
    names: dict[str, None] = {}  # ordered, without duplicates
    for case in first.cases:
        if case.outcome in ("failed", "error") and case.name in rerun.passed_names:
            names[case.name] = None
    return list(names)
