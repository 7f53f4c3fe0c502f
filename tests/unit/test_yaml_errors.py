"""YAML syntax errors in pipeline files are said in the user's terms, at the
line of the mistake (not where PyYAML gave up), and unknown ``with:``
parameters of the built-in kinds get a "did you mean"."""

from __future__ import annotations

import random

import pytest
import yaml

from conveyor.daemon.pipeline import check_pipeline
from conveyor.daemon.pipeline.structure import fields_at
from conveyor.daemon.pipeline.yaml_errors import explain_yaml_error
from conveyor.plugins.lint import LintStage
from conveyor.plugins.run import RunStage
from conveyor.plugins.scan import ScanStage
from conveyor.plugins.test import TestStage

#: The pipeline of a small Python project, as its README would suggest.
PIPELINE = """\
# CI for the shop service
name: shop
env:
  PYTHONDONTWRITEBYTECODE: "1"
timeout: 30m
stages:
  lint:
    uses: lint
    with:
      tools: [ruff]
      paths: [src, tests]
  test:
    uses: test
    run:
      - python -m pip install -e .
      - python -m pytest --junitxml="$CONVEYOR_REPORTS_DIR/junit.xml"
    retries: {max: 1, backoff: 5s}
  scan:
    uses: scan
    with:
      fail_on: high
      baseline: .conveyor/baseline.json
  build:
    needs: [lint, test, scan]
    run: |
      python -m build
      ls dist/
    timeout: 10m
"""

LINES = PIPELINE.splitlines()


def edited(line: int, new: str | None = None, *, insert: str | None = None) -> str:
    """PIPELINE with line ``line`` (1-based) replaced by ``new`` (or removed
    when None), or with ``insert`` put before it."""
    lines = list(LINES)
    if insert is not None:
        lines.insert(line - 1, insert)
    elif new is None:
        del lines[line - 1]
    else:
        lines[line - 1] = new
    return "\n".join(lines) + "\n"


def test_the_realistic_pipeline_is_valid() -> None:
    spec, diagnostics = check_pipeline(PIPELINE)
    assert diagnostics == [] and spec is not None


