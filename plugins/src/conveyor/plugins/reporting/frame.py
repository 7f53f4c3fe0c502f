"""The frame of a reporting stage kind, and the failure that ends an attempt."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

from pydantic import BaseModel

from conveyor.plugin import StageContext, StageOutcome, StageReport, StageSpec, StageStatus
from conveyor.plugins.parameters import read_parameters
from conveyor.plugins.reporting.outcome import span_attributes

ParamsT = TypeVar("ParamsT", bound=BaseModel)


class StageFailure(Exception):
    """Raised anywhere inside :meth:`ReportingStage.execute` to end the
    attempt with a FAILED outcome; its reason is written to the log."""

    def __init__(
        self,
        reason: str,
        *,
        error_type: str,
        system_error: bool = False,
        exit_code: int | None = None,
        report: StageReport | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type
        self.system_error = system_error
        self.exit_code = exit_code
        self.report = report

    def outcome(self) -> StageOutcome:
        return StageOutcome(
            StageStatus.FAILED,
            self.reason,
            self.exit_code,
            error_type=self.error_type,
            system_error=self.system_error,
            span_attributes=span_attributes(self.report) if self.report is not None else {},
            report=self.report,
        )


class ReportingStage(ABC, Generic[ParamsT]):
    """A stage kind whose ``with:`` parameters are the pydantic model
    :attr:`parameters`; :meth:`execute` does the work with them, raising
    :class:`StageFailure` to fail the attempt with a reason."""

    name: str
    description: str
    parameters: type[ParamsT]

    def check(self, spec: StageSpec, params: ParamsT | None) -> Iterable[tuple[str, str]]:
        """Problems beyond the ``with:`` mapping (``run:`` missing, a
        combination of parameters); ``params`` is None when they are invalid."""
        return ()

    def read(self, spec: StageSpec) -> tuple[ParamsT | None, list[tuple[str, str]]]:
        """The stage's parameters, and every problem with the stage."""
        params, problems = read_parameters(self.parameters, spec, self.name)
        return params, [*self.check(spec, params), *problems]

    def tools_problems(self, spec: StageSpec, tools: Sequence[str]) -> Iterable[tuple[str, str]]:
        """A problem when the stage would run nothing: no tool, no commands."""
        if not spec.run and not tools:
            yield (
                "with.tools",
                f"a {self.name} stage without 'run' commands needs at least one tool in 'tools'",
            )

    @abstractmethod
    async def execute(self, ctx: StageContext, params: ParamsT) -> StageOutcome:
        """Do the stage's work with valid parameters."""

    def validate(self, spec: StageSpec) -> Iterable[tuple[str, str]]:
        return self.read(spec)[1]

    async def run(self, ctx: StageContext) -> StageOutcome:
        try:
            params, problems = self.read(ctx.spec)
            if params is None or problems:
                field, message = problems[0]
                raise StageFailure(f"{field}: {message}", error_type="invalid_parameters")
            return await self.execute(ctx, params)
        except StageFailure as failure:
            await ctx.log_line(failure.reason)
            return failure.outcome()
