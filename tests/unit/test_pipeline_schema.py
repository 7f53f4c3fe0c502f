"""Tests for the generated JSON Schema of conveyor.yaml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.daemon.pipeline.schema import main, pipeline_json_schema, render_schema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "conveyor.schema.json"


def test_checked_in_schema_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == render_schema(), (
        "docs/conveyor.schema.json is stale; regenerate it with: "
        "uv run python -m conveyor.daemon.pipeline.schema > docs/conveyor.schema.json"
    )


def test_main_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    main()
    out = capsys.readouterr().out
    assert out == render_schema()
    assert out.endswith("}\n")
    assert json.loads(out) == pipeline_json_schema()


def test_schema_header() -> None:
    schema = pipeline_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "https://conveyor.dev/schemas/conveyor.schema.json"
    assert schema["title"]
    assert schema["description"]
    assert schema["required"] == ["name", "stages"]
    assert schema["additionalProperties"] is False


def _types(schema: dict[str, Any]) -> set[str]:
    return {option["type"] for option in schema["anyOf"]}


def test_schema_field_shapes() -> None:
    schema = pipeline_json_schema()
    stage = schema["$defs"]["StageSpec"]["properties"]
    assert "with" in stage
    assert "with_" not in stage
    assert _types(stage["run"]) == {"string", "array"}
    assert _types(stage["needs"]) == {"string", "array"}
    timeout = stage["timeout"]["anyOf"][0]
    assert _types(timeout) == {"string", "number"}
    backoff = schema["$defs"]["RetryPolicy"]["properties"]["backoff"]
    assert _types(backoff) == {"string", "number"}
    retries = stage["retries"]["anyOf"]
    assert retries[0]["type"] == "integer"
    assert retries[1] == {"$ref": "#/$defs/RetryPolicy"}
    stages = schema["properties"]["stages"]
    assert stages["minProperties"] == 1
    assert stages["propertyNames"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
    assert stages["additionalProperties"] == {"$ref": "#/$defs/StageSpec"}
