# One command each: `make run` (the local stack), `make test` (everything CI checks).
# Targets install only what is missing; what they cannot install they name in one line.
SHELL := /bin/bash
export UV_FROZEN := 1

# uv: on PATH, as a module of python3, or installed by `make` into a virtual environment of
# its own (.tools/uv), never into a system Python (PEP 668).
UV_LOCAL := $(CURDIR)/.tools/uv/bin/uv
UV := $(shell command -v uv 2>/dev/null || { python3 -m uv --version >/dev/null 2>&1 && echo "python3 -m uv"; } || echo "$(UV_LOCAL)")

# $(call need,COMMAND,DEBIAN PACKAGE,WHY,HOMEBREW FORMULA): install the package with apt-get
# when the command is missing and we are root on a Debian-like system; otherwise say what to
# install and stop.
define need
	@command -v $(1) >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing $(2) ($(3))"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
		else \
			echo "$(1) is needed ($(3)): apt-get install $(2), or brew install $(4)"; \
			exit 1; \
		fi; }
endef

# The local stack starts its own redis-server unless REDIS_URL names one or containers serve.
NEEDS_REDIS := $(if $(or $(REDIS_URL),$(filter containers,$(JOBS_STACK))),,redis-server)

.PHONY: help install lint typecheck compose-check test test-unit run bench bench-quick \
	bench-projector bench-read soak schema redis-server wrk promtool kubectl

help:
	@echo "make run        local stack: broker, redis, s3, projector, api, demo jobs"
	@echo "make test       install what is missing, lint, mypy strict, all tests"
	@echo "make lint       ruff format check + ruff check"
	@echo "make bench      every benchmark (about ten minutes), see docs/performance.md"

$(UV_LOCAL):
	@echo "installing uv into .tools/uv (its own virtual environment)"
	@python3 -m venv .tools/uv >/dev/null 2>&1 || { rm -rf .tools/uv; \
		echo "uv is needed: install it (pipx install uv, or brew install uv), or the package python3-venv so that make can"; \
		exit 1; }
	@.tools/uv/bin/pip install --quiet --disable-pip-version-check uv

install: $(if $(filter $(UV_LOCAL),$(UV)),$(UV_LOCAL))
	@$(UV) sync --quiet

redis-server:
	$(call need,redis-server,redis-server,the local stack starts one,redis)

wrk:
	$(call need,wrk,wrk,the read benchmark's load generator,wrk)

promtool:
	$(call need,promtool,prometheus,checks and unit-tests deploy/prometheus/alerts.yml,prometheus)

# Debian has no kubectl package: name where it comes from.
kubectl:
	@command -v kubectl >/dev/null 2>&1 || { \
		echo "kubectl is needed (renders deploy/k8s with kustomize): see kubernetes.io/docs/tasks/tools, or brew install kubectl"; \
		exit 1; }

lint: install
	$(UV) run ruff format --check .
	$(UV) run ruff check .

typecheck: install
	$(UV) run mypy

compose-check:
	$(call need,docker-compose,docker-compose,to validate docker-compose.yml without an engine,docker-compose)
	docker-compose -f docker-compose.yml config -q

test: lint typecheck compose-check promtool kubectl $(NEEDS_REDIS)
	$(UV) run pytest

test-unit: install
	$(UV) run pytest tests/unit

run: install $(NEEDS_REDIS)
	$(UV) run python -m devstack

schema: install
	$(UV) run python -m contracts.schema_export
	$(UV) run python -m api.openapi_export

# Every benchmark on the local stack: bench/results/latest.{json,md} and charts.
bench: install wrk $(NEEDS_REDIS)
	$(UV) run python -m bench.run_all

# The same at small sizes (about a minute), into bench/results/quick/: CI checks that it runs.
bench-quick: install wrk $(NEEDS_REDIS)
	$(UV) run python -m bench.run_all --quick

bench-projector: install $(NEEDS_REDIS)
	$(UV) run python -m bench.projector

bench-read: install wrk $(NEEDS_REDIS)
	$(UV) run python -m bench.read

# Ten minutes of steady events and reads (not part of `make test`).
soak: install $(NEEDS_REDIS)
	$(UV) run python -m bench.soak
