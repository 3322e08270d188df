# One command each: `make run` (local stack), `make test` (everything CI checks).
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
export UV_FROZEN := 1

.PHONY: help install lint typecheck compose-check test test-unit run bench bench-quick bench-projector bench-read soak schema

help:
	@echo "make run        local stack: broker, redis, s3, projector, api, demo jobs"
	@echo "make test       install what is missing, lint, mypy strict, all tests"
	@echo "make lint       ruff format check + ruff check"

install:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@$(UV) sync --quiet

lint: install
	$(UV) run ruff format --check .
	$(UV) run ruff check .

typecheck: install
	$(UV) run mypy

compose-check:
	@command -v docker-compose >/dev/null 2>&1 || { \
		echo "installing docker-compose (to validate docker-compose.yml)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; }
	docker-compose -f docker-compose.yml config -q

test: lint typecheck compose-check
	$(UV) run pytest

test-unit: install
	$(UV) run pytest tests/unit

run: install
	$(UV) run python -m tests.stack

schema: install
	$(UV) run python -m contracts.schema_export

# Every benchmark on the local stack: bench/results/latest.{json,md} and charts (~10 min).
bench: install
	@command -v wrk >/dev/null 2>&1 || { \
		echo "installing wrk (the read benchmark's load generator)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null \
		|| echo "wrk not installed: the read benchmark uses its slower asyncio client"; }
	$(UV) run python -m bench.run_all

# The same at small sizes (~1 min), into bench/results/quick/: CI checks that it all runs.
bench-quick: install
	$(UV) run python -m bench.run_all --quick

bench-projector: install
	$(UV) run python -m bench.projector

bench-read: install
	$(UV) run python -m bench.read

# Ten minutes of steady events and reads (not part of `make test`).
soak: install
	$(UV) run python -m bench.soak
