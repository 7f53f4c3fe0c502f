"""JSON Schema for ``conveyor.yaml``.

Regenerate the checked-in copy with::

    uv run python -m conveyor.daemon.pipeline.schema > docs/conveyor.schema.json
"""

from __future__ import annotations

import json
import sys
from typing import Any, Final

from conveyor.daemon.pipeline.model import PipelineSpec

__all__ = ["SCHEMA_ID", "main", "pipeline_json_schema", "render_schema"]

SCHEMA_ID: Final = "https://conveyor.dev/schemas/conveyor.schema.json"
_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


def pipeline_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) describing a ``conveyor.yaml`` file."""
    schema = PipelineSpec.model_json_schema(by_alias=True)
    return {
        "$schema": _DIALECT,
        "$id": SCHEMA_ID,
        **schema,
        "title": "Conveyor pipeline",
        "description": "A Conveyor pipeline file (conveyor.yaml): stages and how to run them.",
    }


def render_schema() -> str:
    """The schema as indented JSON with sorted keys and a trailing newline."""
    return json.dumps(pipeline_json_schema(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    """Print the schema to stdout."""
    sys.stdout.write(render_schema())


if __name__ == "__main__":
    main()
