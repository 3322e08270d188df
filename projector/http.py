"""The projector's HTTP endpoints (CONTRACT §5): `/healthz`, `/readyz`, `/metrics`.

They are plain ASGI routes of FastStream's `AsgiFastStream`, served by uvicorn on
`PROJECTOR_HTTP_PORT`: the consumer and the endpoints share one event loop and one lifespan,
so "ready" speaks of the very consumer, Redis client and producer that project.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from faststream.asgi import AsgiResponse
from faststream.asgi.types import ASGIApp, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from projector.metrics import Assignment, ProjectorMetrics

# A probe answers within this many seconds, whatever hangs.
PROBE_TIMEOUT_SECONDS = 1.0

Check = Callable[[], Awaitable[bool]]


def _json(status: int, body: dict[str, Any]) -> AsgiResponse:
    return AsgiResponse(
        json.dumps(body).encode(), status, headers={"Content-Type": "application/json"}
    )


def _route(answer: Callable[[], Awaitable[AsgiResponse]]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") not in ("GET", "HEAD"):
            await _json(405, {"status": "method not allowed"})(scope, receive, send)
            return
        await (await answer())(scope, receive, send)

    return app


async def _passes(check: Check) -> bool:
    try:
        return await asyncio.wait_for(check(), PROBE_TIMEOUT_SECONDS)
    except Exception:  # a probe reports; it never raises
        return False


def health_routes(
    checks: dict[str, Check],
    metrics: ProjectorMetrics,
    consumer: Callable[[], Assignment | None],
) -> list[tuple[str, ASGIApp]]:
    """`checks` name what readiness needs (broker, redis, assignment); each runs with a
    timeout and concurrently, and a failing one is named in the 503 body."""

    async def healthz() -> AsgiResponse:
        return _json(200, {"status": "ok"})

    async def readyz() -> AsgiResponse:
        names = list(checks)
        results = await asyncio.gather(*(_passes(checks[name]) for name in names))
        failing = [name for name, passed in zip(names, results, strict=True) if not passed]
        if failing:
            return _json(503, {"status": "not ready", "failing": failing})
        return _json(200, {"status": "ready"})

    async def scrape() -> AsgiResponse:
        await metrics.refresh_lag(consumer())
        return AsgiResponse(
            generate_latest(metrics.registry), 200, headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    return [
        ("/healthz", _route(healthz)),
        ("/readyz", _route(readyz)),
        ("/metrics", _route(scrape)),
    ]
