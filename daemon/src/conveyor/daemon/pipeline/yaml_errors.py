"""Why a pipeline file is not valid YAML, said in the user's terms, at the
line where the mistake is.

PyYAML reports where its parser gave up, in its own words (``expected
<block end>, but found '<block mapping start>'``), often lines after the
mistake: a stage moved to column 1 is reported at the next stage. Here the
source lines and the keys parsed before the error (PyYAML's tokens) are
read again to find the line that breaks the pattern and say what is wrong
there: a key indented less than its siblings, or under a key that already
has a value; a block whose first keys are indented unlike the rest of the
file; a key at the level of its parent; a missing ``:`` or a ``:`` without a
space after it; a ``-`` without a space; a tab used for indentation; a quote
or bracket that is never closed (said where it was opened); a ``: `` inside
a value that needs quotes. Errors not recognised keep PyYAML's text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import yaml

from conveyor.daemon.pipeline.structure import fields_at
from conveyor.daemon.pipeline.yaml_source import (
    ITEM_LINE,
    Entry,
    Source,
    indent_of,
    key_line,
    quote,
    quoted_value,
    strip_comment,
)

__all__ = ["SyntaxProblem", "explain_yaml_error"]

#: Closing brackets (as PyYAML quotes them) and what opens them.
_OPENERS: Final = {"']'": "'['", "'}'": "'{'"}
#: What cannot start a plain ``key`` or ``key value`` line.
_NOT_PLAIN: Final = ("#", "'", '"', "[", "{", "|", ">", "-", "&", "*", "!")


@dataclass(frozen=True)
class SyntaxProblem:
    """A YAML syntax error explained: 1-based line and column, and what is wrong."""

    line: int
    column: int
    message: str


def explain_yaml_error(text: str, exc: yaml.MarkedYAMLError) -> SyntaxProblem | None:
    """The mistake behind ``exc`` (raised by PyYAML for ``text``), or None
    when it is not one of the recognised kinds. Reads ``text`` again up to
    the error's line: call it only for a file that failed."""
    return _Explainer(text, exc).explain()


