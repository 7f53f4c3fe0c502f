# Conveyor — one command per job. Each bootstraps its own environment.
UV := scripts/uv.sh
# Let Python cache the workspace's own compiled modules: the tests start a few
# hundred daemons and CLI processes, each importing them.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test lint typecheck proto check-proto bench bootstrap clean

bootstrap:
	@scripts/bootstrap.sh

## Run the demo pipeline end to end on a throwaway daemon (SQLite, local executor).
demo: bootstrap
	@$(UV) run --frozen python examples/demo.py

## The whole test suite (lint, types, generated code, unit, integration, end to end).
test: bootstrap
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy
	$(UV) run --frozen python scripts/gen_proto.py --check
	$(UV) run --frozen pytest -n 2

lint: bootstrap
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: bootstrap
	$(UV) run --frozen mypy

## Regenerate the gRPC code in clients/src/conveyor/v1 from proto/.
proto: bootstrap
	$(UV) run --frozen python scripts/gen_proto.py

## Benchmarks; figures are printed and written to bench/results/*.json.
bench: bootstrap
	$(UV) run --frozen python -m bench

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache bench/results
