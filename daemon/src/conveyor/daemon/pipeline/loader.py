"""Load and validate ``conveyor.yaml`` files with file/line/column diagnostics."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.constructor import SafeConstructor
from yaml.reader import ReaderError

from conveyor.daemon.pipeline.model import (
    ConcurrencySpec,
    PipelineSpec,
    RetryPolicy,
    StageSpec,
    describe_value,
)

__all__ = [
    "MAX_FILE_SIZE",
    "Diagnostic",
    "PipelineError",
    "StageValidator",
    "check_pipeline",
    "load_pipeline",
]

#: Largest accepted pipeline file, in bytes (UTF-8).
MAX_FILE_SIZE: Final = 1024 * 1024
#: Upper bound on nodes visited while expanding aliases ("billion laughs").
_MAX_NODES: Final = 200_000

_TAG_PREFIX: Final = "tag:yaml.org,2002:"
_MERGE_TAG: Final = _TAG_PREFIX + "merge"
_RAW_ENV_TAGS: Final = frozenset(_TAG_PREFIX + t for t in ("int", "float", "bool"))
_NAME_RULE: Final = (
    "must start with a letter or digit and contain only letters, digits, '.', '_' or '-' "
    "(at most 100 characters)"
)

PathItem: TypeAlias = str | int
Path: TypeAlias = tuple[PathItem, ...]

#: Validates a stage of one kind; yields ``(field path relative to the stage, message)``,
#: e.g. ``("with.image", "required parameter 'image' is missing")``.
StageValidator: TypeAlias = Callable[[StageSpec], Iterable[tuple[str, str]]]


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a pipeline file."""

    file: str
    line: int  # 1-based; 0 if unknown
    column: int  # 1-based; 0 if unknown
    path: str  # e.g. "stages.build.needs[0]"; "" for the whole document
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line > 0:
            where += f":{self.line}"
            if self.column > 0:
                where += f":{self.column}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class PipelineError(Exception):
    """A pipeline file is invalid; ``diagnostics`` lists every problem found."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    def __str__(self) -> str:
        return "\n".join(str(d) for d in self.diagnostics)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.diagnostics,))


# --------------------------------------------------------------------------- helpers


def render_path(path: Sequence[PathItem]) -> str:
    """Render ``("stages", "build", "needs", 0)`` as ``"stages.build.needs[0]"``."""
    out = ""
    for item in path:
        if isinstance(item, int):
            out += f"[{item}]"
        else:
            out += f".{item}" if out else item
    return out


def _parse_relative_path(text: str) -> Path:
    """Parse ``"with.image"`` / ``"run[1]"`` into path items."""
    items: list[PathItem] = []
    for part in text.split("."):
        match = re.fullmatch(r"([^\[\]]*)((?:\[\d+\])*)", part)
        if match is None:
            items.append(part)
            continue
        if match.group(1):
            items.append(match.group(1))
        items.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))
    return tuple(items)


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _one_of(candidates: Iterable[str]) -> str:
    names = list(candidates)
    return ", ".join(names) if names else "(none)"


@dataclass(frozen=True)
class _Loc:
    key: yaml.Node | None
    value: yaml.Node


class _TooComplex(Exception):
    pass


class _Builder:
    """Builds plain Python data from a YAML node tree, remembering node positions."""

    def __init__(self, report: Callable[[yaml.Node, str, str], None]) -> None:
        self.positions: dict[Path, _Loc] = {}
        self._report = report
        self._ctor = SafeConstructor()
        self._active: set[int] = set()
        self._visited = 0

    def build(self, node: yaml.Node, path: Path, key: yaml.Node | None = None) -> Any:
        self._tick(1)
        self.positions.setdefault(path, _Loc(key, node))
        if id(node) in self._active:
            self._report(node, render_path(path), "recursive YAML alias is not supported")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                if node.tag != _TAG_PREFIX + "seq":
                    self._unsupported_tag(node, path)
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            assert isinstance(node, yaml.ScalarNode)
            return self._scalar(node, path)
        finally:
            self._active.discard(id(node))

    def _tick(self, count: int) -> None:
        self._visited += count
        if self._visited > _MAX_NODES:
            raise _TooComplex

    def _unsupported_tag(self, node: yaml.Node, path: Path) -> None:
        self._report(node, render_path(path), f"unsupported YAML tag '{node.tag}'")

    def _scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        tag = node.tag
        ctor = self._ctor
        try:
            if tag == _TAG_PREFIX + "null":
                return ctor.construct_yaml_null(node)
            if tag == _TAG_PREFIX + "bool":
                return ctor.construct_yaml_bool(node)
            if tag == _TAG_PREFIX + "int":
                return ctor.construct_yaml_int(node)
            if tag == _TAG_PREFIX + "float":
                return ctor.construct_yaml_float(node)
        except (ValueError, TypeError, yaml.YAMLError):
            kind = tag.rsplit(":", 1)[-1]
            self._report(node, render_path(path), f"invalid {kind} {node.value!r}")
            return node.value
        if tag not in (_TAG_PREFIX + "str", _TAG_PREFIX + "timestamp"):
            self._unsupported_tag(node, path)
        # Timestamps stay strings: the file format has no date fields.
        return node.value

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        if node.tag != _TAG_PREFIX + "map":
            self._unsupported_tag(node, path)
        result: dict[str, Any] = {}
        for name, key_node, value_node in self._pairs(node, path):
            result[name] = self.build(value_node, (*path, name), key_node)
        return result

    def _pairs(self, node: yaml.MappingNode, path: Path) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """Key/value pairs of a mapping, with ``<<`` merges applied and duplicates reported."""
        explicit: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        merged: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        self._tick(len(node.value))
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for source in self._merge_sources(value_node, path):
                    for name, k, v in self._pairs(source, path):
                        merged.setdefault(name, (k, v))  # earlier sources win
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._report(key_node, render_path(path), "mapping keys must be plain scalars")
                continue
            # Keys are names: keep their source text (so `on:` or `1.10:` stay strings).
            name = str(key_node.value)
            if name in explicit:
                first = explicit[name][0].start_mark.line + 1
                self._report(
                    key_node,
                    render_path((*path, name)),
                    f"duplicate key '{name}' (first defined on line {first})",
                )
                continue
            explicit[name] = (key_node, value_node)
        pairs = {**merged, **explicit}
        return [(name, k, v) for name, (k, v) in pairs.items()]

    def _merge_sources(self, node: yaml.Node, path: Path) -> list[yaml.MappingNode]:
        if isinstance(node, yaml.MappingNode):
            return [node]
        if isinstance(node, yaml.SequenceNode) and all(
            isinstance(item, yaml.MappingNode) for item in node.value
        ):
            return list(node.value)
        self._report(node, render_path(path), "'<<' merge expects a mapping or list of mappings")
        return []


# --------------------------------------------------------------------------- checker


class _Checker:
    def __init__(self, file: str) -> None:
        self.file = file
        self.diagnostics: list[Diagnostic] = []
        self.builder = _Builder(self._report_node)

    # -- reporting

    def add(self, line: int, column: int, path: str, message: str) -> None:
        self.diagnostics.append(Diagnostic(self.file, line, column, path, message))

    def _report_node(self, node: yaml.Node, path: str, message: str) -> None:
        mark = node.start_mark
        self.add(mark.line + 1, mark.column + 1, path, message)

    def locate(self, path: Path, *, at_key: bool = False) -> tuple[int, int]:
        """Line/column for ``path``; falls back to the closest existing parent."""
        positions = self.builder.positions
        for end in range(len(path), -1, -1):
            loc = positions.get(path[:end])
            if loc is None:
                continue
            # For a missing child, point at the parent's key, or at the scalar it came from.
            use_key = at_key if end == len(path) else not isinstance(loc.value, yaml.ScalarNode)
            node = loc.key if use_key and loc.key is not None else loc.value
            return node.start_mark.line + 1, node.start_mark.column + 1
        return 0, 0

    def report(self, path: Path, message: str, *, at_key: bool = False) -> None:
        line, column = self.locate(path, at_key=at_key)
        self.add(line, column, render_path(path), message)

    # -- phases

    def parse(self, text: str) -> Any:
        size = len(text.encode("utf-8", errors="surrogatepass"))
        if size > MAX_FILE_SIZE:
            self.add(0, 0, "", f"file is too large ({size} bytes); the limit is 1 MiB")
            return None
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            self._yaml_error(exc)
            return None
        except ReaderError as exc:
            line = text.count("\n", 0, exc.position) + 1
            column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
            char = exc.character
            code = ord(char) if isinstance(char, str) else char
            what = f"#x{code:04x}" if isinstance(code, int) else repr(char)
            self.add(line, column, "", f"invalid YAML: unacceptable character {what}: {exc.reason}")
            return None
        except yaml.YAMLError as exc:
            self.add(0, 0, "", f"invalid YAML: {exc}")
            return None
        except RecursionError:
            self.add(0, 0, "", "invalid YAML: the document is nested too deeply")
            return None
        if root is None or (
            isinstance(root, yaml.ScalarNode) and not root.value and not root.style
        ):
            self.add(1, 1, "", "file is empty; expected a mapping with 'name' and 'stages'")
            return None
        try:
            data = self.builder.build(root, ())
        except _TooComplex:
            self.add(0, 0, "", "document is too complex (too many nodes after alias expansion)")
            return None
        except RecursionError:
            self.add(0, 0, "", "document is nested too deeply")
            return None
        if not isinstance(data, dict):
            self._report_node(
                root,
                "",
                f"expected a mapping with 'name' and 'stages' at the top level, "
                f"got {describe_value(data)}",
            )
            return None
        self._raw_env_values(data)
        return data

    def _raw_env_values(self, data: dict[str, Any]) -> None:
        """Use the source text of plain scalar env values (``1.10`` stays ``"1.10"``)."""
        env_paths: list[Path] = [("env",)]
        stages = data.get("stages")
        if isinstance(stages, dict):
            env_paths += [("stages", name, "env") for name in stages]
        for env_path in env_paths:
            env: Any = data
            for item in env_path:
                env = env.get(item) if isinstance(env, dict) else None
            if not isinstance(env, dict):
                continue
            for key in env:
                loc = self.builder.positions.get((*env_path, key))
                if (
                    loc is not None
                    and isinstance(loc.value, yaml.ScalarNode)
                    and loc.value.tag in _RAW_ENV_TAGS
                ):
                    env[key] = loc.value.value

    def _yaml_error(self, exc: yaml.MarkedYAMLError) -> None:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "malformed document"
        message = f"invalid YAML: {problem}"
        if exc.context and exc.problem:
            if exc.problem.startswith("but "):
                message = f"invalid YAML: {exc.context}, {exc.problem}"
            elif exc.context_mark is not None:
                message += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        if mark is None:
            self.add(0, 0, "", message)
        else:
            self.add(mark.line + 1, mark.column + 1, "", message)

    def validate(self, data: dict[str, Any]) -> PipelineSpec | None:
        try:
            return PipelineSpec.model_validate(data, by_alias=True, by_name=False)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                self._pydantic_error(error)
            return None

    def _pydantic_error(self, error: ErrorDetails) -> None:
        loc: Path = tuple(error["loc"])
        kind = error["type"]
        value = error.get("input")
        ctx = error.get("ctx") or {}
        if loc and loc[-1] == "[key]":
            self._key_error(loc[:-1], kind, value, error["msg"])
            return
        if kind == "missing":
            parent = loc[:-1]
            line, column = self.locate(parent, at_key=True)
            self.add(line, column, render_path(parent), f"required field '{loc[-1]}' is missing")
            return
        if kind == "extra_forbidden":
            name = str(loc[-1])
            fields = _model_fields(loc[:-1])
            message = f"unknown field '{name}'"
            if fields:
                message += f"; expected one of: {_one_of(fields)}{_did_you_mean(name, fields)}"
            self.report(loc, message, at_key=True)
            return
        self.report(loc, _message(kind, error["msg"], value, ctx, loc))

    def _key_error(self, path: Path, kind: str, value: Any, msg: str) -> None:
        what = "stage name" if len(path) == 2 and path[0] == "stages" else "key"
        if kind == "string_pattern_mismatch":
            message = f"invalid {what} {value!r}: {_NAME_RULE}"
        else:
            message = f"invalid {what} {value!r}: {msg}"
        self.report(path, message, at_key=True)

    def semantic(
        self,
        spec: PipelineSpec,
        stage_kinds: Mapping[str, StageValidator] | None,
        executors: Collection[str] | None,
    ) -> None:
        self._check_needs(spec)
        self._check_cycles(spec)
        if executors is not None:
            self._check_executors(spec, executors)
        if stage_kinds is not None:
            self._check_kinds(spec, stage_kinds)

    def _needs_path(self, stage: str, index: int) -> Path:
        path: Path = ("stages", stage, "needs", index)
        if path in self.builder.positions:
            return path
        return path[:-1]  # `needs: name` written as a plain string

    def _check_needs(self, spec: PipelineSpec) -> None:
        for name, stage in spec.stages.items():
            seen: set[str] = set()
            others = [n for n in spec.stages if n != name]
            for index, need in enumerate(stage.needs):
                path = self._needs_path(name, index)
                if need == name:
                    self.report(path, f"stage '{name}' cannot need itself")
                elif need in seen:
                    self.report(path, f"duplicate entry '{need}' in needs")
                elif need not in spec.stages:
                    self.report(
                        path,
                        f"unknown stage '{need}'; expected one of: "
                        f"{_one_of(others)}{_did_you_mean(need, others)}",
                    )
                seen.add(need)

    def _check_cycles(self, spec: PipelineSpec) -> None:
        order = {name: i for i, name in enumerate(spec.stages)}
        graph = {
            name: [n for n in dict.fromkeys(stage.needs) if n in spec.stages and n != name]
            for name, stage in spec.stages.items()
        }
        for component in _strongly_connected(graph, list(spec.stages)):
            if len(component) < 2:
                continue
            members = set(component)
            start = min(component, key=order.__getitem__)
            cycle = _find_cycle(graph, start, members)
            first_hop = cycle[1]
            index = spec.stages[start].needs.index(first_hop)
            self.report(
                self._needs_path(start, index),
                f"dependency cycle: {' -> '.join(cycle)}",
            )

    def _check_executors(self, spec: PipelineSpec, executors: Collection[str]) -> None:
        available = sorted(executors)

        def message(name: str) -> str:
            return (
                f"unknown executor '{name}'; available executors: "
                f"{_one_of(available)}{_did_you_mean(name, available)}"
            )

        uses_default = any(stage.executor is None for stage in spec.stages.values())
        if spec.executor not in executors and ("executor" in spec.model_fields_set or uses_default):
            self.report(("executor",), message(spec.executor))
        for name, stage in spec.stages.items():
            if stage.executor is not None and stage.executor not in executors:
                self.report(("stages", name, "executor"), message(stage.executor))

    def _check_kinds(self, spec: PipelineSpec, stage_kinds: Mapping[str, StageValidator]) -> None:
        kinds = sorted(stage_kinds)
        for name, stage in spec.stages.items():
            validator = stage_kinds.get(stage.uses)
            if validator is None:
                self.report(
                    ("stages", name, "uses"),
                    f"unknown stage kind '{stage.uses}'; installed kinds: "
                    f"{_one_of(kinds)}{_did_you_mean(stage.uses, kinds)}",
                )
                continue
            try:
                findings = list(validator(stage))
            except Exception as exc:
                self.report(
                    ("stages", name),
                    f"stage kind '{stage.uses}' failed to validate the stage: {exc!r}",
                    at_key=True,
                )
                continue
            for field, message in findings:
                relative = _parse_relative_path(field) if field else ()
                self.report(("stages", name, *relative), message, at_key=not relative)


def _model_fields(parent: Path) -> list[str]:
    """Field names (by alias) of the model found at ``parent``."""
    model: type[BaseModel] | None = None
    if parent == ():
        model = PipelineSpec
    elif parent == ("concurrency",):
        model = ConcurrencySpec
    elif len(parent) == 2 and parent[0] == "stages":
        model = StageSpec
    elif len(parent) == 3 and parent[0] == "stages" and parent[2] == "retries":
        model = RetryPolicy
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


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


def _message(kind: str, msg: str, value: Any, ctx: Mapping[str, Any], loc: Path) -> str:
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
    bounds = {
        "greater_than": ("greater than", "gt"),
        "greater_than_equal": ("at least", "ge"),
        "less_than": ("less than", "lt"),
        "less_than_equal": ("at most", "le"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"must be {words} {ctx.get(key)}, got {describe_value(value)}"
    return msg


def _strongly_connected(graph: Mapping[str, list[str]], nodes: list[str]) -> list[list[str]]:
    """Tarjan's algorithm (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            recurse = False
            edges = graph[node]
            while i < len(edges):
                nxt = edges[i]
                i += 1
                if nxt not in index:
                    work.append((node, i))
                    work.append((nxt, 0))
                    recurse = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if recurse:
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                result.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return result


