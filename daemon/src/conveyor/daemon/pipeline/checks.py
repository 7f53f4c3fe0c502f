"""Checks beyond the structure: size limits on the raw document, then the
pipeline's meaning (``needs``, cycles, installed executors and stage kinds,
and each stage kind's own check of its stage)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from conveyor.daemon.pipeline.diagnostics import (
    Diagnostics,
    FieldPath,
    did_you_mean,
    one_of,
    parse_relative_path,
)
from conveyor.daemon.pipeline.graph import order_stages
from conveyor.daemon.pipeline.model import PipelineSpec, StageSpec

__all__ = ["Limits", "StageValidator", "TargetCheck", "check_meaning", "check_size"]

#: Validates a stage of one kind; yields ``(field path relative to the stage, message)``,
#: e.g. ``("with.image", "required parameter 'image' is missing")``.
StageValidator: TypeAlias = Callable[[StageSpec], Iterable[tuple[str, str]]]


@dataclass(frozen=True)
class TargetCheck:
    """What the pipeline check knows of an installed deploy target."""

    #: Checks an environment's ``with:`` options: ``(field relative to the
    #: environment, message)`` pairs.
    validate: Callable[[Mapping[str, Any]], Iterable[tuple[str, str]]]
    #: Whether environments on it need ``run:`` (the ``process`` target).
    requires_command: bool = False


@dataclass(frozen=True)
class Limits:
    """How large a pipeline may be; the daemon takes them from its settings
    of the same names."""

    #: Stages in one pipeline.
    max_stages: int = 1000
    #: Entries in one stage's ``needs``.
    max_needs: int = 100
    #: Diagnostics reported for one file; the rest are counted.
    max_diagnostics: int = 100


def check_size(data: dict[str, Any], limits: Limits, report: Diagnostics) -> None:
    """Raise :class:`PipelineTooLarge` when the document has more stages, or
    a stage more needs, than ``limits`` allow (checked before anything that
    grows with them)."""
    stages = data.get("stages")
    if not isinstance(stages, dict):
        return
    if len(stages) > limits.max_stages:
        raise report.too_large(
            ("stages",),
            f"the pipeline has {len(stages)} stages; the limit is {limits.max_stages}"
            " (setting max_stages)",
        )
    for name, stage in stages.items():
        needs = stage.get("needs") if isinstance(stage, dict) else None
        if isinstance(needs, list) and len(needs) > limits.max_needs:
            raise report.too_large(
                ("stages", name, "needs"),
                f"stage '{name}' needs {len(needs)} stages; the limit is {limits.max_needs}"
                " (setting max_needs)",
            )


def check_meaning(
    spec: PipelineSpec,
    report: Diagnostics,
    *,
    stage_kinds: Mapping[str, StageValidator] | None,
    executors: Collection[str] | None,
    budget: int,
    deploy_targets: Mapping[str, TargetCheck] | None = None,
    environments: Collection[str] = (),
) -> None:
    """Report what makes a well-formed pipeline unusable. Suggestions
    ("did you mean") cost a scan of the names: they are made only while
    fewer than ``budget`` problems were found. ``environments`` names the
    environments defined elsewhere (the daemon's configuration), which
    ``promote_from`` may name too."""
    meaning = _Meaning(spec, report, budget)
    meaning.check(stage_kinds, executors)
    meaning.check_environments(deploy_targets, environments)


class _Meaning:
    def __init__(self, spec: PipelineSpec, report: Diagnostics, budget: int) -> None:
        self.spec = spec
        self.report = report
        self.budget = budget

    def _suggest(self, word: str, candidates: Iterable[str]) -> str:
        return did_you_mean(word, candidates) if len(self.report) < self.budget else ""

    def check(
        self, stage_kinds: Mapping[str, StageValidator] | None, executors: Collection[str] | None
    ) -> None:
        self._check_needs()
        self._check_cycles()
        if executors is not None:
            self._check_executors(executors)
        if stage_kinds is not None:
            self._check_kinds(stage_kinds)

    def _needs_path(self, stage: str, index: int) -> FieldPath:
        path: FieldPath = ("stages", stage, "needs", index)
        if path in self.report.positions:
            return path
        return path[:-1]  # `needs: name` written as a plain string

    def _check_needs(self) -> None:
        stages = self.spec.stages
        names = list(stages)
        for name, stage in stages.items():
            seen: set[str] = set()
            for index, need in enumerate(stage.needs):
                path = self._needs_path(name, index)
                if need == name:
                    self.report.report(path, f"stage '{name}' cannot need itself")
                elif need in seen:
                    self.report.report(path, f"duplicate entry '{need}' in needs")
                elif need not in stages:
                    others = (n for n in names if n != name)
                    self.report.report(
                        path,
                        f"unknown stage '{need}'; expected one of: "
                        f"{one_of(names, leaving_out=name)}{self._suggest(need, others)}",
                    )
                seen.add(need)

    def _check_cycles(self) -> None:
        stages = self.spec.stages
        graph = {
            name: [n for n in dict.fromkeys(stage.needs) if n in stages and n != name]
            for name, stage in stages.items()
        }
        for cycle in order_stages(graph).cycles:
            start = cycle[0]
            index = stages[start].needs.index(cycle[1])
            self.report.report(
                self._needs_path(start, index),
                f"dependency cycle: {' -> '.join([*cycle, start])}",
            )

    def _check_executors(self, executors: Collection[str]) -> None:
        available = sorted(executors)

        def message(name: str) -> str:
            return (
                f"unknown executor '{name}'; available executors: "
                f"{one_of(available)}{self._suggest(name, available)}"
            )

        spec = self.spec
        uses_default = any(stage.executor is None for stage in spec.stages.values())
        if spec.executor not in executors and ("executor" in spec.model_fields_set or uses_default):
            self.report.report(("executor",), message(spec.executor))
        for name, stage in spec.stages.items():
            if stage.executor is not None and stage.executor not in executors:
                self.report.report(("stages", name, "executor"), message(stage.executor))

    def check_environments(
        self, targets: Mapping[str, TargetCheck] | None, elsewhere: Collection[str]
    ) -> None:
        """``promote_from`` names another environment, ports differ, the
        target is installed and accepts its options."""
        environments = self.spec.environments
        known = sorted({*environments, *elsewhere})
        ports: dict[int, str] = {}
        for name, env in environments.items():
            path: FieldPath = ("environments", name)
            if env.promote_from == name:
                self.report.report(
                    (*path, "promote_from"), "an environment cannot promote from itself"
                )
            elif env.promote_from is not None and env.promote_from not in known:
                self.report.report(
                    (*path, "promote_from"),
                    f"unknown environment '{env.promote_from}'; expected one of: "
                    f"{one_of(known, leaving_out=name)}{self._suggest(env.promote_from, known)}",
                )
            if env.port in ports:
                self.report.report(
                    (*path, "port"),
                    f"port {env.port} is already the port of environment '{ports[env.port]}'",
                )
            ports.setdefault(env.port, name)
            if targets is None:
                continue
            check = targets.get(env.target)
            if check is None:
                installed = sorted(targets)
                self.report.report(
                    (*path, "target"),
                    f"unknown deploy target '{env.target}'; installed targets: "
                    f"{one_of(installed)}{self._suggest(env.target, installed)}",
                )
                continue
            if check.requires_command and not env.run:
                self.report.report(
                    path,
                    f"the {env.target} target needs the service command in 'run'"
                    " (e.g. run: [python3, '{artifact}'])",
                    at_key=True,
                )
            try:
                findings = list(check.validate(env.with_))
            except Exception as exc:
                self.report.report(
                    path, f"deploy target '{env.target}' failed to validate: {exc!r}", at_key=True
                )
                continue
            for field, message in findings:
                relative = parse_relative_path(field) if field else ()
                self.report.report((*path, *relative), message, at_key=not relative)

    def _check_kinds(self, stage_kinds: Mapping[str, StageValidator]) -> None:
        kinds = sorted(stage_kinds)
        for name, stage in self.spec.stages.items():
            validator = stage_kinds.get(stage.uses)
            if validator is None:
                self.report.report(
                    ("stages", name, "uses"),
                    f"unknown stage kind '{stage.uses}'; installed kinds: "
                    f"{one_of(kinds)}{self._suggest(stage.uses, kinds)}",
                )
                continue
            try:
                findings = list(validator(stage))
            except Exception as exc:
                self.report.report(
                    ("stages", name),
                    f"stage kind '{stage.uses}' failed to validate the stage: {exc!r}",
                    at_key=True,
                )
                continue
            for field, message in findings:
                relative = parse_relative_path(field) if field else ()
                # an unknown name is pointed at where it is written, other problems at the value
                at_key = not relative or message.startswith(("unknown parameter", "unknown key"))
                self.report.report(("stages", name, *relative), message, at_key=at_key)
