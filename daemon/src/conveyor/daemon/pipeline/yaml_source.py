"""A YAML file that failed to parse, read again to explain why: its lines
as PyYAML numbers them, PyYAML's tokens up to the error, and the outline of
the block keys and list items parsed before it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

import yaml

__all__ = [
    "ITEM_LINE",
    "Entry",
    "Source",
    "indent_of",
    "key_line",
    "quote",
    "quoted_value",
    "strip_comment",
]

#: Line breaks as PyYAML counts them (marks' line numbers follow them).
_LINE_BREAK: Final = re.compile("\r\n|[\n\r\x85\u2028\u2029]")
#: A block mapping key at the start of a line (after any ``- ``): indent,
#: dashes, the key, then ``:`` followed by a space or the line's end.
_KEY_LINE: Final = re.compile(
    r"""^(?P<indent>\ *)(?P<dashes>(?:-\ +)*)"""
    r"""(?P<key>"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s#'"\[\]{},&*!|>%@`-][^#]*?|-[^\s#][^#]*?)"""
    r"""\ *:(?=\ |\t|$)"""
)
#: Characters of a line looked at for its key (bounds the regular expression's work).
_LINE_LIMIT: Final = 500
#: Characters of a name or value quoted in a message.
_SHOWN: Final = 40
#: A list item line.
ITEM_LINE: Final = re.compile(r"^\ *-(?:\ |$)")


@dataclass(eq=False)
class Entry:
    """A block mapping key or list item parsed before the error (0-based position)."""

    line: int
    column: int
    #: The key's text, or ``-`` for a list item.
    name: str
    #: The token of the value on the key's own line (a scalar or a flow
    #: collection), or None when the value is a block below it (or absent).
    inline: yaml.Token | None = None
    parent: Entry | None = None
    children: list[Entry] = field(default_factory=list)

    @property
    def is_item(self) -> bool:
        return self.name == "-"

    @property
    def path(self) -> tuple[str, ...]:
        names: list[str] = []
        entry: Entry | None = self
        while entry is not None:
            names.append(entry.name)
            entry = entry.parent
        return tuple(reversed(names))


class Source:
    """The lines of a file and its tokens up to line ``last_line`` (0-based)."""

    def __init__(self, text: str, last_line: int) -> None:
        self.lines = _LINE_BREAK.split(text)
        self.tokens = _tokens(text, last_line)

    def line(self, number: int) -> str:
        """Line ``number`` (0-based), "" past the end."""
        return self.lines[number] if 0 <= number < len(self.lines) else ""

    def owner_above(self, number: int) -> int | None:
        """The nearest line above ``number`` that is neither blank nor a
        comment and is indented no more than it: where a plain value that
        ran on to line ``number`` started."""
        indent = indent_of(self.line(number))
        for above in range(number - 1, -1, -1):
            text = self.line(above)
            stripped = text.strip()
            if stripped and not stripped.startswith("#") and indent_of(text) <= indent:
                return above
        return None

    def entries(self, before_line: int) -> list[Entry]:
        """Block keys and list items that start before ``before_line``, with
        their parents (by indentation, as the parser nests them)."""
        entries: list[Entry] = []
        flow = 0
        tokens = self.tokens
        for index, token in enumerate(tokens):
            if isinstance(token, yaml.FlowSequenceStartToken | yaml.FlowMappingStartToken):
                flow += 1
            elif isinstance(token, yaml.FlowSequenceEndToken | yaml.FlowMappingEndToken):
                flow = max(0, flow - 1)
            if flow or token.start_mark.line >= before_line:
                continue
            mark = token.start_mark
            if isinstance(token, yaml.KeyToken):
                name = tokens[index + 1] if index + 1 < len(tokens) else None
                key = name.value if isinstance(name, yaml.ScalarToken) else "?"
                inline = self._inline_value(index + 2, mark.line, after_colon=True)
                entries.append(Entry(mark.line, mark.column, str(key), inline))
            elif isinstance(token, yaml.BlockEntryToken):
                inline = self._inline_value(index + 1, mark.line, after_colon=False)
                entries.append(Entry(mark.line, mark.column, "-", inline))
        stack: list[Entry] = []
        for entry in entries:
            while stack and not _holds(stack[-1], entry):
                stack.pop()
            if stack:
                entry.parent = stack[-1]
                stack[-1].children.append(entry)
            stack.append(entry)
        return entries

    def _inline_value(self, index: int, line: int, *, after_colon: bool) -> yaml.Token | None:
        """The value token at ``index`` if it is a scalar or flow collection on ``line``."""
        tokens = self.tokens
        if after_colon:
            if index >= len(tokens) or not isinstance(tokens[index], yaml.ValueToken):
                return None
            index += 1
        while index < len(tokens) and isinstance(tokens[index], yaml.AnchorToken | yaml.TagToken):
            index += 1
        if index >= len(tokens) or tokens[index].start_mark.line != line:
            return None
        token = tokens[index]
        if isinstance(
            token, yaml.ScalarToken | yaml.FlowSequenceStartToken | yaml.FlowMappingStartToken
        ):
            return token
        return None

    def describe_line(self, number: int) -> str:
        """``'timeout'`` for a key line, ``this list item`` for an item, else
        the line's text in quotes."""
        text = self.line(number)
        match = key_line(text)
        if match is not None:
            if match.group("dashes"):
                return f"the list item {quote(text.strip())}"
            return quote(match.group("key"))
        if ITEM_LINE.match(text):
            return "this list item"
        return quote(text.strip())


def _tokens(text: str, last_line: int) -> list[yaml.Token]:
    """PyYAML's tokens of ``text`` up to ``last_line``, or up to where its
    scanner fails."""
    tokens: list[yaml.Token] = []
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if token.start_mark.line > last_line:
                break
            tokens.append(token)
    except yaml.YAMLError:
        pass
    return tokens


def _holds(outer: Entry, inner: Entry) -> bool:
    """Whether ``inner``, coming after ``outer``, is inside it."""
    if outer.column < inner.column:
        return True
    # `key:` followed by `- item` lines at the same indentation
    return (
        outer.column == inner.column
        and inner.is_item
        and not outer.is_item
        and outer.inline is None
    )


def key_line(text: str) -> re.Match[str] | None:
    """``text`` as a block key line (groups ``indent``, ``dashes``, ``key``), or None."""
    return _KEY_LINE.match(text[:_LINE_LIMIT])


def indent_of(text: str) -> int:
    """The spaces that start ``text``."""
    return len(text) - len(text.lstrip(" "))


def strip_comment(value: str) -> str:
    """A value's text without surrounding spaces and a trailing ``# comment``."""
    return re.split(r"\s#", value.strip())[0].rstrip()


def quote(name: str) -> str:
    """``name`` in quotes for a message, shortened when long."""
    if len(name) > _SHOWN:
        name = name[: _SHOWN - 3] + "..."
    return f"'{name}'"


def quoted_value(value: str) -> str:
    """``value`` as a YAML quoted scalar, for a suggestion."""
    if "'" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
