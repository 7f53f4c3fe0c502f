"""Plugins in this tree use the public plugin API only.

Every plugin module (the built-in plugins, the daemon's executors registered
as plugins, the example third-party plugin) may import Conveyor only through
``conveyor.plugin``; the built-ins may also use their own distribution's
modules, and the example may use ``conveyor.plugins.reports``, the public
helper library, which itself uses ``conveyor.plugin`` only. Imports are
read with :mod:`ast`, so an import inside a function counts too.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = "conveyor.plugin"


def _is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def conveyor_imports(source: str, filename: str = "<source>") -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every import of a ``conveyor`` module."""
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_under(alias.name, "conveyor"):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "conveyor":
                for alias in node.names:
                    yield node.lineno, f"conveyor.{alias.name}"
            elif _is_under(node.module, "conveyor"):
                yield node.lineno, node.module


def violations(source: str, allowed: tuple[str, ...], filename: str = "<source>") -> list[str]:
    """The imports of ``source`` that are neither ``conveyor.plugin`` nor in
    one of the ``allowed`` packages."""
    return [
        f"{filename}:{line}: imports {module}"
        for line, module in conveyor_imports(source, filename)
        if module != PUBLIC and not any(_is_under(module, package) for package in allowed)
    ]


def _entry_point_modules(pyproject: Path) -> list[str]:
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    return list(data.get("project", {}).get("entry-points", {}).get("conveyor", {}).values())


def _module_file(module: str, src: Path) -> Path:
    path = src.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def plugin_modules() -> list[tuple[Path, tuple[str, ...]]]:
    """Each plugin module in the tree, with the packages it may import
    besides ``conveyor.plugin``."""
    found: list[tuple[Path, tuple[str, ...]]] = []
    plugins_src = ROOT / "plugins" / "src"
    reports = plugins_src / "conveyor" / "plugins" / "reports"
    for path in sorted(plugins_src.rglob("*.py")):
        own = "conveyor.plugins.reports" if path.is_relative_to(reports) else "conveyor.plugins"
        found.append((path, (own,)))
    for src in sorted(ROOT.glob("examples/*/src")):
        for path in sorted(src.rglob("*.py")):
            found.append((path, ("conveyor.plugins.reports",)))
    daemon = ROOT / "daemon"
    for module in _entry_point_modules(daemon / "pyproject.toml"):
        found.append((_module_file(module, daemon / "src"), ()))
    return found


def test_the_plugins_are_found() -> None:
    names = {path.relative_to(ROOT).as_posix() for path, _ in plugin_modules()}
    assert {
        "plugins/src/conveyor/plugins/lint.py",
        "plugins/src/conveyor/plugins/reports/baseline.py",
        "daemon/src/conveyor/daemon/executors/local.py",
        "examples/conveyor-plugin-changelog/src/conveyor_changelog/plugin.py",
    } <= names
    assert all(path.is_file() for path, _ in plugin_modules())


def test_a_private_import_is_caught() -> None:
    source = (
        "import conveyor.daemon.stages\n"
        "from conveyor import daemon\n"
        "from conveyor.plugin._parameters import Parameters\n"
        "def later():\n"
        "    from conveyor.daemon.pipeline.model import describe_value\n"
        "from conveyor.plugin import hookimpl\n"
        "from conveyor.plugins.reports import redact\n"
    )
    assert violations(source, ("conveyor.plugins.reports",)) == [
        "<source>:1: imports conveyor.daemon.stages",
        "<source>:2: imports conveyor.daemon",
        "<source>:3: imports conveyor.plugin._parameters",
        "<source>:5: imports conveyor.daemon.pipeline.model",
    ]


@pytest.mark.parametrize(
    ("path", "allowed"),
    plugin_modules(),
    ids=lambda value: value.relative_to(ROOT).as_posix() if isinstance(value, Path) else "",
)
def test_plugin_imports_only_the_public_api(path: Path, allowed: tuple[str, ...]) -> None:
    source = path.read_text(encoding="utf-8")
    assert violations(source, allowed, path.relative_to(ROOT).as_posix()) == []
