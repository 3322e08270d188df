# One image for every process of the service; the command picks the process:
#   python -m projector run      the consumer
#   python -m api                the HTTP reader
# With the `otel` extra: traces go out when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_TRACES_EXPORTER) is set.
# It runs on a read-only root filesystem: the bytecode is compiled here, at build time, and the
# processes write no file (with API_WORKERS > 1, mount a writable PROMETHEUS_MULTIPROC_DIR).
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
WORKDIR /app
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/app/.venv
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --extra otel --no-install-project
COPY contracts ./contracts
COPY projector ./projector
COPY api ./api
RUN uv sync --frozen --no-dev --extra otel
# The project is installed editable (its sources stay in /app), where UV_COMPILE_BYTECODE does
# not reach: compile them too. checked-hash: valid whatever the files' timestamps become.
RUN python -m compileall -q --invalidation-mode checked-hash contracts projector api

FROM python:3.11-slim
# A numeric uid and gid, so that an orchestrator can check that it is not root (runAsNonRoot).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home /app --no-create-home app
WORKDIR /app
COPY --from=build --chown=app:app /app /app
# In a container, loopback is unreachable from outside it: both HTTP listeners (the api's and
# the projector's health/metrics one) default to every interface here.
# PYTHONDONTWRITEBYTECODE: nothing to write (compiled above), and the root may be read-only.
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    API_HOST=0.0.0.0 PROJECTOR_HTTP_HOST=0.0.0.0
USER 10001:10001
EXPOSE 8000 8001
CMD ["python", "-m", "api"]
