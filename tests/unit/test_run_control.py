"""A cancel and a run's final status are decided once, in one order."""

from __future__ import annotations

from conveyor.daemon.records import RunStatus
from conveyor.daemon.scheduler.control import RunControl


async def test_a_cancel_accepted_before_the_decision_wins_even_over_success() -> None:
    control = RunControl(run_id="r", group="")
    assert control.cancel("stop")
    assert control.decide(RunStatus.SUCCEEDED, "") == (RunStatus.CANCELLED, "stop")
    assert control.cancel_scope.cancel_called


async def test_a_cancel_after_the_decision_is_refused_and_changes_nothing() -> None:
    control = RunControl(run_id="r", group="")
    assert control.decide(RunStatus.SUCCEEDED, "") == (RunStatus.SUCCEEDED, "")
    assert not control.cancel("too late")
    assert control.final_status is RunStatus.SUCCEEDED
    assert not control.cancel_scope.cancel_called
    assert control.decide(RunStatus.FAILED, "again") == (RunStatus.SUCCEEDED, ""), "decided once"


async def test_the_first_cancel_reason_is_kept() -> None:
    control = RunControl(run_id="r", group="")
    assert control.cancel("superseded by run #2")
    assert control.cancel("by request")
    assert control.decide(RunStatus.CANCELLED, "x") == (RunStatus.CANCELLED, "superseded by run #2")


async def test_a_shutdown_interruption_does_not_undo_a_finished_result() -> None:
    control = RunControl(run_id="r", group="")
    assert control.cancel("daemon stopping", RunStatus.INTERRUPTED)
    assert control.decide(RunStatus.SUCCEEDED, "") == (RunStatus.SUCCEEDED, "")


async def test_a_user_cancel_replaces_a_pending_interruption() -> None:
    control = RunControl(run_id="r", group="")
    assert control.cancel("daemon stopping", RunStatus.INTERRUPTED)
    assert control.cancel("by request")
    assert control.decide(RunStatus.INTERRUPTED, "daemon stopping") == (
        RunStatus.CANCELLED,
        "by request",
    )
