"""Reading report files: size limits, JSON decoding, shape checks and paths."""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

#: Larger report files are refused rather than parsed.
MAX_REPORT_BYTES = 50 * 1024 * 1024


class ReportError(Exception):
    """A report file that cannot be used: missing, too large or malformed.

    ``str()`` names the file and the problem, e.g.
    ``reports/junit.xml: not valid XML: mismatched tag (line 4)``.
    """

    def __init__(self, path: Path | str, problem: str = "") -> None:
        #: The report file as given to the parser, and what is wrong with it.
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if problem else self.path)

    def __reduce__(self) -> tuple[type[ReportError], tuple[str, str]]:
        return (type(self), (self.path, self.problem))


def _size(count: int) -> str:
    return f"{count / 1024 / 1024:.1f} MB" if count >= 1024 * 1024 else f"{count} bytes"


def read_report(path: Path, *, missing: str = "file not found") -> bytes:
    """The bytes of a report file, refusing directories and files over the limit."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ReportError(path, missing) from None
    except OSError as exc:
        raise ReportError(path, f"cannot read: {exc.strerror or exc}") from None
    if path.is_dir():
        raise ReportError(path, "is a directory, expected a file")
    if size > MAX_REPORT_BYTES:
        raise ReportError(
            path, f"too large to parse ({_size(size)}; the limit is {_size(MAX_REPORT_BYTES)})"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ReportError(path, f"cannot read: {exc.strerror or exc}") from None


def load_json(path: Path, *, missing: str = "file not found") -> Any:
    """The decoded JSON document in ``path``; :class:`ReportError` when it is not JSON."""
    data = read_report(path, missing=missing)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReportError(path, f"not valid UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise ReportError(path, "empty file, expected a JSON document (did the tool crash?)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            path, f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise ReportError(path, "not valid JSON: nested too deeply") from None


def type_name(value: object) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class Shape:
    """Typed access to decoded JSON, raising :class:`ReportError` that names
    the file and where in it the problem is (``result 3: 'line_number' ...``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, problem: str) -> ReportError:
        return ReportError(self.path, problem)

    def obj(self, value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"{where}: expected an object, got {type_name(value)}")
        return value

    def lst(self, value: object, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(f"{where}: expected a list, got {type_name(value)}")
        return value

    def field_obj(self, data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
        """An optional object field (``{}`` when absent or null)."""
        value = data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(f"{where}: '{key}' should be an object, got {type_name(value)}")
        return value

    def field_list(self, data: dict[str, Any], key: str, where: str) -> list[Any]:
        """An optional list field (``[]`` when absent or null)."""
        value = data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(f"{where}: '{key}' should be a list, got {type_name(value)}")
        return value

    def field_str(
        self, data: dict[str, Any], key: str, where: str, *, required: bool = False
    ) -> str:
        value = data.get(key)
        if value is None:
            if required:
                raise self.fail(f"{where}: missing '{key}'")
            return ""
        if not isinstance(value, str):
            raise self.fail(f"{where}: '{key}' should be a string, got {type_name(value)}")
        return value

    def field_int(self, data: dict[str, Any], key: str, where: str) -> int:
        """An optional non-negative integer field (0 when absent or null)."""
        value = data.get(key)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{where}: '{key}' should be an integer, got {type_name(value)}")
        return max(0, value)


# --- paths -------------------------------------------------------------------


def _root_forms(root: Path) -> list[str]:
    """The workspace as tools may spell it: as given (made absolute) and with
    symbolic links resolved (``/tmp`` vs ``/private/tmp``)."""
    forms = [posixpath.normpath(os.path.abspath(root))]
    real = posixpath.normpath(os.path.realpath(root))
    if real not in forms:
        forms.append(real)
    return forms


def _under(path: str, base: str) -> str | None:
    """``path`` relative to ``base`` when it is inside it, else None."""
    try:
        rel = PurePosixPath(path).relative_to(base)
    except ValueError:
        return None
    return rel.as_posix()


def relative_path(name: str, root: Path) -> str:
    """A file name from a tool, as a posix path relative to the workspace.

    Relative names are taken as relative to the workspace (tools run there);
    absolute names inside the workspace are made relative to it; absolute
    names outside it become ``../``-relative paths, never absolute ones.
    """
    if not name:
        return ""
    if PurePosixPath(name).is_absolute():
        absolute = posixpath.normpath(name)
        forms = _root_forms(root)
        for base in forms:
            rel = _under(absolute, base)
            if rel is not None:
                return "" if rel == "." else rel
        return posixpath.relpath(absolute, forms[0])
    rel = posixpath.normpath(name)
    return "" if rel == "." else rel


def is_inside(rel: str) -> bool:
    """Whether a relative path from :func:`relative_path` stays in the workspace."""
    return bool(rel) and not PurePosixPath(rel).is_absolute() and not rel.startswith("../")


def uri_path(uri: str) -> tuple[str, str]:
    """The path in a URI reference and its kind: ``"file"`` (a ``file:`` URI,
    absolute), ``"relative"`` (a relative reference) or ``"other"`` (another
    scheme, such as ``https:``, returned whole)."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return unquote(parts.path), "file"
    if len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        return uri, "other"
    return unquote(uri), "relative"


def join_under_root(base: str, rel: str, root: Path) -> str | None:
    """``base/rel`` relative to the workspace when that lands inside it."""
    joined = posixpath.normpath(posixpath.join(base, rel))
    for form in _root_forms(root):
        inside = _under(joined, form)
        if inside is not None:
            return "" if inside == "." else inside
    return None
