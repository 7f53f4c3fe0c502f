"""JUnit XML parsing (pytest, Surefire, Jest, PHPUnit) and flaky tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.plugins.reports import JUnitResult, ReportError, flaky_tests, parse_junit
from tests.unit.reports.support import HANDWRITTEN, JUNIT

SUITE = "tests.unit.reports.data.junit.sample_suite"


def outcomes(result: JUnitResult) -> list[tuple[str, str]]:
    return [(case.name, case.outcome) for case in result.cases]


def counts(result: JUnitResult) -> tuple[int, int, int, int, int]:
    return (result.total, result.passed, result.failed, result.errors, result.skipped)


def test_pytest_report() -> None:
    result = parse_junit(JUNIT / "pytest-junit.xml")
    assert counts(result) == (8, 3, 2, 1, 2)
    assert outcomes(result) == [
        (f"{SUITE}.test_totals", "failed"),
        (f"{SUITE}.test_uses_database", "error"),  # the fixture raised
        (f"{SUITE}.test_pays", "skipped"),
        (f"{SUITE}.test_rounds", "skipped"),  # pytest reports xfail as skipped
        (f"{SUITE}.test_flaky", "failed"),
    ]
    assert result.passed_names == {
        f"{SUITE}.test_adds",
        f"{SUITE}.TestCart.test_count[1]",
        f"{SUITE}.TestCart.test_count[2]",
    }
    totals, database, pays, rounds, _ = result.cases
    assert totals.message == (
        "AssertionError: the total should include the shipping fee\n"
        "assert 6 == 7\n +  where 6 = sum([1, 2, 3])"
    )
    assert database.message == (
        'failed on setup with "ConnectionError: database is not reachable on port 5432"'
    )
    assert pays.message == "needs a payment sandbox"
    assert rounds.message == "rounding is not implemented yet"
    assert totals.duration_seconds == pytest.approx(0.001)
    assert {case.file for case in result.cases} == {""}  # pytest's xunit2 has no file


def test_flaky_tests() -> None:
    first = parse_junit(JUNIT / "pytest-junit.xml")
    rerun = parse_junit(JUNIT / "pytest-junit-rerun.xml")
    assert counts(rerun) == (3, 1, 1, 1, 0)
    assert flaky_tests(first, rerun) == [f"{SUITE}.test_flaky"]
    assert flaky_tests(first, first) == []
    assert flaky_tests(rerun, first) == []


def test_surefire_report() -> None:
    result = parse_junit(HANDWRITTEN / "surefire-junit.xml")
    assert counts(result) == (5, 2, 1, 1, 1)
    assert [(c.name, c.outcome, c.message, c.duration_seconds) for c in result.cases] == [
        ("com.example.shop.CartTest.appliesDiscount", "failed",
         "expected: <90.00> but was: <100.00>", 0.034),
        ("com.example.shop.CartTest.loadsPrices", "error", "Connection refused", 1002.5),
        ("com.example.shop.CartTest.exportsCsv", "skipped", "export is disabled on CI", 0.0),
    ]  # fmt: skip
    # a <flakyFailure> inside a passing case: it passed (on Surefire's rerun)
    assert "com.example.shop.CartTest.checksOut" in result.passed_names


def test_jest_report_with_several_suites() -> None:
    result = parse_junit(HANDWRITTEN / "jest-junit.xml")
    assert counts(result) == (5, 3, 1, 0, 1)
    # jest-junit repeats the title as classname: not doubled
    assert outcomes(result) == [
        ("cart removes an item", "failed"),
        ("cart shows a coupon", "skipped"),
    ]
    assert result.cases[0].message.startswith("Error: expect(received).toBe(expected)")
    assert result.cases[1].message == ""
    assert result.passed_names == {"cart adds an item", "checkout pays", "checkout sends a receipt"}


def test_phpunit_report_with_nested_suites() -> None:
    result = parse_junit(HANDWRITTEN / "phpunit-junit.xml")
    assert counts(result) == (4, 2, 1, 0, 1)
    assert [(c.name, c.outcome, c.file) for c in result.cases] == [
        ("Tests.Unit.CartTest.testTotal", "failed", "tests/Unit/CartTest.php"),
        # no file on the case: the enclosing suite's
        ("Tests.Unit.PriceTest.testRounding", "skipped", "tests/Unit/PriceTest.php"),
    ]
    assert result.cases[0].message.startswith("Tests\\Unit\\CartTest::testTotal\nFailed asserting")
    assert 'Tests.Unit.CartTest.testDiscount with data set "ten percent"' in result.passed_names


def test_merge() -> None:
    pytest_result = parse_junit(JUNIT / "pytest-junit.xml")
    jest = parse_junit(HANDWRITTEN / "jest-junit.xml")
    merged = pytest_result.merge(jest)
    assert counts(merged) == (13, 6, 3, 1, 3)
    assert merged.cases == [*pytest_result.cases, *jest.cases]
    assert merged.passed_names == pytest_result.passed_names | jest.passed_names
    assert counts(pytest_result) == (8, 3, 2, 1, 2)  # unchanged
    assert counts(JUnitResult().merge(JUnitResult())) == (0, 0, 0, 0, 0)


def test_messages_are_cut_and_credentials_masked(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(
        '<testsuite name="s"><testcase classname="c" name="t">'
        f"<failure>{'x' * 3000}</failure></testcase>"
        '<testcase name="u" time="NaN"><error message="token AKIA3LAMCH2SHZPV0UMH rejected"/>'
        "</testcase></testsuite>"
    )
    result = parse_junit(report)
    assert result.cases[0].message == "x" * 2000
    assert result.cases[1].name == "u"
    assert result.cases[1].message == "token *** rejected"
    assert result.cases[1].duration_seconds == 0.0


def test_namespaced_elements(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(
        '<testsuites xmlns="urn:example"><testsuite><testcase name="t"><skipped/></testcase>'
        "</testsuite></testsuites>"
    )
    assert outcomes(parse_junit(report)) == [("t", "skipped")]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('<testsuite>\n<testcase name="a">\n<failure>\n</testcase>\n</testsuite>',
         "not valid XML: mismatched tag (line 4)"),
        ("<testsuite>", "not valid XML: no element found (line 1)"),
        ("", "empty file, expected a JUnit XML report (did the tests run?)"),
        ("<html><body/></html>",
         "root element is <html>, expected <testsuites> or <testsuite> (not JUnit XML?)"),
        ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">]>\n'
         "<testsuite>&lol;</testsuite>",
         "refusing an XML document with a DOCTYPE or entity declarations"),
        ('<!DOCTYPE testsuite SYSTEM "file:///etc/passwd"><testsuite/>',
         "refusing an XML document with a DOCTYPE or entity declarations"),
    ],
)  # fmt: skip
def test_malformed_reports(tmp_path: Path, content: str, problem: str) -> None:
    report = tmp_path / "reports" / "junit.xml"
    report.parent.mkdir()
    report.write_text(content)
    with pytest.raises(ReportError) as caught:
        parse_junit(report)
    assert str(caught.value) == f"{report}: {problem}"


def test_doctype_refused_in_utf16(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_bytes(
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x [<!ENTITY a "b">]><testsuite/>'.encode(
            "utf-16"
        )
    )
    with pytest.raises(ReportError, match="refusing an XML document with a DOCTYPE"):
        parse_junit(report)


def test_utf16_report(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_bytes(
        '<?xml version="1.0" encoding="UTF-16"?><testsuite><testcase name="é"/></testsuite>'.encode(
            "utf-16"
        )
    )
    assert parse_junit(report).passed_names == {"é"}


def test_missing_and_oversized_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ReportError, match=r"junit\.xml: file not found$"):
        parse_junit(tmp_path / "junit.xml")
    monkeypatch.setattr("conveyor.plugins.reports._files.MAX_REPORT_BYTES", 100)
    report = tmp_path / "big.xml"
    report.write_text("<testsuite>" + " " * 100 + "</testsuite>")
    with pytest.raises(
        ReportError, match=r"too large to parse \(123 bytes; the limit is 100 bytes\)$"
    ):
        parse_junit(report)


def test_doctype_text_in_cdata_is_only_text(tmp_path: Path) -> None:
    # a web test's failure quoting the page it got: not a declaration
    report = tmp_path / "junit.xml"
    report.write_text(
        '<testsuite><testcase classname="web.HomeTest" name="title">'
        "<failure><![CDATA[expected a title in <!DOCTYPE html><html></html>]]></failure>"
        "<system-out>&lt;!ENTITY is escaped here</system-out>"
        "</testcase></testsuite>"
    )
    [case] = parse_junit(report).cases
    assert case.message == "expected a title in <!DOCTYPE html><html></html>"


def test_doctype_after_a_comment_is_refused(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(
        '<?xml version="1.0"?><!-- generated --><!DOCTYPE testsuite SYSTEM "http://example.com/x.dtd">'
        "<testsuite/>"
    )
    with pytest.raises(ReportError, match="refusing an XML document with a DOCTYPE"):
        parse_junit(report)
