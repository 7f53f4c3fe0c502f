#!/bin/sh
# Regenerates the real tool outputs in this folder from the sample sources in
# workspace/ and junit/ (see README.md). Run from anywhere: sh regenerate.sh
# Exit codes are ignored: the tools exit non-zero because they find problems.
set -u
cd "$(dirname "$0")/workspace" || exit 1

SOURCES="src/shop/__init__.py src/shop/admin.py src/shop/cart.py report.ipynb"
# shellcheck disable=SC2086
uv run ruff check --no-cache --output-format json $SOURCES > ../ruff.json
# shellcheck disable=SC2086
uv run ruff check --no-cache --output-format sarif $SOURCES > ../ruff.sarif
uv run bandit -q -r . -f json -o ../bandit.json
uv run detect-secrets scan --all-files --exclude-files '\.ruff_cache' . > ../detect-secrets.json

cd ../junit || exit 1
SAMPLE_FIRST_RUN=1 uv run pytest sample_suite.py -q -p no:cacheprovider -o addopts= \
    --junitxml=pytest-junit.xml > /dev/null
uv run pytest sample_suite.py::test_totals sample_suite.py::test_uses_database \
    sample_suite.py::test_flaky -q -p no:cacheprovider -o addopts= \
    --junitxml=pytest-junit-rerun.xml > /dev/null
rm -rf __pycache__
exit 0
