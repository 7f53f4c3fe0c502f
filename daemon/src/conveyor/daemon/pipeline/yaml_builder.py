"""YAML text to plain Python data, remembering where every value came from.

Only the YAML a pipeline file needs is accepted: plain mappings, lists and
scalars, anchors, aliases and ``<<`` merges. Duplicate keys, recursive
aliases and custom tags are reported; alias expansion is bounded, so a
"billion laughs" document costs no more than a large one.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import yaml
from yaml.constructor import SafeConstructor
from yaml.reader import ReaderError

from conveyor.daemon.pipeline.diagnostics import Diagnostics, FieldPath, Loc, render_path
from conveyor.daemon.pipeline.model import describe_value
from conveyor.daemon.pipeline.yaml_errors import explain_yaml_error

__all__ = ["MAX_FILE_SIZE", "parse_yaml"]

log = logging.getLogger(__name__)

#: Largest accepted pipeline file, in bytes (UTF-8).
MAX_FILE_SIZE: Final = 1024 * 1024
#: Upper bound on nodes visited while expanding aliases ("billion laughs").
_MAX_NODES: Final = 200_000

_TAG_PREFIX: Final = "tag:yaml.org,2002:"
_MERGE_TAG: Final = _TAG_PREFIX + "merge"
_RAW_ENV_TAGS: Final = frozenset(_TAG_PREFIX + t for t in ("int", "float", "bool"))


class _TooComplex(Exception):
    pass


class _Builder:
    """Builds plain Python data from a YAML node tree, recording node
    positions in ``report.positions``."""

    def __init__(self, report: Diagnostics) -> None:
        self._report = report
        self._ctor = SafeConstructor()
        self._active: set[int] = set()
        self._visited = 0

    def build(self, node: yaml.Node, path: FieldPath, key: yaml.Node | None = None) -> Any:
        self._tick(1)
        self._report.positions.setdefault(path, Loc(key, node))
        if id(node) in self._active:
            self._report.at_node(node, render_path(path), "recursive YAML alias is not supported")
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

    def _unsupported_tag(self, node: yaml.Node, path: FieldPath) -> None:
        self._report.at_node(node, render_path(path), f"unsupported YAML tag '{node.tag}'")

    def _scalar(self, node: yaml.ScalarNode, path: FieldPath) -> Any:
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
            self._report.at_node(node, render_path(path), f"invalid {kind} {node.value!r}")
            return node.value
        if tag not in (_TAG_PREFIX + "str", _TAG_PREFIX + "timestamp"):
            self._unsupported_tag(node, path)
        # Timestamps stay strings: the file format has no date fields.
        return node.value

    def _mapping(self, node: yaml.MappingNode, path: FieldPath) -> dict[str, Any]:
        if node.tag != _TAG_PREFIX + "map":
            self._unsupported_tag(node, path)
        result: dict[str, Any] = {}
        for name, key_node, value_node in self._pairs(node, path):
            result[name] = self.build(value_node, (*path, name), key_node)
        return result

    def _pairs(
        self, node: yaml.MappingNode, path: FieldPath
    ) -> list[tuple[str, yaml.Node, yaml.Node]]:
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
                self._report.at_node(
                    key_node, render_path(path), "mapping keys must be plain scalars"
                )
                continue
            # Keys are names: keep their source text (so `on:` or `1.10:` stay strings).
            name = str(key_node.value)
            if name in explicit:
                first = explicit[name][0].start_mark.line + 1
                self._report.at_node(
                    key_node,
                    render_path((*path, name)),
                    f"duplicate key '{name}' (first defined on line {first})",
                )
                continue
            explicit[name] = (key_node, value_node)
        pairs = {**merged, **explicit}
        return [(name, k, v) for name, (k, v) in pairs.items()]

    def _merge_sources(self, node: yaml.Node, path: FieldPath) -> list[yaml.MappingNode]:
        if isinstance(node, yaml.MappingNode):
            return [node]
        if isinstance(node, yaml.SequenceNode) and all(
            isinstance(item, yaml.MappingNode) for item in node.value
        ):
            return list(node.value)
        self._report.at_node(
            node, render_path(path), "'<<' merge expects a mapping or list of mappings"
        )
        return []


def parse_yaml(text: str, report: Diagnostics) -> dict[str, Any] | None:
    """The document as plain data, or None after reporting why it cannot be
    one (too large, not YAML, not a mapping). Problems inside an otherwise
    usable document (duplicate keys, tags) are reported and the data returned.
    """
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_FILE_SIZE:
        report.add(0, 0, "", f"file is too large ({size} bytes); the limit is 1 MiB")
        return None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        _yaml_error(text, exc, report)
        return None
    except ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        char = exc.character
        code = ord(char) if isinstance(char, str) else char
        what = f"#x{code:04x}" if isinstance(code, int) else repr(char)
        report.add(line, column, "", f"invalid YAML: unacceptable character {what}: {exc.reason}")
        return None
    except yaml.YAMLError as exc:
        report.add(0, 0, "", f"invalid YAML: {exc}")
        return None
    except RecursionError:
        report.add(0, 0, "", "invalid YAML: the document is nested too deeply")
        return None
    if root is None or (isinstance(root, yaml.ScalarNode) and not root.value and not root.style):
        report.add(1, 1, "", "file is empty; expected a mapping with 'name' and 'stages'")
        return None
    try:
        data = _Builder(report).build(root, ())
    except _TooComplex:
        report.add(0, 0, "", "document is too complex (too many nodes after alias expansion)")
        return None
    except RecursionError:
        report.add(0, 0, "", "document is nested too deeply")
        return None
    if not isinstance(data, dict):
        report.at_node(
            root,
            "",
            f"expected a mapping with 'name' and 'stages' at the top level, "
            f"got {describe_value(data)}",
        )
        return None
    _raw_env_values(data, report)
    return data


def _raw_env_values(data: dict[str, Any], report: Diagnostics) -> None:
    """Use the source text of plain scalar env values (``1.10`` stays ``"1.10"``)."""
    env_paths: list[FieldPath] = [("env",)]
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
            loc = report.positions.get((*env_path, key))
            if (
                loc is not None
                and isinstance(loc.value, yaml.ScalarNode)
                and loc.value.tag in _RAW_ENV_TAGS
            ):
                env[key] = loc.value.value


def _yaml_error(text: str, exc: yaml.MarkedYAMLError, report: Diagnostics) -> None:
    """Report a syntax error in the user's terms where it can be explained,
    else in PyYAML's."""
    try:
        explained = explain_yaml_error(text, exc)
    except Exception:  # a flaw in the explanation must not hide the error itself
        log.warning("could not explain a YAML error", exc_info=True)
        explained = None
    if explained is not None:
        report.add(explained.line, explained.column, "", f"invalid YAML: {explained.message}")
        return
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "malformed document"
    message = f"invalid YAML: {problem}"
    if exc.context and exc.problem:
        if exc.problem.startswith("but "):
            message = f"invalid YAML: {exc.context}, {exc.problem}"
        elif exc.context_mark is not None:
            message += f" ({exc.context} started on line {exc.context_mark.line + 1})"
    if mark is None:
        report.add(0, 0, "", message)
    else:
        report.add(mark.line + 1, mark.column + 1, "", message)
