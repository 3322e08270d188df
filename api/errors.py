"""The contract's error responses (CONTRACT §3), pre-serialised once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.auth import TokenVerifier, Unauthenticated
from contracts.http import ErrorBody, ErrorDetail

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]
# Served without a token: probes and, with API_DOCS on, the API's own description.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
DOC_PATHS = frozenset({"/openapi.json", "/docs", "/redoc"})
PUBLIC_PATHS = PROBE_PATHS | DOC_PATHS

JSON = "application/json"
RETRY_AFTER_SECONDS = "1"


def error_bytes(code: str, message: str) -> bytes:
    body = ErrorBody(detail=ErrorDetail(code=code, message=message))  # type: ignore[arg-type]
    return body.model_dump_json().encode()


# One constant body for "missing" and "another tenant's": byte-identical by construction.
JOB_NOT_FOUND = error_bytes("JOB_NOT_FOUND", "Job not found.")
UNAVAILABLE = error_bytes("UNAVAILABLE", "The job store is unavailable; retry shortly.")
TOO_MANY_REQUESTS = error_bytes(
    "TOO_MANY_REQUESTS", "Too many long-polls are waiting; retry after Retry-After seconds."
)


def not_found() -> Response:
    return Response(JOB_NOT_FOUND, status_code=404, media_type=JSON)


def unavailable() -> Response:
    return Response(
        UNAVAILABLE, status_code=503, media_type=JSON, headers={"Retry-After": RETRY_AFTER_SECONDS}
    )


def too_many_requests() -> Response:
    return Response(
        TOO_MANY_REQUESTS,
        status_code=429,
        media_type=JSON,
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


async def on_too_many_waiters(_request: Request, _exc: Exception) -> Response:
    return too_many_requests()


async def on_unauthenticated(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Unauthenticated)
    challenge = 'Bearer error="invalid_token"' if exc.token_given else "Bearer"
    return Response(
        error_bytes("UNAUTHENTICATED", exc.message),
        status_code=401,
        media_type=JSON,
        headers={"WWW-Authenticate": challenge},
    )


async def on_store_unavailable(_request: Request, _exc: Exception) -> Response:
    return unavailable()


def authenticate_first(verifier: TokenVerifier, public: frozenset[str]) -> ExceptionHandler:
    """Routing errors (no such path or method) answer 401 to a request without a valid token,
    as every other path does (CONTRACT §3: authentication comes first), except on the paths
    served without one (`public`)."""

    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if request.url.path not in public:
            try:
                await verifier.tenant_of(request.headers.get("authorization"))
            except Unauthenticated as unauthenticated:
                return await on_unauthenticated(request, unauthenticated)
        return await http_exception_handler(request, exc)

    return handle
