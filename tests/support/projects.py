"""A fixture repository shaped like a real Python project: its own
``pyproject.toml`` whose ruff configuration says ``fix = true``, a ``src/``
layout, a few test files, a pre-commit configuration and a test fixture
holding a key-like string.

``src/shop/cart.py`` has an unused import: ruff run with the project's
configuration removes it (the edit that issue 8 found a lint stage making
behind the build's back).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.repos import GitRepo, make_repo

PYPROJECT = """\
[project]
name = "shop"
version = "0.3.0"
requires-python = ">=3.11"
dependencies = []

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
packages = ["src/shop"]

[tool.ruff]
line-length = 100
fix = true
src = ["src", "tests"]

[tool.ruff.lint]
select = ["E", "F", "I"]

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["src"]
"""

PRE_COMMIT = """\
repos:
  - repo: https://github.com/astral-sh/ruff-pre-commit
    rev: 5c6c2fbd6a0e2ff8b0f1a8c5d4e3f2a1b0c9d8e7
    hooks:
      - id: ruff
      - id: ruff-format
"""

FILES = {
    "pyproject.toml": PYPROJECT,
    ".pre-commit-config.yaml": PRE_COMMIT,
    "README.md": "# shop\n\nA small shop library.\n",
    "src/shop/__init__.py": '"""A small shop library."""\n\n__version__ = "0.3.0"\n',
    "src/shop/cart.py": (
        '"""A shopping cart."""\n\nimport os\n\nfrom shop.pricing import price\n\n\n'
        "def total(items: list[str]) -> int:\n"
        "    return sum(price(item) for item in items)\n"
    ),
    "src/shop/pricing.py": (
        '"""Prices, in cents."""\n\nPRICES = {"apple": 30, "pear": 45}\n\n\n'
        "def price(item: str) -> int:\n    return PRICES[item]\n"
    ),
    "tests/__init__.py": "",
    "tests/test_cart.py": (
        "from shop.cart import total\n\n\ndef test_total() -> None:\n"
        '    assert total(["apple", "pear"]) == 75\n'
    ),
    "tests/test_pricing.py": (
        "from shop.pricing import price\n\n\ndef test_price() -> None:\n"
        '    assert price("apple") == 30\n'
    ),
    "tests/fixtures/keys.py": (
        '"""Fake credentials for the tests (not real ones)."""\n\n'
        'AWS_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"\n'
    ),
}

#: The file ruff (``fix = true``) rewrites.
FIXED_BY_RUFF = "src/shop/cart.py"


def ruff() -> str:
    """The ruff of the environment running the tests (absolute, so a stage
    finds it whatever its ``PATH``)."""
    return str(Path(sys.executable).parent / "ruff")


def shop_project(path: Path, pipeline: str) -> GitRepo:
    """The project in a new git repository at ``path``, with ``pipeline`` as
    its ``conveyor.yaml``."""
    return make_repo(path, {**FILES, "conveyor.yaml": pipeline})
