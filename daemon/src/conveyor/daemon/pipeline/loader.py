"""Load and validate ``conveyor.yaml`` files with file/line/column diagnostics.

Validation runs in phases: YAML to plain data (:mod:`.yaml_builder`), size
limits (:mod:`.checks`), the structure against the models
(:mod:`.structure`), then, when that is clean, the pipeline's meaning
(:mod:`.checks`). Its cost grows linearly with the file; it is blocking
work, so the daemon runs it in a worker thread.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from conveyor.daemon.pipeline.checks import (
    Limits,
    SecretsKnown,
    StageValidator,
    TargetCheck,
    check_meaning,
    check_size,
)
from conveyor.daemon.pipeline.diagnostics import Diagnostic, Diagnostics, PipelineError
from conveyor.daemon.pipeline.model import PipelineSpec
from conveyor.daemon.pipeline.structure import validate_structure
from conveyor.daemon.pipeline.yaml_builder import parse_yaml

__all__ = ["check_pipeline", "load_pipeline"]

DEFAULT_LIMITS = Limits()


def check_pipeline(
    text: str,
    file: str = "conveyor.yaml",
    *,
    stage_kinds: Mapping[str, StageValidator] | None = None,
    executors: Collection[str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    secrets: SecretsKnown | None = None,
    deploy_targets: Mapping[str, TargetCheck] | None = None,
    environments: Collection[str] = (),
    container_executors: Mapping[str, Collection[str]] | None = None,
) -> tuple[PipelineSpec | None, list[Diagnostic]]:
    """Parse and validate a pipeline file.

    Returns ``(spec, diagnostics)``; ``spec`` is ``None`` whenever there is any
    diagnostic. Diagnostics are sorted by line, at most
    ``limits.max_diagnostics`` of them plus one that counts the rest.
    ``stage_kinds`` maps installed stage kinds to their validators and
    ``executors`` names the available executors, ``deploy_targets`` the
    installed deploy targets; when omitted, those checks are skipped.
    ``secrets`` are the secrets the pipeline may ask for; without it,
    ``secrets:`` is not checked. ``environments`` names environments defined
    outside the file (the daemon's configuration), which ``promote_from``
    may name. ``container_executors`` maps the executors that run containers
    to the container fields each takes (``image``, ``resources``,
    ``placement``, ``network``, ``user``); when omitted, those are not checked.

    Raises :class:`PipelineTooLarge` when the file has more stages, or a
    stage more needs, than ``limits`` allow.
    """
    report = Diagnostics(file)
    data = parse_yaml(text, report)
    spec = None
    if data is not None:
        check_size(data, limits, report)
        spec = validate_structure(data, report)
    if spec is not None:
        check_meaning(
            spec,
            report,
            stage_kinds=stage_kinds,
            executors=executors,
            budget=limits.max_diagnostics,
            secrets=secrets,
            deploy_targets=deploy_targets,
            environments=environments,
            container_executors=container_executors,
        )
    diagnostics = report.sorted(limits.max_diagnostics)
    return (spec if not diagnostics else None), diagnostics


def load_pipeline(
    text: str,
    file: str = "conveyor.yaml",
    *,
    stage_kinds: Mapping[str, StageValidator] | None = None,
    executors: Collection[str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    secrets: SecretsKnown | None = None,
    deploy_targets: Mapping[str, TargetCheck] | None = None,
    environments: Collection[str] = (),
    container_executors: Mapping[str, Collection[str]] | None = None,
) -> PipelineSpec:
    """Like :func:`check_pipeline` but raise :class:`PipelineError` on any diagnostic."""
    spec, diagnostics = check_pipeline(
        text,
        file,
        stage_kinds=stage_kinds,
        executors=executors,
        limits=limits,
        secrets=secrets,
        deploy_targets=deploy_targets,
        environments=environments,
        container_executors=container_executors,
    )
    if diagnostics or spec is None:
        raise PipelineError(diagnostics)
    return spec
