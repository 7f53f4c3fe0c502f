"""Stage kinds' ``with:`` parameters as pydantic models, and their errors
as ``(field, message)`` pairs for pipeline diagnostics."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from conveyor.daemon.pipeline.model import describe_value


class Parameters(BaseModel):
    """Base class for a stage kind's ``with:`` parameters.

    Unknown parameters are refused, values are taken as written (neither
    ``"1"`` nor ``1.0`` is an integer, ``1`` is not ``true``) and the parsed
    parameters are frozen. Subclass it, validate ``spec.with_`` with
    ``model_validate`` and turn a ``ValidationError`` into diagnostics with
    :func:`parameter_problems`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def parameter_problems(
    error: ValidationError, model: type[BaseModel], kind: str
) -> list[tuple[str, str]]:
    """The problems in ``error`` (from validating a stage's ``with:`` mapping
    with ``model``) as ``(field, message)`` pairs, as ``StageKind.validate``
    yields them: ``("with.fail_on[0]", "unknown value 'fatal'; expected
    'note', 'warning' or 'error'")``, ``("with.colour", "unknown parameter
    'colour'; the lint kind accepts: tools, paths, fail_on, shell; did you
    mean ...?")``.

    ``kind`` is the stage kind's name, for the messages.
    """
    return [
        (_field(detail["loc"]), _message(detail, model, kind))
        for detail in error.errors(include_url=False)
    ]


def _field(loc: Sequence[int | str]) -> str:
    out = "with"
    for item in loc:
        out += f"[{item}]" if isinstance(item, int) else f".{item}"
    return out


def _accepted(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _did_you_mean(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _range(model: type[BaseModel], loc: Sequence[int | str]) -> str:
    """`` from 0 to 3`` for a top-level field with both bounds, else ``""``."""
    if len(loc) != 1 or not isinstance(loc[0], str) or loc[0] not in model.model_fields:
        return ""
    low: Any = None
    high: Any = None
    for item in model.model_fields[loc[0]].metadata:  # annotated_types.Ge, Le...
        low = getattr(item, "ge", low)
        high = getattr(item, "le", high)
    if low is None or high is None:
        return ""
    return f" from {low} to {high}"


def _message(detail: ErrorDetails, model: type[BaseModel], kind: str) -> str:
    loc = detail["loc"]
    kind_of_error = detail["type"]
    value = detail.get("input")
    ctx: dict[str, Any] = dict(detail.get("ctx") or {})
    got = describe_value(value)
    top = len(loc) == 1
    if kind_of_error == "extra_forbidden":
        name = str(loc[-1])
        if not top:
            return f"unknown key {name!r}"
        accepted = _accepted(model)
        if not accepted:
            return f"unknown parameter {name!r}; the {kind} kind takes no parameters"
        return (
            f"unknown parameter {name!r}; the {kind} kind accepts: {', '.join(accepted)}"
            f"{_did_you_mean(name, accepted)}"
        )
    if kind_of_error == "missing":
        return f"required {'parameter' if top else 'key'} {str(loc[-1])!r} is missing"
    if kind_of_error == "literal_error":
        expected = ctx.get("expected", "")
        if loc and isinstance(loc[-1], int):
            return f"unknown value {value!r}; expected {expected}"
        return f"expected {expected}, got {got}"
    if kind_of_error in (
        "int_type",
        "int_parsing",
        "int_from_float",
        "greater_than_equal",
        "less_than_equal",
        "greater_than",
        "less_than",
    ):
        bounds = _range(model, loc)
        if bounds or kind_of_error.startswith("int"):
            return f"expected an integer{bounds}, got {got}"
    if kind_of_error in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {got}"
    if kind_of_error == "string_type":
        return f"expected a string, got {got}"
    if kind_of_error in ("list_type", "tuple_type"):
        return f"expected a list, got {got}"
    if kind_of_error in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {got}"
    if kind_of_error in ("too_short", "too_long", "string_too_short", "string_too_long"):
        unit = "character" if kind_of_error.startswith("string") else "item"
        if kind_of_error.endswith("too_short"):
            if ctx.get("min_length") == 1:
                return "must not be empty"
            bound = f"at least {ctx.get('min_length')}"
        else:
            bound = f"at most {ctx.get('max_length')}"
        length = len(value) if isinstance(value, str | list | tuple | dict) else "?"
        return f"expected {bound} {unit}s, got {length}"
    if kind_of_error in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    text = detail["msg"].removeprefix("Input ")
    return f"{text[:1].lower()}{text[1:]}, got {got}"
