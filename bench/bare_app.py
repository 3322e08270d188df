"""The baselines of `bench.read`: bare FastAPI routes answering pre-serialised bytes.

Same path shape as the real route, no validation, no auth, no presigning. Both return the
body read from the file named by `BARE_BODY_PATH` (one real response of `GET /v1/jobs/{id}`,
captured by the bench):

- `GET /v1/jobs/{id}`: nothing else (the ceiling: HTTP + routing);
- `GET /hgetall/v1/jobs/{id}`: first one `HGETALL` of the job's hash (the key the api reads:
  `job_key(BARE_VERSION, BARE_TENANT, id)`) with redis-py's asyncio client, one client made
  at startup with its default pool; 404 when the hash is absent. What a careful team would
  write by hand. Served only when `REDIS_URL` is set.

Served exactly as `python -m api` serves the api:

    BARE_BODY_PATH=body.json BARE_PORT=8001 [REDIS_URL=redis://...] python -m bench.bare_app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response
from redis.asyncio import Redis

from contracts.job_state import DEFAULT_VERSION, job_key

BODY_ENV = "BARE_BODY_PATH"
PORT_ENV = "BARE_PORT"
REDIS_ENV = "REDIS_URL"
TENANT_ENV = "BARE_TENANT"
VERSION_ENV = "BARE_VERSION"
HGETALL_PREFIX = "/hgetall"


def create_app() -> FastAPI:
    body = Path(os.environ[BODY_ENV]).read_bytes()
    redis_url = os.environ.get(REDIS_ENV)
    tenant = os.environ.get(TENANT_ENV, "acme")
    version = os.environ.get(VERSION_ENV, DEFAULT_VERSION)
    clients: list[Redis] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if redis_url:
            clients.append(Redis.from_url(redis_url))
        try:
            yield
        finally:
            for client in clients:
                await client.aclose()

    app = FastAPI(title="bare baseline", lifespan=lifespan)

    @app.get("/v1/jobs/{id}")
    async def get_job(id: str) -> Response:
        return Response(content=body, media_type="application/json")

    if redis_url:

        @app.get(HGETALL_PREFIX + "/v1/jobs/{id}")
        async def get_job_hgetall(id: str) -> Response:
            fields = await clients[0].hgetall(job_key(version, tenant, id))
            if not fields:
                return Response(status_code=404)
            return Response(content=body, media_type="application/json")

    return app


def main() -> None:
    # The same server settings as `api/__main__.py`.
    uvicorn.run(
        "bench.bare_app:create_app",
        factory=True,
        host="127.0.0.1",
        port=int(os.environ.get(PORT_ENV, "8001")),
        workers=1,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="info",
    )


if __name__ == "__main__":
    main()
