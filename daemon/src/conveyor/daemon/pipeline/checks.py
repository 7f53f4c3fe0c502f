"""Checks beyond the structure: size limits on the raw document, then the
pipeline's meaning (``needs``, cycles, installed executors and stage kinds,
and each stage kind's own check of its stage)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from conveyor.daemon.pipeline.diagnostics import (
    Diagnostics,
    FieldPath,
    did_you_mean,
    one_of,
    parse_relative_path,
)
from conveyor.daemon.pipeline.graph import order_stages
from conveyor.daemon.pipeline.model import CONTAINER_FIELDS, PipelineSpec, StageSpec

__all__ = [
    "Limits",
    "SecretsKnown",
    "StageValidator",
    "TargetCheck",
    "check_meaning",
    "check_size",
]

#: Validates a stage of one kind; yields ``(field path relative to the stage, message)``,
#: e.g. ``("with.image", "required parameter 'image' is missing")``.
StageValidator: TypeAlias = Callable[[StageSpec], Iterable[tuple[str, str]]]


class SecretsKnown(Protocol):
    """The secrets a pipeline may ask for (those the daemon holds)."""

    @property
    def names(self) -> Collection[str]: ...

    def holder(self, text: str) -> str | None:
        """The name of a secret whose value (in any form) is in ``text``, or None."""
        ...


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
    secrets: SecretsKnown | None = None,
    deploy_targets: Mapping[str, TargetCheck] | None = None,
    environments: Collection[str] = (),
    container_executors: Mapping[str, Collection[str]] | None = None,
) -> None:
    """Report what makes a well-formed pipeline unusable. Suggestions
    ("did you mean") cost a scan of the names: they are made only while
    fewer than ``budget`` problems were found. With ``secrets``, secrets
    asked for must exist, and no value in the file may hold one's value.
    ``environments`` names the environments defined elsewhere (the daemon's
    configuration), which ``promote_from`` may name too.
    ``container_executors`` maps the executors that run containers to the
    container fields they take (``image``, ``resources``, ...): a stage on
    one needs an image, and a stage may set only the fields its executor
    takes."""
    meaning = _Meaning(spec, report, budget)
    meaning.check(stage_kinds, executors)
    if container_executors is not None:
        meaning.check_containers(container_executors, executors)
    meaning.check_environments(deploy_targets, environments)
    if secrets is not None:
        meaning.check_secrets(secrets)


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

    def _list_path(self, path: FieldPath, index: int) -> FieldPath:
        item: FieldPath = (*path, index)
        if item in self.report.positions:
            return item
        return path  # `needs: name` written as a plain string

    def _needs_path(self, stage: str, index: int) -> FieldPath:
        return self._list_path(("stages", stage, "needs"), index)

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

    def check_containers(
        self, executors: Mapping[str, Collection[str]], known: Collection[str] | None
    ) -> None:
        """Stages on a container executor have an image (their own or the
        pipeline's); a stage sets only the container fields its executor
        takes (a stage on ``local`` none). Stages on an executor that is not
        in ``known`` (reported already) are left out."""
        spec = self.spec
        for name, stage in spec.stages.items():
            executor = spec.stage_executor(name)
            if known is not None and executor not in known:
                continue
            takes = executors.get(executor)
            path: FieldPath = ("stages", name)
            if (
                takes is not None
                and "image" in takes
                and spec.container_settings(name).image is None
            ):
                self.report.report(
                    path,
                    f"stage '{name}' runs on the {executor} executor, which needs an image:"
                    " add image: (to the stage, or to the pipeline for all its stages)",
                    at_key=True,
                )
            for field in CONTAINER_FIELDS:
                if field not in stage.model_fields_set or (takes is not None and field in takes):
                    continue
                if takes is None or not takes:
                    containers = one_of(sorted(executors)) if executors else "none installed"
                    message = (
                        f"'{field}' is for stages that run in a container, and stage"
                        f" '{name}' runs on the {executor} executor; set executor: to a"
                        f" container executor ({containers})"
                    )
                else:
                    message = f"the {executor} executor does not take '{field}'"
                self.report.report((*path, field), message, at_key=True)

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
                at_key = not relative or message.startswith(("unknown option", "unknown key"))
                self.report.report((*path, *relative), message, at_key=at_key)

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

    # -- secrets ----------------------------------------------------------------------

    def check_secrets(self, secrets: SecretsKnown) -> None:
        """Secrets asked for exist (once each) and do not clash with ``env``;
        no value written in the file holds a secret's value (it would be
        stored with the run)."""
        known = sorted(secrets.names)
        spec = self.spec
        self._check_secret_names(("secrets",), spec.secrets, known, "the pipeline")
        clashing: set[str] = set()
        for name, stage in spec.stages.items():
            if stage.secrets is not None:
                where = f"stage '{name}'"
                self._check_secret_names(("stages", name, "secrets"), stage.secrets, known, where)
            for key in spec.stage_secrets(name):
                if key in stage.env:
                    self._clash(("stages", name, "env", key), f"a secret stage '{name}' gets")
                elif key in spec.env:
                    clashing.add(key)
        for key in sorted(clashing):
            self._clash(("env", key), "a secret that stages get")
        self._check_inline_values(secrets)

    def _clash(self, path: FieldPath, what: str) -> None:
        self.report.report(
            path,
            f"'{path[-1]}' is also the name of {what}; the secret would replace it:"
            " rename the variable",
            at_key=True,
        )

    def _check_secret_names(
        self, path: FieldPath, names: list[str], known: list[str], who: str
    ) -> None:
        seen: set[str] = set()
        for index, secret in enumerate(names):
            where = self._list_path(path, index)
            if secret in seen:
                self.report.report(where, f"duplicate secret '{secret}'")
            elif secret not in known:
                self.report.report(
                    where,
                    f"{who} asks for secret '{secret}', which the daemon does not hold"
                    f" (conveyord secrets list); defined secrets: {one_of(known)}"
                    f"{self._suggest(secret, known)}",
                )
            seen.add(secret)

    def _check_inline_values(self, secrets: SecretsKnown) -> None:
        spec = self.spec
        for key, value in spec.env.items():
            self._inline(("env", key), value, secrets, env=True)
        for name, stage in spec.stages.items():
            base: FieldPath = ("stages", name)
            for key, value in stage.env.items():
                self._inline((*base, "env", key), value, secrets, env=True)
            for index, command in enumerate(stage.run):
                self._inline(self._list_path((*base, "run"), index), command, secrets)
            for path, text in _strings(stage.with_, (*base, "with")):
                self._inline(path, text, secrets)

    def _inline(
        self, path: FieldPath, text: str, secrets: SecretsKnown, *, env: bool = False
    ) -> None:
        holder = secrets.holder(text)
        if holder is None:
            return
        use = (
            f"use secrets: [{holder}] instead"
            if env
            else f"ask for it with secrets: [{holder}] and use ${holder} instead"
        )
        self.report.report(path, f"holds the value of secret {holder}; {use}")


def _strings(value: Any, path: FieldPath) -> Iterable[tuple[FieldPath, str]]:
    """The strings in a ``with:`` value, each with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))
