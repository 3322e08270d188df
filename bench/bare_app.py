"""The baseline of `bench.read`: a bare FastAPI route answering pre-serialised bytes.

Same path shape as the real route, no validation, no auth, no Redis, no presigning: it only
returns the body read from the file named by `BARE_BODY_PATH` (one real response of
`GET /v1/jobs/{id}`, captured by the bench). Served exactly as `python -m api` serves the api:

    BARE_BODY_PATH=body.json BARE_PORT=8001 python -m bench.bare_app
"""

from __future__ import annotations

import os
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response

BODY_ENV = "BARE_BODY_PATH"
PORT_ENV = "BARE_PORT"


def create_app() -> FastAPI:
    body = Path(os.environ[BODY_ENV]).read_bytes()
    app = FastAPI(title="bare baseline")

    @app.get("/v1/jobs/{id}")
    async def get_job(id: str) -> Response:
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
