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

# A readiness check: None when it passes, else why not.
Check = Callable[[], Awaitable[str | None]]


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


async def _failure(check: Check) -> str | None:
    try:
        return await asyncio.wait_for(check(), PROBE_TIMEOUT_SECONDS)
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT_SECONDS:.0f} s"
    except Exception as error:  # a probe reports; it never raises
        return f"{type(error).__name__}: {error}".splitlines()[0][:300]


def health_routes(
    checks: dict[str, Check],
    metrics: ProjectorMetrics,
    consumer: Callable[[], Assignment | None],
) -> list[tuple[str, ASGIApp]]:
    """`checks` name what readiness needs (broker, redis, writes, dead letters); each runs with
    a timeout and concurrently, and a failing one is named, with its reason, in the 503 body.
    A ready projector with no partition assigned (more replicas than partitions) says it is
    idle: it is ready to take partitions over, and must not block a rolling update."""

    async def healthz() -> AsgiResponse:
        return _json(200, {"status": "ok"})

    async def failing() -> dict[str, str]:
        names = list(checks)
        results = await asyncio.gather(*(_failure(checks[name]) for name in names))
        return {name: reason for name, reason in zip(names, results, strict=True) if reason}

    async def readyz() -> AsgiResponse:
        reasons = await failing()
        if reasons:
            body = {"status": "not ready", "failing": list(reasons), "reasons": reasons}
            return _json(503, body)
        assigned = consumer()
        partitions = sorted(tp.partition for tp in assigned.assignment()) if assigned else []
        if not partitions:
            return _json(200, {"status": "ready", "idle": "no partition assigned"})
        return _json(200, {"status": "ready", "partitions": partitions})

    async def scrape() -> AsgiResponse:
        await metrics.refresh_lag(consumer())
        metrics.ready.set(0 if await failing() else 1)
        return AsgiResponse(
            generate_latest(metrics.registry), 200, headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    return [
        ("/healthz", _route(healthz)),
        ("/readyz", _route(readyz)),
        ("/metrics", _route(scrape)),
    ]