# (what is broken, the file, the line and column of the mistake, a fragment of the message)
BROKEN = [
    (
        "a stage indented less than the others",
        edited(18, " scan:"),
        (18, 2),
        "'scan' is indented less than the other stages (column 3): indent it to column 3",
    ),
    (
        "a stage moved to column 1, the next stage indented as before",
        edited(18, "scan:"),
        (18, 1),
        "'scan' is at the top level; is it a stage indented less than the others under"
        " 'stages:' (column 3)?",
    ),
    (
        "a stage indented more than the others",
        edited(12, "   test:"),
        (12, 4),
        "'test' is indented more than the other stages (column 3): indent it to column 3",
    ),
    (
        "a key indented under a key that has a value",
        edited(20, "        with:"),
        (20, 9),
        "'with' is indented more than 'uses' above it, as if it belonged to it, but 'uses'"
        " already has a value ('scan'): indent it to column 5, like 'uses'",
    ),
    (
        "a key under a block indented one space less than its siblings",
        edited(11, "     paths: [src, tests]"),
        (11, 6),
        "'paths' is indented less than 'tools' above it (column 7): indent it to column 7",
    ),
    (
        "the first field of a stage indented unlike the file",
        edited(8, "   uses: lint"),
        (8, 4),
        "'uses' is indented 1 space(s) under 'lint', where this file indents by 2:"
        " indent it to column 5, like 'with' on line 9",
    ),
    (
        "a field moved out to the level of the stages",
        edited(8, "  uses: lint"),
        (8, 3),
        "'uses' is indented like 'lint' (column 3), which is left empty: is it one of the"
        " fields of stage 'lint' (column 5)?",
    ),
    (
        "a list item indented less than the items above it",
        edited(16, "     - python -m pytest"),
        (16, 6),
        "this list item is indented less than the items above it: indent it to column 7",
    ),
    (
        "a line of a '|' block indented less than the first",
        edited(27, "     ls dist/"),
        (27, 6),
        "indented less than the text of the '|' block of 'run' above it (column 7)",
    ),
    (
        "a tab used for indentation",
        edited(8, "\tuses: lint"),
        (8, 1),
        "a tab is used for indentation; YAML indents with spaces only",
    ),
    (
        "a key without its colon",
        edited(9, "    with"),
        (9, 5),
        "missing ':' after 'with' (write 'with:')",
    ),
    (
        "a key and value without the colon",
        edited(19, "    uses scan"),
        (19, 5),
        "missing ':' after 'uses' (write 'uses: scan')",
    ),
    (
        "no space after the colon",
        edited(21, "      fail_on:high"),
        (21, 7),
        "a space is needed after ':' to separate the key 'fail_on' from its value (fail_on: high)",
    ),
    (
        "an unclosed double quote",
        edited(4, '  PYTHONDONTWRITEBYTECODE: "1'),
        (4, 28),
        "the string opened with '\"' here is not closed on this line, so the lines below it"
        " (from line 5) are read as its text: add the closing '\"'",
    ),
    (
        "an unclosed quote at the end of the file",
        PIPELINE + "  deploy:\n    run: './deploy.sh\n",
        (30, 10),
        'the string opened with "\'" here is never closed: add the closing "\'"',
    ),
    (
        "an unclosed bracket",
        edited(24, "    needs: [lint, test, scan"),
        (24, 12),
        "the list opened with '[' here is not closed: add ']' after its last item",
    ),
    (
        "an unclosed brace",
        edited(17, "    retries: {max: 1, backoff: 5s"),
        (17, 14),
        "the mapping opened with '{' here is not closed: add '}' after its last item",
    ),
    (
        "': ' inside a plain value",
        edited(27, "      echo built: dist/"),
        (27, 1),
        "",  # inside a '|' block that is text: no error, see the next case
    ),
    (
        "': ' inside a plain value",
        edited(28, "    timeout: 10m # was: 5m: too short"),
        (0, 0),
        "",  # a comment may hold anything
    ),
    (
        "': ' inside the value of a key",
        edited(8, "    uses: lint: ruff"),
        (8, 15),
        "the value of 'uses' contains ': ', which YAML reads as the start of another key:"
        " put the value in quotes (uses: 'lint: ruff')",
    ),
    (
        "a value starting with a reserved character",
        edited(11, "      paths: @src"),
        (11, 14),
        "a value cannot start with '@' (it is reserved in YAML): put the value in quotes,"
        " e.g. '@src'",
    ),
    (
        "a backslash escape that does not exist",
        edited(4, '  PYTHONDONTWRITEBYTECODE: "C:\\dist"'),
        (4, 31),
        "'\\d' is not an escape sequence in a double-quoted string",
    ),
    (
        "an indented first line",
        edited(2, " name: shop"),
        (2, 2),
        "'name' is indented (column 2), but the top-level keys after it are at column 1",
    ),
    (
        "a second document",
        PIPELINE + "---\nname: other\n",
        (29, 1),
        "a second YAML document starts here ('---')",
    ),
    (
        "a stray closing bracket",
        edited(10, "      tools: [ruff]]"),
        (10, 20),
        "']' here closes nothing: no '[' was opened before it",
    ),
]


@pytest.mark.parametrize(
    ("text", "where", "fragment"),
    [(text, where, fragment) for _, text, where, fragment in BROKEN if fragment],
    ids=[what for what, _, _, fragment in BROKEN if fragment],
)
def test_syntax_errors_are_explained_at_the_line_of_the_mistake(
    text: str, where: tuple[int, int], fragment: str
) -> None:
    spec, diagnostics = check_pipeline(text)
    assert spec is None
    assert len(diagnostics) == 1, [str(d) for d in diagnostics]
    (d,) = diagnostics
    assert (d.line, d.column) == where, str(d)
    assert d.message.startswith("invalid YAML: "), str(d)
    assert fragment in d.message, str(d)
    assert "<block" not in d.message and "YAML parser" not in d.message, str(d)


def test_what_looks_like_a_mistake_inside_text_or_comments_is_not_one() -> None:
    for what, text, _, fragment in BROKEN:
        if not fragment:
            spec, diagnostics = check_pipeline(text)
            assert diagnostics == [] and spec is not None, what


