"""The public plugin module, ``conveyor.plugin``: what it exports, ``with:``
parameter errors, frozen run views and where executors write output."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Annotated, Literal

import pytest
import trio
from pydantic import AfterValidator, BaseModel, Field, ValidationError

import conveyor.plugin
from conveyor.daemon.executors.base import LogOutput
from conveyor.daemon.logstore import StageLog
from conveyor.daemon.records import StageStatus
from conveyor.daemon.views import run_view
from conveyor.plugin import (
    Parameters,
    ProcessRequest,
    Run,
    StageReport,
    parameter_problems,
    run_in_process_group,
)
from tests.support.plugins import run_record

ROOT = Path(__file__).resolve().parents[2]


def test_the_public_names_are_the_documented_ones() -> None:
    """docs/plugins.md's table of ``conveyor.plugin`` lists exactly what it exports."""
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = text.split("## The `conveyor.plugin` module", 1)[1].split("\n## ", 1)[0]
    documented = {
        name.strip().strip("`")
        for line in section.splitlines()
        if line.startswith("| `")
        for name in line.split("|")[1].split(",")
    }
    assert documented == set(conveyor.plugin.__all__)
    for name in conveyor.plugin.__all__:
        assert getattr(conveyor.plugin, name) is not None


def _even(value: int) -> int:
    if value % 2:
        raise ValueError(f"{value} is odd; expected an even number")
    return value


class Knobs(Parameters):
    level: Literal["low", "high"] = "low"
    levels: list[Literal["low", "high"]] = []
    retries: int = Field(0, ge=0, le=3)
    size: Annotated[int, AfterValidator(_even)] = 2
    verbose: bool = False
    name: str = ""
    targets: list[str] = Field(min_length=1)
    tags: list[str] = Field([], max_length=2)


def problems(values: dict[str, object]) -> list[tuple[str, str]]:
    try:
        Knobs.model_validate(values)
    except ValidationError as exc:
        return parameter_problems(exc, Knobs, "knobs")
    return []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"targets": ["a"]}, []),
        (
            {"targets": ["a"], "levle": "low"},
            [
                (
                    "with.levle",
                    "unknown parameter 'levle'; the knobs kind accepts: level, levels,"
                    " retries, size, verbose, name, targets, tags; did you mean 'level'?",
                )
            ],
        ),
        ({}, [("with.targets", "required parameter 'targets' is missing")]),
        (
            {"targets": ["a"], "tags": ["x", "y", "z"]},
            [("with.tags", "expected at most 2 items, got 3")],
        ),
        (
            {"targets": ["a"], "level": "medium"},
            [("with.level", "expected 'low' or 'high', got the string 'medium'")],
        ),
        (
            {"targets": ["a"], "levels": ["low", "max"]},
            [("with.levels[1]", "unknown value 'max'; expected 'low' or 'high'")],
        ),
        (
            {"targets": ["a"], "retries": 9},
            [("with.retries", "expected an integer from 0 to 3, got the integer 9")],
        ),
        (
            {"targets": ["a"], "retries": "2"},
            [("with.retries", "expected an integer from 0 to 3, got the string '2'")],
        ),
        (
            {"targets": ["a"], "retries": True},
            [("with.retries", "expected an integer from 0 to 3, got true")],
        ),
        (
            {"targets": ["a"], "size": 3},
            [("with.size", "3 is odd; expected an even number")],
        ),
        (
            {"targets": ["a"], "verbose": "yes"},
            [("with.verbose", "expected true or false, got the string 'yes'")],
        ),
        ({"targets": ["a"], "name": 1.5}, [("with.name", "expected a string, got the number 1.5")]),
        ({"targets": "a"}, [("with.targets", "expected a list, got the string 'a'")]),
        ({"targets": [3]}, [("with.targets[0]", "expected a string, got the integer 3")]),
        (
            {"targets": []},
            [("with.targets", "must not be empty")],
        ),
    ],
)
def test_parameter_problems_name_the_field_and_what_was_expected(
    values: dict[str, object], expected: list[tuple[str, str]]
) -> None:
    assert problems(values) == expected


def test_a_kind_without_parameters_says_so() -> None:
    class Nothing(Parameters):
        pass

    with pytest.raises(ValidationError) as caught:
        Nothing.model_validate({"x": 1})
    assert parameter_problems(caught.value, Nothing, "bare") == [
        ("with.x", "unknown parameter 'x'; the bare kind takes no parameters")
    ]


def test_nested_models_name_the_nested_key() -> None:
    class Inner(BaseModel):
        model_config = Parameters.model_config
        port: int

    class Outer(Parameters):
        server: Inner | None = None

    with pytest.raises(ValidationError) as caught:
        Outer.model_validate({"server": {"prot": 1}})
    assert parameter_problems(caught.value, Outer, "srv") == [
        ("with.server.port", "required key 'port' is missing"),
        ("with.server.prot", "unknown key 'prot'"),
    ]


def test_run_views_are_frozen_snapshots() -> None:
    record = run_record("build", "test")
    record.stages[0].report = StageReport(kind="lint", counts={"total": 0})
    view = run_view(record)
    record.stages[0].status = StageStatus.SUCCEEDED
    assert record.stages[0].report is not None
    record.stages[0].report.counts["total"] = 5
    assert view.stage("build").status is StageStatus.PENDING
    build_report = view.stage("build").report
    assert build_report is not None and build_report.counts == {"total": 0}
    assert [stage.name for stage in view.stages] == ["build", "test"]
    assert isinstance(view.stages, tuple) and view.stage("test").needs == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.stages[0].status = StageStatus.FAILED  # type: ignore[misc]
    with pytest.raises(KeyError):
        view.stage("deploy")
    assert isinstance(view, Run)


async def test_a_writer_in_a_worker_thread_counts_every_byte_before_the_thread_returns(
    tmp_path: Path,
) -> None:
    log = StageLog(tmp_path / "stage.log")
    output = LogOutput(log)
    pieces = [b"x" * 1000] * 500

    def pump() -> str:
        with output.open_writer() as writer:
            for piece in pieces:
                writer.write(piece)
        return threading.current_thread().name

    thread = await trio.to_thread.run_sync(pump)
    assert thread != threading.current_thread().name
    assert log.size == 500_000, "counted on the loop by the time run_sync returns"
    await output.write(b"from the loop\n")
    assert log.size == 500_014
    assert (tmp_path / "stage.log").read_bytes() == b"x" * 500_000 + b"from the loop\n"
    writer = await trio.to_thread.run_sync(output.open_writer)
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"late")


async def test_run_in_process_group_writes_to_the_stage_output(tmp_path: Path) -> None:
    log = StageLog(tmp_path / "stage.log")
    request = ProcessRequest(
        argv=["sh", "-c", "echo out; echo err >&2; exit 3"], cwd=tmp_path, env={}
    )
    code = await run_in_process_group(request, LogOutput(log))
    assert code == 3
    assert sorted((tmp_path / "stage.log").read_bytes().splitlines()) == [b"err", b"out"]
    assert log.size == len(b"out\nerr\n")
    chunks = [data async for _, data in log.chunks(0, follow=False)]
    assert b"".join(chunks) in (b"out\nerr\n", b"err\nout\n")
