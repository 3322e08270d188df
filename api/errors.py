"""The contract's error responses (CONTRACT §3), pre-serialised once."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from api.auth import Unauthenticated
from contracts.http import ErrorBody, ErrorDetail

JSON = "application/json"
RETRY_AFTER_SECONDS = "1"


def error_bytes(code: str, message: str) -> bytes:
    body = ErrorBody(detail=ErrorDetail(code=code, message=message))  # type: ignore[arg-type]
    return body.model_dump_json().encode()


# One constant body for "missing" and "another tenant's": byte-identical by construction.
JOB_NOT_FOUND = error_bytes("JOB_NOT_FOUND", "Job not found.")
UNAVAILABLE = error_bytes("UNAVAILABLE", "The job store is unavailable; retry shortly.")


def not_found() -> Response:
    return Response(JOB_NOT_FOUND, status_code=404, media_type=JSON)


def unavailable() -> Response:
    return Response(
        UNAVAILABLE, status_code=503, media_type=JSON, headers={"Retry-After": RETRY_AFTER_SECONDS}
    )


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