def test_a_stage_at_column_one_that_yaml_accepts_is_named_at_its_line() -> None:
    text = PIPELINE + "deploy:\n  needs: [build]\n  run: ./deploy.sh\n"
    spec, diagnostics = check_pipeline(text)
    assert spec is None
    assert [(d.line, d.column, d.path, d.message) for d in diagnostics] == [
        (
            29,
            1,
            "deploy",
            "unknown field 'deploy' at the top level; is it a stage indented less than the"
            " others under 'stages:' (column 3)?",
        )
    ]


def test_an_unknown_top_level_field_that_is_not_stage_like_keeps_its_suggestion() -> None:
    diagnostics = check_pipeline(PIPELINE + "timout: 5m\n")[1]
    assert [d.message for d in diagnostics] == [
        "unknown field 'timout'; expected one of: "
        + ", ".join(_top_level_fields())
        + "; did you mean 'timeout'?"
    ]


def _top_level_fields() -> list[str]:
    return fields_at(())


def test_what_is_not_recognised_keeps_the_parsers_words() -> None:
    text = "name: x\nstages:\n  a:\n    run: &\n"
    diagnostics = check_pipeline(text)[1]
    assert [str(d) for d in diagnostics] == [
        "conveyor.yaml:4:11: invalid YAML: expected alphabetic or numeric character,"
        " but found '\\n' (while scanning an anchor started on line 4)"
    ]


def test_line_numbers_count_crlf_line_breaks_as_yaml_does() -> None:
    text = edited(18, " scan:").replace("\n", "\r\n")
    (d,) = check_pipeline(text)[1]
    assert (d.line, d.column) == (18, 2)
    assert "'scan' is indented less than the other stages" in d.message


def test_mangled_files_are_always_explained_somewhere_in_the_file() -> None:
    """Random edits of the kind a hurried hand makes: every error gets a
    line inside the file, and the explanation never fails."""
    rng = random.Random(8)
    alphabet = " \t\n:-[]{}'\"#|>&*!%@`,?\\"
    errors = 0
    for _ in range(400):
        text = PIPELINE
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(text))
            cut = rng.randrange(2)
            text = text[:at] + rng.choice(alphabet) + text[at + cut :]
        try:
            yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            errors += 1
            problem = explain_yaml_error(text, exc)
            if problem is not None:
                assert 1 <= problem.line <= text.count("\n") + 1, (problem, text)
                assert problem.column >= 1, (problem, text)
                assert problem.message
    assert errors > 100


# --------------------------------------------------------------------------- with: parameters


BUILTIN_KINDS = {
    kind.name: kind.validate for kind in (LintStage(), TestStage(), ScanStage(), RunStage())
}


@pytest.mark.parametrize(
    ("line", "new", "where", "message"),
    [
        (
            10,
            "      tool: [ruff]",
            (10, 7),
            "stages.lint.with.tool: unknown parameter 'tool'; the lint kind accepts: tools,"
            " paths, fail_on, shell; did you mean 'tools'?",
        ),
        (
            21,
            "      fail_at: high",
            (21, 7),
            "stages.scan.with.fail_at: unknown parameter 'fail_at'; the scan kind accepts:",
        ),
        (
            17,
            "    with: {rerun_faild: 2}",
            (17, 12),
            "stages.test.with.rerun_faild: unknown parameter 'rerun_faild'; the test kind accepts:",
        ),
    ],
)
def test_unknown_parameters_of_the_builtin_kinds_get_a_suggestion_at_their_line(
    line: int, new: str, where: tuple[int, int], message: str
) -> None:
    diagnostics = check_pipeline(edited(line, new), stage_kinds=BUILTIN_KINDS)[1]
    assert len(diagnostics) == 1, [str(d) for d in diagnostics]
    (d,) = diagnostics
    assert (d.line, d.column) == where
    assert f"{d.path}: {d.message}".startswith(message)
    assert "did you mean '" in d.message


def test_a_command_that_yaml_reads_as_a_mapping_is_said_to_need_quotes() -> None:
    diagnostics = check_pipeline(edited(15, "      - echo installing: now"))[1]
    assert [(d.line, d.column, d.path, d.message) for d in diagnostics] == [
        (
            15,
            9,
            "stages.test.run[0]",
            "expected a string, got a mapping (YAML reads 'echo installing: now' as a key and"
            " a value because of the ': ': put it in quotes)",
        )
    ]
