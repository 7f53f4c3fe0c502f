"""A repository shaped like a real open-source Python project, for tests that
must not pass only on a toy (issue 8).

``bookshelf`` has what the first hour on a real project meets:

* a ``pyproject.toml`` with a ``[project]`` table, a ``src/`` layout (so its
  tests need the package installed), flit as build backend, and its own ruff
  configuration, which says ``fix = true``;
* a test suite (a few files, all passing) with a ``conftest.py``;
* a ``.pre-commit-config.yaml`` pinning hooks by commit hash (detect-secrets
  takes the hashes for secrets);
* a test fixture holding key-like strings (AWS's documented example key);
* ``src/bookshelf/catalog.py`` with an unused import (F401: ruff with
  ``fix = true`` would delete it), and ``src/bookshelf/covers.py`` with a
  high-severity bandit finding (SHA-1, B324);
* a benchmark using ``random`` and ``assert``: low-severity bandit findings
  that come before every high one in report order.

:func:`make_realproject` commits it as it arrives;
:func:`first_hour_fixes` commits what its maintainers then do so that the
README's pipeline passes: drop the import, say the SHA-1 is not for
security, allowlist the fixture key and the hook hashes.

The files are made here rather than kept as files in this repository, so
Conveyor's own ruff, mypy, pytest and scanners never read them (ruff would
apply their ``fix = true``; pytest would collect their tests).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.support.repos import GitRepo, make_repo

PACKAGE = "bookshelf"
#: AWS's documented example credentials, assembled here so that no scanner
#: run on Conveyor itself finds them in this file.
FAKE_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"
FAKE_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
#: Where the first-hour fixes and findings are.
UNUSED_IMPORT = ("src/bookshelf/catalog.py", 6)  # import os
WEAK_HASH = ("src/bookshelf/covers.py", 11)  # hashlib.sha1(...)
KEY_FIXTURE = "tests/fixtures/credentials.ini"
PRE_COMMIT = ".pre-commit-config.yaml"
#: The test cases of the suite (parametrized ones counted), all passing.
TEST_COUNT = 13


def _text(source: str) -> str:
    return textwrap.dedent(source).lstrip("\n")


PYPROJECT = _text(
    """
    [build-system]
    requires = ["flit_core>=3.9,<4"]
    build-backend = "flit_core.buildapi"

    [project]
    name = "bookshelf"
    version = "0.4.1"
    description = "A small catalogue of books: ISBN checks, a JSON store, S3 export settings"
    readme = "README.md"
    requires-python = ">=3.10"
    authors = [{name = "Bookshelf contributors"}]
    classifiers = [
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
    ]
    dependencies = []

    [project.optional-dependencies]
    test = ["pytest>=7"]

    [project.urls]
    Source = "https://example.invalid/bookshelf"

    [tool.ruff]
    line-length = 100
    target-version = "py310"
    fix = true

    [tool.ruff.lint]
    select = ["E", "F", "I", "B", "UP"]

    [tool.pytest.ini_options]
    testpaths = ["tests"]
    addopts = "-ra"
    """
)

PRE_COMMIT_CONFIG = _text(
    """
    repos:
      - repo: https://github.com/pre-commit/pre-commit-hooks
        rev: 2c9f875913ee60ca25ce70243dc24d5b6415598c  # frozen: v4.6.0
        hooks:
          - id: end-of-file-fixer
          - id: trailing-whitespace
          - id: check-toml
      - repo: https://github.com/astral-sh/ruff-pre-commit
        rev: 8983acb92ee4b01924893632cf90af926fa608f0  # frozen: v0.7.0
        hooks:
          - id: ruff
            args: [--fix]
          - id: ruff-format
    """
)

INIT = _text(
    '''
    """Bookshelf: a small catalogue of books."""

    from bookshelf.catalog import Book, Catalog
    from bookshelf.isbn import is_valid_isbn13

    __all__ = ["Book", "Catalog", "is_valid_isbn13"]
    '''
)

CATALOG = _text(
    '''
    """Books and the catalogue that holds them."""

    from __future__ import annotations

    import json
    import os
    from dataclasses import asdict, dataclass, field
    from pathlib import Path

    from bookshelf.isbn import is_valid_isbn13


    @dataclass(frozen=True)
    class Book:
        isbn: str
        title: str
        authors: tuple[str, ...] = ()
        year: int | None = None


    @dataclass
    class Catalog:
        books: dict[str, Book] = field(default_factory=dict)

        def add(self, book: Book) -> None:
            if not is_valid_isbn13(book.isbn):
                raise ValueError(f"not a valid ISBN-13: {book.isbn!r}")
            self.books[book.isbn] = book

        def find(self, isbn: str) -> Book | None:
            return self.books.get(isbn)

        def by_author(self, author: str) -> list[Book]:
            wanted = author.casefold()
            found = (b for b in self.books.values() if wanted in (a.casefold() for a in b.authors))
            return sorted(found, key=lambda b: (b.year or 0, b.title))

        def save(self, path: Path) -> None:
            data = [asdict(book) for book in self.books.values()]
            path.write_text(json.dumps(data, indent=2), encoding="utf-8")

        @classmethod
        def load(cls, path: Path) -> Catalog:
            catalog = cls()
            for item in json.loads(path.read_text(encoding="utf-8")):
                item["authors"] = tuple(item["authors"])
                catalog.add(Book(**item))
            return catalog
    '''
)

ISBN = _text(
    '''
    """ISBN-13 check digits."""

    from __future__ import annotations


    def normalize(isbn: str) -> str:
        return isbn.replace("-", "").replace(" ", "")


    def check_digit(first12: str) -> int:
        total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
        return (10 - total % 10) % 10


    def is_valid_isbn13(isbn: str) -> bool:
        digits = normalize(isbn)
        if len(digits) != 13 or not digits.isdigit():
            return False
        return check_digit(digits[:12]) == int(digits[12])
    '''
)

COVERS = _text(
    '''
    """Cover images cached on disk, named after their URL."""

    from __future__ import annotations

    import hashlib
    from pathlib import Path


    def cache_name(url: str) -> str:
        """The file name a cover is cached under."""
        digest = hashlib.sha1(url.encode("utf-8")).hexdigest()
        return f"{digest}.jpg"


    def cached_cover(cache: Path, url: str) -> Path | None:
        path = cache / cache_name(url)
        return path if path.exists() else None
    '''
)

EXPORT = _text(
    '''
    """Settings for exporting the catalogue to S3-compatible storage."""

    from __future__ import annotations

    import configparser
    from pathlib import Path


    def read_credentials(path: Path, profile: str = "default") -> dict[str, str]:
        """The key id, secret and region of ``profile`` in an AWS-style INI file."""
        parser = configparser.ConfigParser()
        parser.read(path, encoding="utf-8")
        section = parser[profile]
        return {
            "key_id": section["aws_access_key_id"],
            "secret": section["aws_secret_access_key"],
            "region": section.get("region", "us-east-1"),
        }
    '''
)

BENCHMARK = _text(
    '''
    """How fast look-ups are in a large catalogue: python benchmarks/bench_catalog.py"""

    from __future__ import annotations

    import random
    import time

    from bookshelf import Book, Catalog
    from bookshelf.isbn import check_digit

    WORDS = ["river", "night", "garden", "letters", "winter", "glass", "orchard", "salt"]


    def make_isbn() -> str:
        first12 = "978" + "".join(str(random.randrange(10)) for _ in range(9))
        return first12 + str(check_digit(first12))


    def make_book() -> Book:
        title = " ".join(random.sample(WORDS, k=random.randint(1, 3))).title()
        author = random.choice(["A. Writer", "B. Author", "C. Novelist"])
        return Book(make_isbn(), title, (author,), random.randint(1900, 2024))


    def main(count: int = 50_000) -> None:
        random.seed(7)
        catalog = Catalog()
        for _ in range(count):
            catalog.add(make_book())
        assert len(catalog.books) > count * 0.99, "few duplicate ISBNs"
        wanted = random.choice(list(catalog.books))
        started = time.perf_counter()
        for _ in range(1000):
            assert catalog.find(wanted) is not None
        found = catalog.by_author(random.choice(["A. Writer", "B. Author"]))
        assert found, "every author has books"
        assert all(b.year for b in found)
        print(f"{(time.perf_counter() - started) * 1000:.1f} ms for 1000 look-ups")


    if __name__ == "__main__":
        main()
    '''
)

CONFTEST = _text(
    """
    from __future__ import annotations

    import pytest

    from bookshelf import Book, Catalog


    @pytest.fixture
    def catalog() -> Catalog:
        catalog = Catalog()
        catalog.add(Book("978-0-306-40615-7", "Signals", ("A. Writer",), 1999))
        catalog.add(Book("978-3-16-148410-0", "Rivers", ("B. Author", "A. Writer"), 2004))
        catalog.add(Book("978-1-86197-876-9", "Gardens", ("B. Author",), 1987))
        return catalog
    """
)

TEST_ISBN = _text(
    """
    from __future__ import annotations

    import pytest

    from bookshelf.isbn import check_digit, is_valid_isbn13, normalize


    def test_normalize_drops_dashes_and_spaces():
        assert normalize("978-0 306-40615-7") == "9780306406157"


    def test_check_digit():
        assert check_digit("978030640615") == 7


    @pytest.mark.parametrize("isbn", ["978-0-306-40615-7", "9783161484100"])
    def test_valid(isbn):
        assert is_valid_isbn13(isbn)


    @pytest.mark.parametrize("isbn", ["978-0-306-40615-8", "12345", "97803064061x7"])
    def test_invalid(isbn):
        assert not is_valid_isbn13(isbn)
    """
)

TEST_CATALOG = _text(
    """
    from __future__ import annotations

    import pytest

    from bookshelf import Book, Catalog


    def test_find(catalog):
        assert catalog.find("978-0-306-40615-7").title == "Signals"
        assert catalog.find("978-0-000-00000-0") is None


    def test_by_author_oldest_first(catalog):
        titles = [book.title for book in catalog.by_author("b. author")]
        assert titles == ["Gardens", "Rivers"]


    def test_rejects_a_bad_isbn():
        with pytest.raises(ValueError, match="not a valid ISBN-13"):
            Catalog().add(Book("978-0-306-40615-8", "Typo"))


    def test_save_and_load(catalog, tmp_path):
        path = tmp_path / "books.json"
        catalog.save(path)
        assert Catalog.load(path) == catalog
    """
)

TEST_COVERS = _text(
    """
    from __future__ import annotations

    from bookshelf.covers import cache_name, cached_cover


    def test_cache_name_is_stable(tmp_path):
        name = cache_name("https://example.invalid/cover/1.jpg")
        assert name == cache_name("https://example.invalid/cover/1.jpg")
        assert cached_cover(tmp_path, "https://example.invalid/cover/1.jpg") is None
        (tmp_path / name).write_bytes(b"jpeg")
        assert cached_cover(tmp_path, "https://example.invalid/cover/1.jpg") == tmp_path / name
    """
)

TEST_EXPORT = _text(
    """
    from __future__ import annotations

    from pathlib import Path

    from bookshelf.export import read_credentials

    FIXTURES = Path(__file__).parent / "fixtures"


    def test_reads_the_example_profile():
        credentials = read_credentials(FIXTURES / "credentials.ini")
        assert credentials["key_id"].startswith("AKIA")
        assert credentials["region"] == "eu-west-1"
    """
)

CREDENTIALS = _text(
    f"""
    ; S3 export tests: AWS's documented example credentials, not a real account
    [default]
    aws_access_key_id = {FAKE_KEY_ID}
    aws_secret_access_key = {FAKE_SECRET}
    region = eu-west-1
    """
)

README = _text(
    """
    # bookshelf

    A small catalogue of books: ISBN-13 checks, a JSON store and settings for
    exporting to S3-compatible storage.

        python -m venv .venv && .venv/bin/pip install -e '.[test]'
        .venv/bin/python -m pytest
    """
)

GITIGNORE = _text(
    """
    __pycache__/
    *.egg-info/
    .venv/
    .pytest_cache/
    .ruff_cache/
    build/
    dist/
    """
)


def project_files() -> dict[str, str]:
    """The project's files as it arrives, by path."""
    return {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        ".gitignore": GITIGNORE,
        PRE_COMMIT: PRE_COMMIT_CONFIG,
        "src/bookshelf/__init__.py": INIT,
        "src/bookshelf/catalog.py": CATALOG,
        "src/bookshelf/isbn.py": ISBN,
        "src/bookshelf/covers.py": COVERS,
        "src/bookshelf/export.py": EXPORT,
        "benchmarks/bench_catalog.py": BENCHMARK,
        "tests/conftest.py": CONFTEST,
        "tests/test_isbn.py": TEST_ISBN,
        "tests/test_catalog.py": TEST_CATALOG,
        "tests/test_covers.py": TEST_COVERS,
        "tests/test_export.py": TEST_EXPORT,
        KEY_FIXTURE: CREDENTIALS,
    }


