# One image for every process of the service; the command picks the process:
#   python -m projector run      the consumer
#   python -m api                the HTTP reader
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
WORKDIR /app
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/app/.venv
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY contracts ./contracts
COPY projector ./projector
COPY api ./api
RUN uv sync --frozen --no-dev

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /app app
WORKDIR /app
COPY --from=build --chown=app:app /app /app
# In a container, loopback is unreachable from outside it: both HTTP listeners (the api's and
# the projector's health/metrics one) default to every interface here.
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 API_HOST=0.0.0.0 PROJECTOR_HTTP_HOST=0.0.0.0
USER app
EXPOSE 8000 8001
CMD ["python", "-m", "api"]
