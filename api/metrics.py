"""The api's Prometheus metrics (CONTRACT §5) and the middleware that times every request.

`api_request_seconds{route,status}` is labelled by route template, not by path: a path is
chosen by the client, and a label per job id (or per probe of a scanner) would grow the
series without bound. Anything that is not one of our routes counts as `other`. A long-poll
(`?wait=` above 0) has a label of its own, `/v1/jobs/{id}?wait`: its seconds are mostly the
wait the client asked for, and would drown the read latency.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Tracer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.access_log import AccessLog
from api.errors import PUBLIC_PATHS
from api.near_cache import NearCache
from contracts.build import register_build_info, register_runtime_collectors
from contracts.http import JOB_ROUTE, JOBS_PATH
from contracts.tracing import context_of

# A read takes a fraction of a millisecond; a long-poll up to 25 s.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 25)
# One Redis round trip, a GC pause, a late wake-up of the event loop: 50 µs to a second.
PAUSE_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1)
# One presigned URL: a few microseconds.
PRESIGN_BUCKETS = (2e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3)


def multiprocess_dir() -> str | None:
    """Where the workers of `API_WORKERS > 1` keep their samples (prometheus_client's
    multiprocess mode, chosen when it is imported): any worker's scrape sums them all."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


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
        self.refused_artifacts = Counter(
            "api_refused_artifacts",
            "Stored artifact references left out of a response because they are outside the "
            "storage rules (ARTIFACT_BUCKETS, ARTIFACT_KEY_PREFIX); counted when a body is "
            "rendered.",
            registry=self.registry,
        )
        self.long_polls = Gauge(
            "api_long_polls",
            "Long-polls held at this moment (API_MAX_WAITERS caps them).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.redis_read_seconds = Histogram(
            "api_redis_read_seconds",
            "One read of a job from Redis (HGETALL), the wait for a connection included; reads "
            "answered by the near cache make none.",
            buckets=PAUSE_BUCKETS,
            registry=self.registry,
        )
        self.gc_pause_seconds = Histogram(
            "api_gc_pause_seconds",
            "Collections of Python's cyclic garbage collector, by generation: the process "
            "answers nothing meanwhile.",
            ["generation"],
            buckets=PAUSE_BUCKETS,
            registry=self.registry,
        )
        self.event_loop_lag_seconds = Histogram(
            "api_event_loop_lag_seconds",
            "How late a timer of the event loop fires: what any request waiting on the loop "
            "waits for beyond its own work.",
            buckets=PAUSE_BUCKETS,
            registry=self.registry,
        )
        self._near_cache: _NearCacheCollector | None = None
        register_build_info("api", self.registry)
        if multiprocess_dir() is None:  # one process: its own runtime; else per worker, apart
            register_runtime_collectors(self.registry)

    def watch_near_cache(self, cache: NearCache) -> None:
        """The near cache's figures, read at each scrape (one process only: with
        API_WORKERS > 1 each worker has its own cache and these are not exported)."""
        if multiprocess_dir() is not None:
            return
        if self._near_cache is None:
            self._near_cache = _NearCacheCollector(cache)
            self.registry.register(self._near_cache)
        self._near_cache.cache = cache  # an app started again: its new cache

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        child = self._observers.get((route, status))
        if child is None:
            child = self._observers[(route, status)] = self._requests.labels(route, str(status))
        child.observe(seconds)

    def exposition(self) -> bytes:
        if multiprocess_dir() is None:
            return generate_latest(self.registry)
        workers = CollectorRegistry()
        MultiProcessCollector(workers)  # type: ignore[no-untyped-call]  # untyped upstream
        return generate_latest(workers)


class _NearCacheCollector(Collector):
    def __init__(self, cache: NearCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        cache = self.cache
        yield CounterMetricFamily(
            "api_near_cache_hits", "Reads answered by the near cache.", cache.hits
        )
        yield CounterMetricFamily(
            "api_near_cache_misses", "Reads the near cache sent to Redis.", cache.misses
        )
        yield CounterMetricFamily(
            "api_near_cache_flushes",
            "Times the near cache was emptied because the change subscriber broke or reconnected.",
            cache.flushes,
        )
        yield GaugeMetricFamily(
            "api_near_cache_bytes", "What the near cache holds, in bytes.", cache.size_bytes
        )
        yield GaugeMetricFamily("api_near_cache_jobs", "Jobs the near cache holds.", len(cache))


LONG_POLL_ROUTE = JOB_ROUTE + "?wait"
_NO_WAIT = re.compile(rb"(?:^|&)wait=0*(?:\.0*)?(?:&|$)")


def route_of(path: str, query: bytes = b"") -> str:
    if path.startswith(JOBS_PATH) and "/" not in path[len(JOBS_PATH) :]:
        if b"wait=" in query and not _NO_WAIT.search(query):
            return LONG_POLL_ROUTE
        return JOB_ROUTE
    return path if path in PUBLIC_PATHS else "other"


TENANT_STATE = "tenant"


def remember_tenant(scope: Scope, tenant_id: str) -> None:
    """For the access log: the tenant of this request's valid token."""
    scope.setdefault("state", {})[TENANT_STATE] = tenant_id


class RequestMetrics:
    """Outermost middleware: times every request, including those the fast path answers,
    writes its access log line, and serves `/metrics` itself (public, like the probes:
    CONTRACT §5). The entrance that verified a token leaves its tenant in the scope's state
    (`remember_tenant`)."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: ApiMetrics,
        access_log: AccessLog | None,
        tracer: Tracer | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.tracer = tracer  # a span per request, continuing the client's `traceparent`

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

        route = route_of(path, scope.get("query_string", b""))
        span = None if self.tracer is None else self._span(scope, route)
        try:
            if span is None:
                await self.app(scope, receive, send_and_note)
            else:
                with trace.use_span(span, end_on_exit=False):
                    await self.app(scope, receive, send_and_note)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.observe_request(route, status, seconds)
            if self.access_log is not None:
                tenant = scope.get("state", {}).get(TENANT_STATE)
                self.access_log.request(scope["method"], route, status, tenant, seconds)
            if span is not None:
                span.set_attribute("http.response.status_code", status)
                span.end()

    def _span(self, scope: Scope, route: str) -> Span:
        assert self.tracer is not None
        traceparent = next(
            (value for name, value in scope["headers"] if name == b"traceparent"), None
        )
        return self.tracer.start_span(
            f"{scope['method']} {route}",
            context=context_of(traceparent),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": scope["method"], "http.route": route},
        )

    async def _scrape(self, send: Send) -> None:
        body = self.metrics.exposition()
        headers = [
            (b"content-type", CONTENT_TYPE_LATEST.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
