"""The documentation covers every hook, RPC, setting and CLI command.

Like datasette's ``test_docs.py``: adding a hook spec, an RPC, a ``Config``
field or a ``conveyor`` subcommand without documenting it fails here.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.client import cli
from conveyor.daemon import hookspecs
from conveyor.daemon.config import Config
from conveyor.daemon.records import RunStatus, StageStatus

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SERVICE_PROTO = ROOT / "proto" / "conveyor" / "v1" / "service.proto"


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _headings(text: str, level: int = 3) -> set[str]:
    """Heading texts of one level, without surrounding backticks."""
    marks = "#" * level
    return {
        match.group(1).strip().strip("`").strip()
        for match in re.finditer(rf"^{marks} +(.+?) *$", text, flags=re.MULTILINE)
    }


def _section(text: str, title: str) -> str:
    """The body of the ``## title`` section, up to the next ``##`` heading."""
    match = re.search(
        rf"^## +{re.escape(title)} *$(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL
    )
    assert match is not None, f"no '## {title}' section"
    return match.group(1)


# -------------------------------------------------------------------- what to cover


def hook_names() -> list[str]:
    """Every hook spec in ``conveyor.daemon.hookspecs``."""
    marker = f"{hookspecs.PROJECT}_spec"  # the attribute pluggy's HookspecMarker sets
    return sorted(
        name
        for name, obj in vars(hookspecs).items()
        if callable(obj) and getattr(obj, marker, None) is not None
    )


def rpc_names() -> list[str]:
    return re.findall(r"^\s*rpc\s+(\w+)\s*\(", _read(SERVICE_PROTO), flags=re.MULTILINE)


def config_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def _subparser_choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands_from_help() -> list[str]:
    """Fallback: the COMMAND list of ``conveyor --help``."""
    out = subprocess.run(
        [sys.executable, "-m", "conveyor.client.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    positional = out.split("positional arguments:", 1)[1].split("options:", 1)[0]
    # Subcommands are indented by four spaces, under the COMMAND metavar.
    return re.findall(r"^ {4}([a-z][\w-]*)\b", positional, flags=re.MULTILINE)


def cli_commands() -> list[str]:
    """Top-level ``conveyor`` subcommands, plus nested ones as ``"hook install"``."""
    builder = getattr(cli, "build_parser", None)
    if builder is None:
        return _commands_from_help()
    commands: list[str] = []
    for name, sub in _subparser_choices(builder()).items():
        commands.append(name)
        commands += [f"{name} {nested}" for nested in _subparser_choices(sub)]
    return commands


# -------------------------------------------------------------------- sanity of the lists


def test_there_is_something_to_document() -> None:
    assert "conveyor_stage_kinds" in hook_names()
    assert "SubmitRun" in rpc_names()
    assert "max_concurrent_runs" in config_keys()
    assert {"submit", "hook", "hook install"} <= set(cli_commands())


def test_help_fallback_lists_the_same_top_level_commands() -> None:
    top_level = [c for c in cli_commands() if " " not in c]
    assert sorted(_commands_from_help()) == sorted(top_level)


# -------------------------------------------------------------------- coverage


@pytest.mark.parametrize("hook", hook_names())
def test_hook_is_documented(hook: str) -> None:
    assert hook in _headings(_read(DOCS / "plugins.md")), (
        f"hook spec {hook} has no '### {hook}' heading in docs/plugins.md"
    )


@pytest.mark.parametrize("rpc", rpc_names())
def test_rpc_is_documented(rpc: str) -> None:
    assert rpc in _headings(_read(DOCS / "api.md")), (
        f"rpc {rpc} of service.proto has no '### {rpc}' heading in docs/api.md"
    )


@pytest.mark.parametrize("key", config_keys())
def test_config_key_is_documented(key: str) -> None:
    assert f"`{key}`" in _read(DOCS / "operations.md"), (
        f"Config.{key} is not mentioned as `{key}` in docs/operations.md"
    )


@pytest.mark.parametrize("command", cli_commands())
def test_cli_command_is_documented(command: str) -> None:
    assert f"conveyor {command}" in _headings(_read(DOCS / "api.md")), (
        f"`conveyor {command}` has no '### `conveyor {command}`' heading in docs/api.md"
    )


@pytest.mark.parametrize("status", [*RunStatus, *StageStatus], ids=str)
def test_status_is_documented(status: RunStatus | StageStatus) -> None:
    statuses = _section(_read(DOCS / "pipeline.md"), "Statuses")
    assert f"`{status.value}`" in statuses, f"status {status.value} is not in pipeline.md"


def test_readme_quick_start_has_the_two_commands() -> None:
    quick_start = _section(_read(ROOT / "README.md"), "Quick start")
    for command in ("make demo", "make test"):
        assert command in quick_start, f"README's quick start does not show `{command}`"


def test_make_targets_in_the_readme_exist() -> None:
    makefile = _read(ROOT / "Makefile")
    readme = _read(ROOT / "README.md")
    for target in set(re.findall(r"(?:`|^)make ([a-z][\w-]*)", readme, flags=re.MULTILINE)):
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), (
            f"README mentions `make {target}`, which the Makefile lacks"
        )


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    anchors = set()
    for match in re.finditer(r"^#{1,6} +(.+?) *$", _read(path), flags=re.MULTILINE):
        text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
        anchors.add(text.replace(" ", "-"))
    return anchors


@pytest.mark.parametrize(
    "page", ["README.md", *(f"docs/{p.name}" for p in sorted(DOCS.glob("*.md")))]
)
def test_relative_links_resolve(page: str) -> None:
    path = ROOT / page
    text = re.sub(r"^```.*?^```", "", _read(path), flags=re.MULTILINE | re.DOTALL)
    for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", text):
        if "://" in target or target.startswith("mailto:"):
            continue
        resolved = (path.parent / target).resolve() if target else path
        assert resolved.exists(), f"{page} links to missing {target}"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page} links to missing #{anchor} in {target}"


