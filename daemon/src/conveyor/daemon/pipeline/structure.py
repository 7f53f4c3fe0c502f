"""The first phase of validation: the document's structure against the
models (field names, types, durations, names), with pydantic's errors
rewritten into messages that say what was expected, at the right line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from conveyor.daemon.pipeline.diagnostics import (
    Diagnostics,
    FieldPath,
    did_you_mean,
    one_of,
    render_path,
)
from conveyor.daemon.pipeline.model import (
    ConcurrencySpec,
    EnvironmentSpec,
    HealthSpec,
    PipelineSpec,
    ResourcesSpec,
    RetryPolicy,
    StageSpec,
    describe_value,
)

__all__ = ["fields_at", "validate_structure"]

_NAME_RULE: Final = (
    "must start with a letter or digit and contain only letters, digits, '.', '_' or '-' "
    "(at most 100 characters)"
)

_EXPECTED: Final = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}

_BOUNDS: Final = {
    "greater_than": ("greater than", "gt"),
    "greater_than_equal": ("at least", "ge"),
    "less_than": ("less than", "lt"),
    "less_than_equal": ("at most", "le"),
}


def validate_structure(data: dict[str, Any], report: Diagnostics) -> PipelineSpec | None:
    """The document as a :class:`PipelineSpec`, or None after reporting every
    structural problem."""
    try:
        return PipelineSpec.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            _pydantic_error(error, report)
        return None


def _pydantic_error(error: ErrorDetails, report: Diagnostics) -> None:
    loc: FieldPath = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if loc and loc[-1] == "[key]":
        _key_error(loc[:-1], kind, value, error["msg"], report)
        return
    if kind == "missing":
        parent = loc[:-1]
        line, column = report.locate(parent, at_key=True)
        report.add(line, column, render_path(parent), f"required field '{loc[-1]}' is missing")
        return
    if kind == "extra_forbidden":
        name = str(loc[-1])
        fields = fields_at(loc[:-1])
        message = f"unknown field '{name}'"
        stray = _stray_stage(loc, value, report)
        if stray:
            message += stray
        elif fields:
            message += f"; expected one of: {one_of(fields)}{did_you_mean(name, fields)}"
        report.report(loc, message, at_key=True)
        return
    report.report(
        loc, _message(kind, error["msg"], value, ctx, loc) + _colon_hint(kind, loc, report)
    )


def _stray_stage(loc: FieldPath, value: Any, report: Diagnostics) -> str:
    """For an unknown top-level key that holds what a stage holds: the
    question whether it is a stage indented less than the others ("" if not)."""
    stage_fields = fields_at(("stages", ""))
    if len(loc) != 1 or not isinstance(value, dict) or not set(value) & set(stage_fields):
        return ""
    column = ""
    stages = [path for path in report.positions if len(path) == 2 and path[0] == "stages"]
    if stages:
        key = report.positions[stages[0]].key
        if key is not None:
            column = f" (column {key.start_mark.column + 1})"
    return (
        f" at the top level; is it a stage indented less than the others under 'stages:'{column}?"
    )


def _key_error(path: FieldPath, kind: str, value: Any, msg: str, report: Diagnostics) -> None:
    what = "key"
    if len(path) == 2 and path[0] in ("stages", "environments"):
        what = "stage name" if path[0] == "stages" else "environment name"
    if kind == "string_pattern_mismatch":
        message = f"invalid {what} {value!r}: {_NAME_RULE}"
    else:
        message = f"invalid {what} {value!r}: {msg}"
    report.report(path, message, at_key=True)


def fields_at(parent: FieldPath) -> list[str]:
    """Field names (by alias) of the model found at ``parent``; empty where
    any key is accepted (stage names, ``env``, ``with``)."""
    model: type[BaseModel] | None = None
    if parent == ():
        model = PipelineSpec
    elif parent == ("concurrency",):
        model = ConcurrencySpec
    elif len(parent) == 2 and parent[0] == "stages":
        model = StageSpec
    elif len(parent) == 3 and parent[0] == "stages" and parent[2] == "retries":
        model = RetryPolicy
    elif parent == ("resources",) or (
        len(parent) == 3 and parent[0] == "stages" and parent[2] == "resources"
    ):
        model = ResourcesSpec
    elif len(parent) == 2 and parent[0] == "environments":
        model = EnvironmentSpec
    elif len(parent) == 3 and parent[0] == "environments" and parent[2] == "health":
        model = HealthSpec
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _colon_hint(kind: str, loc: FieldPath, report: Diagnostics) -> str:
    """For a string that YAML read as a mapping because of a ``: `` in it
    (``- echo a: b``): how to keep it a string."""
    where = report.positions.get(loc)
    node = where.value if where is not None else None
    if kind != "string_type" or not isinstance(node, yaml.MappingNode) or node.flow_style:
        return ""
    if len(node.value) != 1 or not all(isinstance(n, yaml.ScalarNode) for n in node.value[0]):
        return ""
    key, item = node.value[0]
    text = f"{key.value}: {item.value}".rstrip()
    return f" (YAML reads '{text}' as a key and a value because of the ': ': put it in quotes)"


def _message(kind: str, msg: str, value: Any, ctx: Mapping[str, Any], loc: FieldPath) -> str:
    """Rewrite a pydantic error message into something helpful."""
    if kind in ("value_error", "assertion_error"):
        return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
        if loc == ("stages",) and expected == "a mapping":
            expected = "a mapping of stage names to stages"
        return f"expected {expected}, got {describe_value(value)}"
    if kind == "too_short" and loc == ("stages",):
        return "at least one stage is required"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        if loc == ("name",):
            return f"invalid pipeline name {value!r}: {_NAME_RULE}"
        return f"{value!r} does not match the pattern {ctx.get('pattern')}"
    if kind in _BOUNDS:
        words, key = _BOUNDS[kind]
        return f"must be {words} {ctx.get(key)}, got {describe_value(value)}"
    return msg