def make_realproject(path: Path, pipeline: str | None = None) -> GitRepo:
    """A git repository at ``path`` (which must not exist) holding the
    project as it arrives, with ``pipeline`` as its ``conveyor.yaml``."""
    files = project_files()
    if pipeline is not None:
        files["conveyor.yaml"] = pipeline
    return make_repo(path, files)


ALLOWLISTED = "  # pragma: allowlist secret"


def fixed_files() -> dict[str, str]:
    """What :func:`first_hour_fixes` changes, by path."""
    files = project_files()
    hooks = "".join(
        line + ALLOWLISTED + "\n" if line.strip().startswith("rev:") else line + "\n"
        for line in files[PRE_COMMIT].splitlines()
    )
    credentials = "".join(
        "# pragma: allowlist nextline secret\n" + line + "\n"
        if line.startswith("aws_")
        else line + "\n"
        for line in files[KEY_FIXTURE].splitlines()
    )
    return {
        "src/bookshelf/catalog.py": files["src/bookshelf/catalog.py"].replace("import os\n", ""),
        "src/bookshelf/covers.py": files["src/bookshelf/covers.py"].replace(
            'url.encode("utf-8"))', 'url.encode("utf-8"), usedforsecurity=False)'
        ),
        PRE_COMMIT: hooks,
        KEY_FIXTURE: credentials,
    }


def first_hour_fixes(repo: GitRepo) -> str:
    """Commit what the maintainers do after the first run: remove the unused
    import, mark the SHA-1 as not used for security, and allowlist the
    example key and the hook hashes for detect-secrets. Returns the commit."""
    return repo.commit(fixed_files(), "lint and scan clean-up")
