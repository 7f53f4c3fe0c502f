"""What is wrong with a pipeline file, and where: diagnostics, the errors
that carry them, and the collector that places each problem at its line."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import yaml

__all__ = [
    "Diagnostic",
    "Diagnostics",
    "FieldPath",
    "PipelineError",
    "PipelineTooLarge",
    "did_you_mean",
    "one_of",
    "parse_relative_path",
    "render_path",
]

PathItem: TypeAlias = str | int
#: Where a value sits in the document, e.g. ``("stages", "build", "needs", 0)``.
FieldPath: TypeAlias = tuple[PathItem, ...]

#: Names listed in an "expected one of" message before the rest is counted.
ONE_OF_SHOWN: Final = 20


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


class PipelineTooLarge(PipelineError):
    """The file exceeds a size limit (stages, needs); it was not checked
    further. Its one diagnostic names the limit and the setting that sets it."""


def render_path(path: Sequence[PathItem]) -> str:
    """Render ``("stages", "build", "needs", 0)`` as ``"stages.build.needs[0]"``."""
    out = ""
    for item in path:
        if isinstance(item, int):
            out += f"[{item}]"
        else:
            out += f".{item}" if out else item
    return out


def parse_relative_path(text: str) -> FieldPath:
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


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or ``""``."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def one_of(candidates: Sequence[str], *, leaving_out: str = "") -> str:
    """The candidates as a comma-separated list, the first few of a long one,
    without ``leaving_out`` (which, when given, must be one of them)."""
    shown = [c for c in candidates[: ONE_OF_SHOWN + 1] if c != leaving_out][:ONE_OF_SHOWN]
    total = len(candidates) - (1 if leaving_out else 0)
    if not shown:
        return "(none)"
    text = ", ".join(shown)
    if total > len(shown):
        text += f" (and {total - len(shown)} more)"
    return text


@dataclass(frozen=True)
class Loc:
    """The nodes a value came from: its key (None at the top or in a list)
    and its value."""

    key: yaml.Node | None
    value: yaml.Node


class Diagnostics:
    """Collects the diagnostics of one file and places them at their lines.

    ``positions`` maps each path of the built document to its nodes; the
    YAML builder fills it, later phases report problems by path.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.found: list[Diagnostic] = []
        self.positions: dict[FieldPath, Loc] = {}

    def __len__(self) -> int:
        return len(self.found)

    def add(self, line: int, column: int, path: str, message: str) -> None:
        self.found.append(Diagnostic(self.file, line, column, path, message))

    def at_node(self, node: yaml.Node, path: str, message: str) -> None:
        mark = node.start_mark
        self.add(mark.line + 1, mark.column + 1, path, message)

    def locate(self, path: FieldPath, *, at_key: bool = False) -> tuple[int, int]:
        """Line/column for ``path``; falls back to the closest existing parent."""
        for end in range(len(path), -1, -1):
            loc = self.positions.get(path[:end])
            if loc is None:
                continue
            # For a missing child, point at the parent's key, or at the scalar it came from.
            use_key = at_key if end == len(path) else not isinstance(loc.value, yaml.ScalarNode)
            node = loc.key if use_key and loc.key is not None else loc.value
            return node.start_mark.line + 1, node.start_mark.column + 1
        return 0, 0

    def report(self, path: FieldPath, message: str, *, at_key: bool = False) -> None:
        line, column = self.locate(path, at_key=at_key)
        self.add(line, column, render_path(path), message)

    def too_large(self, path: FieldPath, message: str) -> PipelineTooLarge:
        """The error for a size limit exceeded at ``path`` (to raise)."""
        line, column = self.locate(path, at_key=True)
        return PipelineTooLarge([Diagnostic(self.file, line, column, render_path(path), message)])

    def sorted(self, limit: int | None = None) -> list[Diagnostic]:
        """Unique diagnostics by line; beyond ``limit``, one that says how
        many more there are."""
        unique = sorted(dict.fromkeys(self.found), key=lambda d: (d.line, d.column))
        if limit is None or len(unique) <= limit:
            return unique
        hidden = len(unique) - limit
        more = Diagnostic(
            self.file,
            0,
            0,
            "",
            f"{hidden} more problem(s) not shown; at most {limit} are reported"
            " (setting max_diagnostics)",
        )
        return [*unique[:limit], more]
