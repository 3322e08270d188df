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

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the `If-None-Match` ETag is still current."},
    401: {
        "model": ErrorBody,
        "description": "No token, or a malformed, badly signed or expired one, or one without "
        "the tenant claim. Comes with `WWW-Authenticate: Bearer`.",
        "content": {
            JSON: {
                "example": {
                    "detail": {"code": "UNAUTHENTICATED", "message": "The token has expired."}
                }
            }
        },
    },
    404: {
        "model": ErrorBody,
        "description": "JOB_NOT_FOUND when the job doesn't exist OR belongs to another tenant.",
        "content": {
            JSON: {"example": {"detail": {"code": "JOB_NOT_FOUND", "message": "Job not found."}}}
        },
    },
    503: {
        "model": ErrorBody,
        "description": "The job store is unreachable; retry after `Retry-After` seconds.",
        "content": {
            JSON: {
                "example": {
                    "detail": {"code": "UNAVAILABLE", "message": "The job store is unavailable."}
                }
            }
        },
    },
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
    responses=_ERROR_RESPONSES,
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
