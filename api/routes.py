"""`GET /v1/jobs/{id}`: a job's header, final manifest and latest public event (CONTRACT §3)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import Response

from api.dependencies import ServicesDep, TenantDep
from api.errors import JSON
from api.read_job import MAX_WAIT_SECONDS, read_job
from contracts.events import ULID_PATTERN
from contracts.http import JOB_ROUTE, ErrorBody, JobResponse

router = APIRouter(tags=["jobs"])


def _header(description: str, **schema: Any) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string", **schema}}


_ETAG = _header("The job's version as readers see it: send it back in `If-None-Match`.")
_RETRY_AFTER = _header("Seconds to wait before trying again.", pattern=r"^\d+$")


def _error(code: str, message: str, description: str, **headers: Any) -> dict[str, Any]:
    example = {"detail": {"code": code, "message": message}}
    response: dict[str, Any] = {
        "model": ErrorBody,
        "description": description,
        "content": {JSON: {"example": example}},
    }
    if headers:
        response["headers"] = headers
    return response


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The job.",
        "headers": {
            "ETag": _ETAG,
            "Cache-Control": _header("`private, no-cache`: revalidate with the ETag."),
        },
    },
    304: {
        "description": "Not modified: the `If-None-Match` ETag is still current.",
        "headers": {"ETag": _ETAG},
    },
    401: _error(
        "UNAUTHENTICATED",
        "The token has expired.",
        "No token, or a malformed, badly signed or expired one, or one without the tenant claim.",
        **{"WWW-Authenticate": _header('`Bearer`, or `Bearer error="invalid_token"`.')},
    ),
    404: _error(
        "JOB_NOT_FOUND",
        "Job not found.",
        "JOB_NOT_FOUND when the job doesn't exist OR belongs to another tenant.",
    ),
    429: _error(
        "TOO_MANY_REQUESTS",
        "Too many long-polls are waiting; retry after Retry-After seconds.",
        "Too many long-polls held at once (API_MAX_WAITERS, API_MAX_WAITERS_PER_TENANT).",
        **{"Retry-After": _RETRY_AFTER},
    ),
    503: _error(
        "UNAVAILABLE",
        "The job store is unavailable; retry shortly.",
        "The job store is unreachable; retry after `Retry-After` seconds.",
        **{"Retry-After": _RETRY_AFTER},
    ),
}


@router.get(
    JOB_ROUTE,
    response_model=JobResponse,
    summary="Get one job's detail",
    description="Return a job's header, final result manifest, and latest public event.\n\n"
    "404 JOB_NOT_FOUND when the job doesn't exist OR belongs to another tenant.\n\n"
    "Pollers: send the last `ETag` in `If-None-Match` to get `304` while nothing changed, "
    "or hold the request with `?wait=<seconds>&after_seq=<seq>` until "
    "`latest_event.seq` passes `after_seq`.",
    responses=_RESPONSES,
)
async def get_job(
    tenant_id: TenantDep,
    services: ServicesDep,
    id: Annotated[
        str,
        Path(
            pattern=ULID_PATTERN,
            description="The job's ULID public_id (any case).",
            examples=["01JDQ8Z3M4W8K2V7T6R5N4P3Q2"],
        ),
    ],
    wait: Annotated[
        float,
        Query(ge=0, le=MAX_WAIT_SECONDS, description="Seconds to hold the request (≤ 25)."),
    ] = 0,
    after_seq: Annotated[
        int,
        Query(ge=0, description="Return as soon as `latest_event.seq` is greater than this."),
    ] = 0,
    if_none_match: Annotated[
        str | None, Header(description="An ETag from an earlier read.")
    ] = None,
) -> Response:
    return await read_job(services, tenant_id, id.upper(), wait, after_seq, if_none_match)