# -------------------------------------------------------------------- built-in stage kinds


def _builtin_plugins() -> list[tuple[str, str]]:
    """``(entry-point name, module)`` of the plugins Conveyor itself ships."""
    from importlib.metadata import entry_points

    shipped = {"conveyor-daemon", "conveyor-plugins"}
    return sorted(
        (ep.name, ep.value)
        for ep in entry_points(group="conveyor")
        if ep.dist is not None and ep.dist.name in shipped
    )


def builtin_kinds() -> dict[str, tuple[str, ...]]:
    """Each built-in stage kind and its ``with:`` parameters (the ``run``
    kind, which lists none, accepts only ``shell``)."""
    import importlib

    kinds: dict[str, tuple[str, ...]] = {}
    for _name, module_name in _builtin_plugins():
        module = importlib.import_module(module_name)
        hook = getattr(module, "conveyor_stage_kinds", None)
        for kind in hook() if hook is not None else ():
            kinds[kind.name] = tuple(getattr(module, "PARAMETERS", ("shell",)))
    return kinds


def test_the_builtin_kinds_are_found() -> None:
    assert {"run", "lint", "test", "scan"} <= set(builtin_kinds())


@pytest.mark.parametrize("kind", sorted(builtin_kinds()))
def test_builtin_kind_and_its_parameters_are_documented(kind: str) -> None:
    section = _section(_read(DOCS / "pipeline.md"), "Built-in stage kinds")
    match = re.search(
        rf"^### +`{re.escape(kind)}` *$(.*?)(?=^### |\Z)", section, flags=re.MULTILINE | re.DOTALL
    )
    assert match is not None, f"pipeline.md's built-in kinds have no '### `{kind}`' heading"
    for parameter in builtin_kinds()[kind]:
        assert f"| `{parameter}` |" in match.group(1), (
            f"with.{parameter} of the {kind} kind is not a row of its table in pipeline.md"
        )


@pytest.mark.parametrize(("name", "module"), _builtin_plugins())
def test_builtin_plugin_is_in_the_plugins_table(name: str, module: str) -> None:
    assert re.search(
        rf"^\| `{re.escape(name)}` \| `[\w-]+` \| `{re.escape(module)}` \|",
        _read(DOCS / "plugins.md"),
        flags=re.MULTILINE,
    ), f"built-in plugin {name} ({module}) is not in plugins.md's table"
