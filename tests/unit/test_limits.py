"""The limits table bounds every request field, and check_request applies it."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor

from conveyor.daemon.api.convert import fit_run, run_message
from conveyor.daemon.api.limits import REQUEST_FIELDS, RUN_BUDGET, check_request
from conveyor.daemon.errors import InvalidArgument
from conveyor.daemon.records import RunRecord, RunStatus, StageRecord, TriggerKind
from conveyor.daemon.reports import Finding, StageReport
from conveyor.daemon.reports import TestCaseResult as CaseResult
from conveyor.v1 import pipelines_pb2, runs_pb2, service_pb2


def _request_string_fields() -> set[str]:
    service = service_pb2.DESCRIPTOR.services_by_name["ConveyorService"]
    return {
        field.name
        for method in service.methods
        for field in method.input_type.fields
        if field.type == FieldDescriptor.TYPE_STRING
    }


def test_every_request_string_field_has_a_limit_and_every_limit_a_field() -> None:
    assert _request_string_fields() == set(REQUEST_FIELDS)


def _rejected(request: object) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        check_request(request)  # type: ignore[arg-type]
    return info.value


def test_a_value_over_its_limit_names_the_field_and_the_limit() -> None:
    err = _rejected(runs_pb2.CancelRunRequest(run_id="ab" * 10, reason="x" * 3_900_000))
    assert err.field == "reason"
    assert str(err) == "reason is 3900000 bytes long; the limit is 1024 bytes"


def test_the_limit_counts_utf8_bytes() -> None:
    check_request(runs_pb2.CancelRunRequest(reason="\u00e9" * 512))
    err = _rejected(runs_pb2.CancelRunRequest(reason="\u00e9" * 513))
    assert "1026 bytes long" in str(err)


@pytest.mark.parametrize("value", ["ci/a\nb.yaml", "ci/a\x00.yaml", "x\x1b[2J.yaml"])
def test_control_characters_in_a_path_are_refused(value: str) -> None:
    err = _rejected(runs_pb2.SubmitRunRequest(repository="/r", ref="main", pipeline_path=value))
    assert err.field == "pipeline_path" and "control character" in str(err)


def test_a_reason_may_span_lines_but_not_hold_a_nul() -> None:
    check_request(runs_pb2.CancelRunRequest(reason="line 1\n\tline 2\r\n"))
    assert _rejected(runs_pb2.CancelRunRequest(reason="a\x00b")).field == "reason"


def test_a_path_component_over_255_bytes_is_refused() -> None:
    err = _rejected(runs_pb2.SubmitRunRequest(repository="/tmp/" + "d" * 300, ref="main"))
    assert err.field == "repository" and "path component of 300 bytes" in str(err)


def test_unknown_enum_values_are_refused() -> None:
    request = runs_pb2.SubmitRunRequest(repository="/r", ref="main")
    request.trigger = 99  # type: ignore[assignment]
    err = _rejected(request)
    assert err.field == "trigger" and "unknown TriggerKind value 99" in str(err)


def test_pipeline_content_is_checked_for_size_only() -> None:
    check_request(pipelines_pb2.ValidatePipelineRequest(content="name: x\x00\x1b"))
    err = _rejected(pipelines_pb2.ValidatePipelineRequest(content="#" * ((1 << 20) + 1)))
    assert err.field == "content"


def _run_record(
    stages: int, report: StageReport | None = None, why: str = "why " * 1100
) -> RunRecord:
    return RunRecord(
        id="0123456789abcdef0123",
        number=1,
        pipeline="p",
        repository="/r",
        ref="main",
        commit="a" * 40,
        pipeline_path="conveyor.yaml",
        trigger=TriggerKind.MANUAL,
        status=RunStatus.FAILED,
        created_at=1.0,
        spec_json="{}",
        concurrency_group="",
        reason="r" * 10_000,
        stages=[
            StageRecord(
                run_id="0123456789abcdef0123",
                name=f"stage-{i}",
                position=i,
                kind="test",
                needs=[f"stage-{i - 1}"] if i else [],
                reason=why,
                report=report,
            )
            for i in range(stages)
        ],
    )


def _worst_report() -> StageReport:
    text = "\u00e9" * 1500
    return StageReport(
        kind="test",
        counts={"total": 2000},
        findings=[Finding(tool=text, rule=text, severity="high", file=text, message=text)] * 1000,
        tests=[CaseResult(name=text, outcome="failed", message=text, file=text)] * 1000,
        gate_reason=text,
        sources=[text] * 10,
    )


def test_a_run_with_the_largest_reports_fits_its_budget() -> None:
    message = fit_run(run_message(_run_record(3, _worst_report())))
    assert message.ByteSize() <= RUN_BUDGET
    assert len(message.stages) == 3 and message.stages[0].report.counts["total"] == 2000
    for stage in message.stages:
        report = stage.report
        assert len(report.findings) + len(report.tests) + report.truncated == 2000
    assert message.stages[0].report.findings, "the first stages keep what fits"
    assert message.reason.endswith("more characters)")


def test_a_run_with_too_many_stages_to_send_says_so() -> None:
    message = fit_run(run_message(_run_record(80_000, why="exit code 1")))
    assert message.ByteSize() <= RUN_BUDGET
    assert 0 < len(message.stages) < 80_000
    assert "stages left out: too many to send" in message.reason


def test_list_runs_summaries_carry_counts_not_lists() -> None:
    stage = run_message(_run_record(1, _worst_report()), summary=True).stages[0]
    assert not stage.report.findings and not stage.report.tests
    assert stage.report.truncated == 2000 and stage.report.counts["total"] == 2000