class _Explainer:
    def __init__(self, text: str, exc: yaml.MarkedYAMLError) -> None:
        self.problem = exc.problem or ""
        self.context = exc.context or ""
        self.mark = exc.problem_mark or exc.context_mark
        self.context_mark = exc.context_mark
        self.source = Source(text, self.mark.line if self.mark is not None else 0)

    # -- which mistake ---------------------------------------------------------

    def explain(self) -> SyntaxProblem | None:
        if self.mark is None:
            return None
        for explain in (
            self._unclosed_quote_swallowing_lines,
            self._tab,
            self._reserved_character,
            self._quoted_scalar,
            self._flow_collection,
            self._block_scalar_header,
            self._second_document,
            self._first_key_indented,
            self._undefined_alias,
            self._stray_closer,
            self._mapping_value_not_allowed,
            self._simple_key_without_colon,
            self._block_end,
        ):
            found = explain()
            if found is not None:
                return found
        return None

    def _at(self, mark: yaml.Mark, message: str) -> SyntaxProblem:
        return SyntaxProblem(mark.line + 1, mark.column + 1, message)

    def _parser_words(self) -> str:
        """PyYAML's own words, for the messages that keep them."""
        text = f"{self.problem} ({self.context})" if self.context else self.problem
        return f" (YAML parser: {text})"

    # -- quotes, brackets, characters -----------------------------------------

    def _unclosed_quote_swallowing_lines(self) -> SyntaxProblem | None:
        """A quoted value not closed on its line reads the keys and items
        below it as its text, up to the next quote; whatever the parser says
        after that, this is the mistake."""
        for token in self.source.tokens:
            if not isinstance(token, yaml.ScalarToken) or token.style not in ('"', "'"):
                continue
            first, last = token.start_mark.line, token.end_mark.line
            swallowed = [
                number
                for number in range(first + 1, last + 1)
                if key_line(self.source.line(number)) or ITEM_LINE.match(self.source.line(number))
            ]
            if swallowed:
                quote = token.style
                return self._at(
                    token.start_mark,
                    f"the string opened with {quote!r} here is not closed on this line, so the"
                    f" lines below it (from line {swallowed[0] + 1}) are read as its text:"
                    f" add the closing {quote!r}",
                )
        return None

    def _tab(self) -> SyntaxProblem | None:
        assert self.mark is not None
        if not self.problem.startswith("found character '\\t'"):
            return None
        if not self.source.line(self.mark.line)[: self.mark.column].strip():
            return self._at(
                self.mark,
                "a tab is used for indentation; YAML indents with spaces only:"
                " replace the tab with spaces",
            )
        return self._at(self.mark, "a tab cannot be used here; use spaces instead")

    def _reserved_character(self) -> SyntaxProblem | None:
        assert self.mark is not None
        match = re.fullmatch(r"found character '(.)' that cannot start any token", self.problem)
        if match is None:
            return None
        value = strip_comment(self.source.line(self.mark.line)[self.mark.column :])
        return self._at(
            self.mark,
            f"a value cannot start with {match.group(1)!r} (it is reserved in YAML):"
            f" put the value in quotes, e.g. {quoted_value(value)}",
        )

    def _quoted_scalar(self) -> SyntaxProblem | None:
        opened = self.context_mark
        if "quoted scalar" not in self.context or opened is None or self.mark is None:
            return None
        quote = self.source.line(opened.line)[opened.column : opened.column + 1]
        if self.problem == "found unexpected end of stream":
            return self._at(
                opened,
                f"the string opened with {quote!r} here is never closed: add the closing {quote!r}",
            )
        match = re.fullmatch(r"found unknown escape character '(.)'", self.problem)
        if match is not None:
            char = match.group(1)
            return SyntaxProblem(
                self.mark.line + 1,
                self.mark.column,  # the backslash, 1-based
                f"'\\{char}' is not an escape sequence in a double-quoted string: write"
                f" '\\\\{char}' for a backslash, or use single quotes, in which a backslash"
                " is an ordinary character",
            )
        return None

    def _flow_collection(self) -> SyntaxProblem | None:
        opened = self.context_mark
        match = re.fullmatch(r"while parsing a flow (sequence|mapping)", self.context)
        if match is None or opened is None or self.mark is None:
            return None
        opening, closing = ("[", "]") if match.group(1) == "sequence" else ("{", "}")
        what = "list" if opening == "[" else "mapping"
        if self.mark.line > opened.line or "<stream end>" in self.problem:
            return self._at(
                opened,
                f"the {what} opened with {opening!r} here is not closed: add {closing!r}"
                f" after its last item (the parser reached line {self.mark.line + 1}"
                " without finding it)",
            )
        return self._at(
            self.mark,
            f"expected ',' or {closing!r} here, inside the {what} opened with {opening!r} at"
            f" column {opened.column + 1}; a value containing ': ' or ',' must be quoted",
        )

    def _block_scalar_header(self) -> SyntaxProblem | None:
        if self.context != "while scanning a block scalar" or self.mark is None:
            return None
        if not self.problem.startswith("expected a comment or a line break"):
            return None
        return self._at(
            self.mark,
            "only a comment may follow '|' or '>' on its line: the text of the block starts"
            " on the next line, indented",
        )

    def _second_document(self) -> SyntaxProblem | None:
        if self.problem != "but found another document" or self.mark is None:
            return None
        return self._at(
            self.mark,
            "a second YAML document starts here ('---'); a pipeline file holds one document:"
            " remove this line",
        )

    def _first_key_indented(self) -> SyntaxProblem | None:
        """The file's first key is indented, a later top-level one is not."""
        mark = self.mark
        if mark is None or not self.problem.startswith("expected '<document start>'"):
            return None
        for number in range(mark.line):
            text = self.source.line(number)
            stripped = text.strip()
            if not stripped or stripped.startswith(("#", "%", "---")):
                continue
            column = indent_of(text) + 1
            if column <= mark.column + 1:
                return None
            return SyntaxProblem(
                number + 1,
                column,
                f"{self.source.describe_line(number)} is indented (column {column}), but"
                f" the top-level keys after it are at column {mark.column + 1}"
                f" ({self.source.describe_line(mark.line)} on line {mark.line + 1}):"
                " remove the indentation",
            )
        return None

    def _undefined_alias(self) -> SyntaxProblem | None:
        if not self.problem.startswith("found undefined alias") or self.mark is None:
            return None
        name = self.problem.removeprefix("found undefined alias").strip().strip("'")
        return self._at(
            self.mark, f"unknown alias '*{name}': no anchor '&{name}' is defined before it"
        )

    def _stray_closer(self) -> SyntaxProblem | None:
        match = re.fullmatch(
            r"expected (?:<block end>|the node content), but found ('[\]}]')", self.problem
        )
        if match is None or self.mark is None:
            return None
        found = match.group(1)
        return self._at(
            self.mark, f"{found} here closes nothing: no {_OPENERS[found]} was opened before it"
        )

    # -- plain text where a key was expected -----------------------------------

    def _mapping_value_not_allowed(self) -> SyntaxProblem | None:
        """A ``:`` where the parser reads a plain value: a ``: `` inside a
        value, or a key line read as more of the value above it."""
        if self.problem != "mapping values are not allowed here" or self.mark is None:
            return None
        number = self.mark.line
        text = self.source.line(number)
        match = key_line(text)
        if match is not None and match.end() <= self.mark.column:
            key = match.group("key")
            value = strip_comment(text[match.end() + 1 :])
            return self._at(
                self.mark,
                f"the value of {quote(key)} contains ': ', which YAML reads as the start of"
                f" another key: put the value in quotes ({key}: {quoted_value(value)})",
            )
        above = self.source.owner_above(number)
        return self._continued(above, number) if above is not None else None

    def _continued(self, above: int, number: int) -> SyntaxProblem | None:
        """Line ``number`` was read as more of the value that starts on line ``above``."""
        text = self.source.line(above)
        stripped = text.strip()
        indent = indent_of(self.source.line(number))
        dash = self._dash_without_space(above)
        if dash is not None:
            return dash
        match = key_line(text)
        if match is not None:
            value = strip_comment(text[match.end() + 1 :])
            if not value or indent <= match.start("key"):
                return None
            if match.group("dashes"):
                owner = f"the list item {quote(stripped)}"
                return self._indented_under_value(number, indent, owner, None, value)
            entries = self.source.entries(above + 1)
            mine = [e for e in entries if e.line == above and not e.is_item]
            if mine:
                found = self._misplaced(mine[-1], number, indent) or self._offset(
                    mine[-1], entries, number, indent
                )
                if found is not None:
                    return found
            key = match.group("key")
            return self._indented_under_value(number, indent, quote(key), match.start("key"), value)
        item = re.fullmatch(r"- +(?P<value>[^:]+)", stripped)
        if item is not None and indent > indent_of(text):
            owner = f"the list item {quote(stripped)}"
            value = strip_comment(item.group("value"))
            return self._indented_under_value(number, indent, owner, None, value)
        if stripped.startswith(_NOT_PLAIN):
            return None
        return self._missing_colon(above)

    def _simple_key_without_colon(self) -> SyntaxProblem | None:
        if self.problem != "could not find expected ':'" or self.context_mark is None:
            return None
        line = self.context_mark.line
        return (
            self._outdented_block_text(line)
            or self._dash_without_space(line)
            or self._missing_colon(line)
        )

    def _missing_colon(self, number: int) -> SyntaxProblem | None:
        """Line ``number`` is plain text where a ``key: value`` was expected."""
        text = self.source.line(number)
        stripped = text.strip()
        if not stripped or stripped.startswith(_NOT_PLAIN):
            return None
        glued = re.match(r"([^\s:]+):(\S.*)$", stripped)
        if glued is not None:
            key, value = glued.groups()
            return SyntaxProblem(
                number + 1,
                indent_of(text) + 1,
                f"a space is needed after ':' to separate the key {quote(key)} from its value"
                f" ({key}: {value})",
            )
        word, _, rest = stripped.partition(" ")
        fixed = f"{word}: {rest.strip()}" if rest.strip() else f"{word}:"
        return SyntaxProblem(
            number + 1,
            indent_of(text) + 1,
            f"missing ':' after {quote(word)} (write {quote(fixed)})",
        )

    def _dash_without_space(self, number: int) -> SyntaxProblem | None:
        """Line ``number`` starts with ``-x``: meant as a list item?"""
        text = self.source.line(number)
        stripped = text.strip()
        if not re.match(r"-[^\s-]", stripped):
            return None
        return SyntaxProblem(
            number + 1,
            indent_of(text) + 1,
            f"{quote(stripped)} is not a list item: put a space after '-'"
            f" ({quote('- ' + stripped[1:])})",
        )

    # -- indentation -----------------------------------------------------------

    def _block_end(self) -> SyntaxProblem | None:
        """A line whose indentation fits no open block: deeper than the keys
        of the block the parser is in (``outer``), but not like the entries
        of the last of them."""
        if not self.problem.startswith("expected <block end>, but found"):
            return None
        if self.context_mark is None or self.mark is None:
            return None
        number, indent = self.mark.line, self.mark.column
        outer = self.context_mark.column
        entries = self.source.entries(number)
        siblings = [
            e for e in entries if e.column == outer and self.context_mark.line <= e.line < number
        ]
        if not siblings:
            return None
        last = siblings[-1]
        is_item = bool(ITEM_LINE.match(self.source.line(number)))
        found = self._dash_without_space(number)
        if found is None and last.is_item and not is_item and indent == outer:
            found = self._at(
                self.mark,
                f"{self.source.describe_line(number)} is a key at the indentation of the list items"
                " above it, and a list cannot go on with a key: make it a list item"
                " ('- ...') or indent it like the key the list belongs to",
            )
        found = (
            found
            or self._misplaced(last, number, indent)
            or self._offset(last, entries, number, indent)
        )
        if found is not None:
            return found
        inner = last.children[0].column if last.children else None
        if inner is not None and outer < indent < inner:
            found = self._offset(last.children[-1], entries, number, indent)
            if found is not None:
                return found
        if inner is not None and (
            outer < indent < inner or (indent == outer and is_item and last.children[0].is_item)
        ):
            return self._between(number, indent, last, inner, outer, is_item)
        if inner is None and last.inline is not None and indent > outer:
            return self._under_inline_value(number, indent, last, outer)
        return SyntaxProblem(
            number + 1,
            indent + 1,
            f"{self.source.describe_line(number)} (column {indent + 1}) does not line up with the"
            f" block it is in: {_members(last.parent)} are at column {outer + 1}"
            f" ({quote(last.name)} on line {last.line + 1}){self._parser_words()}",
        )

    def _misplaced(self, last: Entry, number: int, indent: int) -> SyntaxProblem | None:
        """``last`` belongs one level down, in the sibling before it, whose
        entries (or, when it is empty, line ``number``) are at ``indent``.
        Said only where the file format shows it: ``last``'s level does not
        know its name, or the level below does."""
        if last.is_item:
            return None
        known = _known_fields(last.parent)
        earlier = [e for e in (last.parent.children if last.parent else []) if e is not last]
        if last.parent is None:
            earlier = [e for e in self.source.entries(last.line) if e.parent is None]
        earlier = [e for e in earlier if e.line < last.line and e.column == last.column]
        for index, sibling in enumerate(reversed(earlier)):
            empty = not sibling.children and sibling.inline is None and index == 0
            if not empty and (not sibling.children or sibling.children[0].column != indent):
                continue
            below = _known_fields(sibling)
            if known is None:
                moved = below is not None and last.name in below
            else:
                moved = last.name not in known and (below is None or last.name in below)
            if not moved:
                return None
            where = f"(column {indent + 1})"
            if sibling.parent is None and sibling.name == "stages":
                message = (
                    f"{quote(last.name)} is at the top level; is it a stage indented less"
                    f" than the others under 'stages:' {where}?"
                )
            elif empty:
                message = (
                    f"{quote(last.name)} is indented like {quote(sibling.name)}"
                    f" (column {last.column + 1}), which is left empty: is it one of"
                    f" {_members(sibling, other=False)} {where}?"
                )
            else:
                message = (
                    f"{quote(last.name)} is indented like {quote(sibling.name)}"
                    f" (column {last.column + 1}); is it one of {_members(sibling, other=False)}"
                    f" indented less than the others {where}?"
                )
            return SyntaxProblem(last.line + 1, last.column + 1, message)
        return None

    def _offset(
        self, last: Entry, entries: Sequence[Entry], number: int, indent: int
    ) -> SyntaxProblem | None:
        """The block of ``last`` starts indented unlike the rest of the file,
        and line ``number`` (at ``indent``) goes on as the rest of the file
        does: the block's start is the mistake."""
        parent = last.parent
        if parent is None or parent.is_item or last.is_item:
            return None
        step = _step(entries)
        if step is None or indent - parent.column != step or last.column - parent.column == step:
            return None
        block = [e for e in parent.children if e.column == last.column]
        first, others = block[0], len(block) - 1
        names = quote(first.name) + (f" and the {others} key(s) after it" if others else "")
        spaces = last.column - parent.column
        return SyntaxProblem(
            first.line + 1,
            first.column + 1,
            f"{names} {'are' if others else 'is'} indented {spaces} space(s) under"
            f" {quote(parent.name)}, where this file indents by {step}:"
            f" indent {'them' if others else 'it'} to column {parent.column + step + 1},"
            f" like {self.source.describe_line(number)} on line {number + 1}",
        )

    def _between(
        self, number: int, indent: int, last: Entry, inner: int, outer: int, is_item: bool
    ) -> SyntaxProblem:
        """Line ``number`` is indented between ``last`` (at ``outer``) and
        its entries (at ``inner``): say which of the two it belongs with
        when the file format tells, else offer both."""
        what = self.source.describe_line(number)
        match = key_line(self.source.line(number))
        key = match.group("key") if match is not None and not match.group("dashes") else None
        inner_known, outer_known = _known_fields(last), _known_fields(last.parent)
        if last.children[0].is_item:
            inner_known = frozenset()  # a list cannot go on with a key
        if is_item:
            if last.children[0].is_item:
                message = (
                    "this list item is indented less than the items above it:"
                    f" indent it to column {inner + 1}"
                )
            else:
                message = (
                    f"this list item is indented less than {_members(last)} (column {inner + 1})"
                )
        elif key is not None and _belongs(key, outer_known, inner_known):
            message = (
                f"{what} is indented more than {_members(last.parent)} (column {outer + 1}):"
                f" indent it to column {outer + 1}"
            )
        elif key is not None and _belongs(key, inner_known, outer_known):
            message = (
                f"{what} is indented less than {_members(last)} (column {inner + 1}):"
                f" indent it to column {inner + 1}"
            )
        else:
            message = (
                f"{what} is indented less than {_members(last)} (column {inner + 1}):"
                f" indent it to column {inner + 1}, or to column {outer + 1} if it is not"
                f" part of {quote(last.name)}"
            )
        return SyntaxProblem(number + 1, indent + 1, message)

    def _under_inline_value(
        self, number: int, indent: int, last: Entry, outer: int
    ) -> SyntaxProblem:
        """Line ``number`` is indented under ``last``, which has its value on its own line."""
        token = last.inline
        assert token is not None
        outdented = self._outdented_block_text(number)
        if outdented is not None:
            return outdented
        value = strip_comment(self.source.line(last.line)[token.start_mark.column :])
        if last.is_item:
            return self._indented_under_value(number, indent, "the list item above it", None, value)
        return self._indented_under_value(number, indent, quote(last.name), outer, value)

    def _outdented_block_text(self, number: int) -> SyntaxProblem | None:
        """Line ``number``, not a key, comes right after a ``|`` or ``>``
        block whose text is indented more: meant as more of its text?"""
        text = self.source.line(number)
        if key_line(text) is not None:
            return None
        above = [e for e in self.source.entries(number) if e.inline is not None]
        token = above[-1].inline if above else None
        if not isinstance(token, yaml.ScalarToken) or token.style not in ("|", ">"):
            return None
        first = token.start_mark.line + 1
        block_indent = indent_of(self.source.line(first))
        if not first < number or indent_of(text) >= block_indent:
            return None
        if any(
            self.source.line(n).strip() and indent_of(self.source.line(n)) < block_indent
            for n in range(first, number)
        ):
            return None
        return SyntaxProblem(
            number + 1,
            indent_of(text) + 1,
            f"this line is indented less than the text of the {token.style!r} block of"
            f" {quote(above[-1].name)} above it (column {block_indent + 1}), so it ends the"
            " block and fits nowhere: indent it like the block's first line",
        )

    def _indented_under_value(
        self, number: int, indent: int, owner: str, column: int | None, value: str
    ) -> SyntaxProblem:
        fix = f": indent it to column {column + 1}, like {owner}" if column is not None else ""
        return SyntaxProblem(
            number + 1,
            indent + 1,
            f"{self.source.describe_line(number)} is indented more than {owner} above it, as if it"
            f" belonged to it, but {owner} already has a value ({quote(value)}){fix}",
        )


