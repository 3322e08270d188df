"""The api's Prometheus metrics (CONTRACT §5) and the middleware that times every request.

`api_request_seconds{route,status}` is labelled by route template, not by path: a path is
chosen by the client, and a label per job id (or per probe of a scanner) would grow the
series without bound. Anything that is not one of our routes counts as `other`.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PUBLIC_PATHS
from contracts.build import register_build_info
from contracts.http import JOB_ROUTE, JOBS_PATH

# A read takes a fraction of a millisecond; a long-poll up to 25 s.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 25)
# One presigned URL: a few microseconds.
PRESIGN_BUCKETS = (2e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._requests = Histogram(
            "api_request_seconds",
            "HTTP requests by route template and status, from the first byte of the request "
            "to the last of the response.",
            ["route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self._observers: dict[tuple[str, int], Any] = {}  # children, bound once per pair
        self.presign_seconds = Histogram(
            "api_presign_seconds",
            "Presigning one artifact URL (bodies served from the body cache sign nothing).",
            buckets=PRESIGN_BUCKETS,
            registry=self.registry,
        )
        register_build_info("api", self.registry)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        child = self._observers.get((route, status))
        if child is None:
            child = self._observers[(route, status)] = self._requests.labels(route, str(status))
        child.observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_of(path: str) -> str:
    if path.startswith(JOBS_PATH) and "/" not in path[len(JOBS_PATH) :]:
        return JOB_ROUTE
    return path if path in PUBLIC_PATHS else "other"


class RequestMetrics:
    """Outermost middleware: times every request, including those the fast path answers,
    and serves `/metrics` itself (public, like the probes: CONTRACT §5)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == "/metrics" and scope["method"] in ("GET", "HEAD"):
            await self._scrape(send)
            return
        started = time.perf_counter()
        status = 500  # when the app fails before it answers

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.observe_request(route_of(path), status, time.perf_counter() - started)

    async def _scrape(self, send: Send) -> None:
        body = self.metrics.exposition()
        headers = [
            (b"content-type", CONTENT_TYPE_LATEST.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