def _find_cycle(graph: Mapping[str, list[str]], start: str, members: set[str]) -> list[str]:
    """A cycle ``[start, ..., start]`` within ``members`` (BFS: shortest, needs order)."""
    previous: dict[str, str] = {}
    queue = [start]
    for node in queue:
        for nxt in graph[node]:
            if nxt not in members:
                continue
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    return [start, start]  # unreachable for a real strongly connected component


# --------------------------------------------------------------------------- public API


def check_pipeline(
    text: str,
    file: str = "conveyor.yaml",
    *,
    stage_kinds: Mapping[str, StageValidator] | None = None,
    executors: Collection[str] | None = None,
) -> tuple[PipelineSpec | None, list[Diagnostic]]:
    """Parse and validate a pipeline file.

    Returns ``(spec, diagnostics)``; ``spec`` is ``None`` whenever there is any
    diagnostic. Diagnostics are sorted by line. ``stage_kinds`` maps installed
    stage kinds to their validators and ``executors`` names the available
    executors; when omitted, those checks are skipped.
    """
    checker = _Checker(file)
    data = checker.parse(text)
    spec = checker.validate(data) if data is not None else None
    if spec is not None:
        checker.semantic(spec, stage_kinds, executors)
    diagnostics = sorted(dict.fromkeys(checker.diagnostics), key=lambda d: (d.line, d.column))
    return (spec if not diagnostics else None), diagnostics


def load_pipeline(
    text: str,
    file: str = "conveyor.yaml",
    *,
    stage_kinds: Mapping[str, StageValidator] | None = None,
    executors: Collection[str] | None = None,
) -> PipelineSpec:
    """Like :func:`check_pipeline` but raise :class:`PipelineError` on any diagnostic."""
    spec, diagnostics = check_pipeline(text, file, stage_kinds=stage_kinds, executors=executors)
    if diagnostics or spec is None:
        raise PipelineError(diagnostics)
    return spec