def _step(entries: Sequence[Entry]) -> int | None:
    """How many spaces the file indents a key under its key, if one number wins."""
    steps = Counter(
        e.column - e.parent.column
        for e in entries
        if e.parent is not None and not e.is_item and not e.parent.is_item
    )
    ranked = steps.most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def _members(entry: Entry | None, *, other: bool = True) -> str:
    """What the entries of ``entry`` are, in the file's terms."""
    the = "the other" if other else "the"
    if entry is None:
        return "the top-level keys"
    path = entry.path
    if path == ("stages",):
        return f"{the} stages"
    if len(path) == 2 and path[0] == "stages":
        return f"the fields of stage {quote(path[1])}"
    if other and len(entry.children) == 1 and not entry.children[0].is_item:
        return f"{quote(entry.children[0].name)} above it"
    if entry.is_item:
        return "the keys of this list item"
    return f"{the} entries of {quote(entry.name)}"


def _known_fields(parent: Entry | None) -> frozenset[str] | None:
    """The keys the file format allows under ``parent`` (None: any key)."""
    path = parent.path if parent is not None else ()
    if "-" in path:
        return None
    return frozenset(fields_at(path)) or None


def _belongs(key: str, here: frozenset[str] | None, there: frozenset[str] | None) -> bool:
    """Whether ``key`` can be a key of the level that allows ``here`` (None:
    any key) and not of the one that allows ``there``."""
    return (here is None or key in here) and there is not None and key not in there
