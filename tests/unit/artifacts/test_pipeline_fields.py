"""The pipeline file's artifact fields: ``version:``, and a stage's
``inputs:``, ``require_clean``, ``allow_dirty`` and ``overwrite_tags``,
checked at validation time with file and line."""

from __future__ import annotations

import pytest

from conveyor.daemon.pipeline import check_pipeline


def problems(text: str) -> list[str]:
    spec, diagnostics = check_pipeline(text, "ci/conveyor.yaml")
    assert (spec is None) == bool(diagnostics)
    return [str(d) for d in diagnostics]


def test_the_fields_are_read() -> None:
    spec, diagnostics = check_pipeline(
        "name: shop\nversion: 1.4.0-beta\nstages:\n  pkg:\n    uses: file\n"
        "    inputs: [./src/, pyproject.toml, .]\n    allow_dirty: true\n"
        "    overwrite_tags: true\n  check:\n    run: 'true'\n    require_clean: true\n"
    )
    assert diagnostics == [] and spec is not None
    assert spec.version == "1.4.0-beta"
    pkg = spec.stages["pkg"]
    assert pkg.inputs == ["src", "pyproject.toml", "."]
    assert (pkg.allow_dirty, pkg.overwrite_tags, pkg.require_clean) == (True, True, False)
    assert spec.stages["check"].require_clean
    assert spec.stages["check"].inputs == []


@pytest.mark.parametrize(
    ("version", "why"),
    [
        ("v1.2.3", "'v1.2.3': write the version without the leading 'v' (1.2.3)"),
        ("1.2", "'1.2' is not a Semantic Version"),
        ("01.2.3", "no leading zeros"),
    ],
)
def test_an_invalid_version_is_reported_at_its_line(version: str, why: str) -> None:
    (problem,) = problems(f"name: shop\n\nversion: {version}\nstages:\n  s:\n    run: x\n")
    assert problem.startswith("ci/conveyor.yaml:3:10: version: ")
    assert why in problem


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/etc", "'/etc' must be relative to the repository root"),
        ("src/../../x", "'src/../../x' must stay inside the repository (no '..')"),
        ("''", "a path must not be empty"),
        ('"a\\tb"', "must not contain control characters"),
    ],
)
def test_inputs_stay_inside_the_repository(path: str, why: str) -> None:
    (problem,) = problems(f"name: shop\nstages:\n  s:\n    run: x\n    inputs: [src, {path}]\n")
    assert problem.startswith("ci/conveyor.yaml:5:")
    assert "stages.s.inputs[1]: " in problem
    assert why in problem


def test_require_clean_and_allow_dirty_contradict() -> None:
    (problem,) = problems(
        "name: shop\nstages:\n  s:\n    run: x\n    require_clean: true\n    allow_dirty: true\n"
    )
    assert problem == (
        "ci/conveyor.yaml:4:5: stages.s: require_clean and allow_dirty contradict each other;"
        " keep one of them"
    )
