"""The api process: a FastAPI app built by a factory, its clients opened in the lifespan."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response
from opentelemetry.trace import TracerProvider
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from api.access_log import AccessLog
from api.auth import TokenVerifier, Unauthenticated, jwt_config
from api.dependencies import Services
from api.errors import (
    PROBE_PATHS,
    PUBLIC_PATHS,
    authenticate_first,
    on_store_unavailable,
    on_too_many_waiters,
    on_unauthenticated,
)
from api.fast_path import FastJobReads
from api.metrics import ApiMetrics, RequestMetrics
from api.near_cache import NearCache
from api.notifier import ChangeNotifier
from api.presign import Presigner
from api.reader import JobReader
from api.redis_client import UNAVAILABLE_ERRORS, LazyRedis
from api.render import BodyCache
from api.routes import router
from api.settings import ApiSettings
from api.waiters import TooManyWaiters, WaiterLimits
from contracts.pauses import watch_gc, watch_loop_lag
from contracts.tracing import configure_tracing, tracer_of


class JobsApi(FastAPI):
    """The FastAPI app with its entrance in front of Starlette's middleware stack: the request
    metrics (which time and log every request) and the fast path (`api.fast_path`), which
    answers a routine poll without the layers of that stack - error pages, body limits,
    exception telemetry - none of which such a poll needs. Everything else goes on to FastAPI
    (`behind`). An error the fast path does not answer itself reaches the server, which answers
    500, as Starlette's error middleware would."""

    _entrance: ASGIApp | None = None

    def enter_through(self, entrance: ASGIApp) -> None:
        self._entrance = entrance

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._entrance is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await self._entrance(scope, receive, send)

    async def behind(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def create_app(
    settings: ApiSettings | None = None, tracer_provider: TracerProvider | None = None
) -> JobsApi:
    settings = settings or ApiSettings()
    if tracer_provider is None:
        configure_tracing("jobs-api")
    tracer = tracer_of("api", tracer_provider)
    verifier = TokenVerifier(jwt_config(settings))
    presigner = Presigner.from_boto3(None, settings.aws_region, settings.s3_endpoint_url)
    metrics = ApiMetrics()
    access_log = AccessLog() if settings.api_access_log else None
    waiters = WaiterLimits(
        settings.api_max_waiters, settings.api_max_waiters_per_tenant, metrics.long_polls.set
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = LazyRedis(settings.redis_url)  # a server or a cluster, told on first use
        notifier = ChangeNotifier(redis)
        cache = None
        if settings.api_near_cache_bytes > 0:
            cache = notifier.cache = NearCache(
                settings.api_near_cache_bytes,
                settings.api_near_cache_max_age_seconds,
                keep=notifier.keep,
                release=notifier.release,
            )
            metrics.watch_near_cache(cache)
        reader = JobReader(
            redis,
            settings.active_version_ttl_seconds,
            tracer,
            cache,
            metrics.redis_read_seconds.observe,
        )
        app.state.services = Services(
            reader=reader,
            verifier=verifier,
            presigner=presigner,
            notifier=notifier,
            presign_ttl_seconds=settings.presign_ttl_seconds,
            presign_bucket_seconds=settings.presign_bucket_seconds,
            bodies=BodyCache(settings.api_body_cache_bytes),
            metrics=metrics,
            storage=settings.storage_rules,
            waiters=waiters,
        )
        # What start-up made lives as long as the process: out of the collector's sight, so
        # that a full collection does not walk it again in the middle of a request.
        gc.collect()
        gc.freeze()
        unwatch_gc = watch_gc(
            lambda seconds, generation: metrics.gc_pause_seconds.labels(generation).observe(seconds)
        )
        loop_lag = asyncio.create_task(watch_loop_lag(metrics.event_loop_lag_seconds.observe))
        try:
            yield
        finally:
            unwatch_gc()
            loop_lag.cancel()
            await notifier.stop()
            await redis.aclose()
            if access_log is not None:
                access_log.flush()

    app = JobsApi(
        title="Jobs read API",
        version="1.0.0",
        description="Where is my job? Reads job projections, presigning artifact URLs.",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry looks up the global providers on every request, a
        # few microseconds of a read's hundred: off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
        openapi_url="/openapi.json" if settings.api_docs else None,
        # No 307 to a slash-less path: it would answer before authentication, with a
        # Location built from the client's Host header.
        redirect_slashes=False,
    )
    app.include_router(router)
    app.enter_through(
        RequestMetrics(FastJobReads(app.behind), metrics, access_log, tracer),
    )
    app.add_exception_handler(Unauthenticated, on_unauthenticated)
    app.add_exception_handler(TooManyWaiters, on_too_many_waiters)
    for unavailable in UNAVAILABLE_ERRORS:
        app.add_exception_handler(unavailable, on_store_unavailable)
    public = PUBLIC_PATHS if settings.api_docs else PROBE_PATHS
    app.add_exception_handler(StarletteHTTPException, authenticate_first(verifier, public))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        """The process is up."""
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        """Redis answers: reads can be served. A Redis error becomes the 503 of
        `on_store_unavailable`, with Retry-After."""
        services: Services = request.app.state.services
        await services.reader.ping()
        return Response(b'{"status":"ready"}', media_type="application/json")

    return app
