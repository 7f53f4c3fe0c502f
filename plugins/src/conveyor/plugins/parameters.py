"""Reading the built-in kinds' ``with:`` parameters: field types shared by
their pydantic models, and one function that validates a stage's ``with:``
mapping against a model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ValidationError

from conveyor.plugin import StageOutcome, StageSpec, StageStatus, parameter_problems

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")

#: The shell the ``run:`` commands run in.
Shell = Literal["sh", "bash"]


def read_parameters(
    model: type[ModelT], spec: StageSpec, kind: str
) -> tuple[ModelT | None, list[tuple[str, str]]]:
    """The stage's ``with:`` parameters, or None and ``(field, message)``
    problems when they are not valid."""
    try:
        return model.model_validate(spec.with_), []
    except ValidationError as exc:
        return None, parameter_problems(exc, model, kind)


def invalid_parameters(problems: Sequence[tuple[str, str]]) -> StageOutcome:
    """The outcome of an attempt whose ``with:`` is not valid (checked when
    the pipeline loaded, so only a changed kind gets here)."""
    field, message = problems[0]
    return StageOutcome(StageStatus.FAILED, f"{field}: {message}", error_type="invalid_parameters")


def _one_as_list(value: Any) -> Any:
    """A single string counts as a list of one."""
    return [value] if isinstance(value, str) else value


def _distinct(values: Sequence[T]) -> Sequence[T]:
    if len(set(values)) != len(values):
        raise ValueError("values must not repeat")
    return values


def _workspace_path(path: str) -> str:
    problem = ""
    pure = PurePosixPath(path)
    if not path:
        problem = "must not be empty"
    elif path.startswith("-"):
        problem = "must not start with '-'"
    elif pure.is_absolute():
        problem = "must be relative to the repository root"
    elif ".." in pure.parts:
        problem = "must stay inside the repository (no '..')"
    if problem:
        raise ValueError(f"{path!r}: {problem}")
    return path


def _not_empty(paths: list[str]) -> list[str]:
    if not paths:
        raise ValueError("expected at least one path")
    return paths


def _unset_as_empty(value: Any) -> Any:
    return "" if value is None else value


def _optional_workspace_path(path: str) -> str:
    return _workspace_path(path) if path else path


#: Values from a fixed set, none twice; a single value counts as a list of one.
Choices = Annotated[list[T], BeforeValidator(_one_as_list), AfterValidator(_distinct)]
#: Relative paths inside the workspace, at least one.
WorkspacePaths = Annotated[
    list[Annotated[str, AfterValidator(_workspace_path)]],
    BeforeValidator(_one_as_list),
    AfterValidator(_not_empty),
    AfterValidator(_distinct),
]
#: An optional relative path inside the workspace ("" when unset).
OptionalWorkspaceFile = Annotated[
    str, BeforeValidator(_unset_as_empty), AfterValidator(_optional_workspace_path)
]
#: A relative path (or glob pattern) inside the workspace, required.
WorkspacePath = Annotated[str, AfterValidator(_workspace_path)]
