"""`GET /v1/jobs/{id}`: a job's header, final manifest and latest public event (CONTRACT §3)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import Response

from api.dependencies import Services, ServicesDep, TenantDep
from api.errors import JSON, not_found
from api.reader import StoredJobFields
from api.render import body_key, fields_digest, head_seq, is_complete, public_seq, render_job
from contracts.events import ULID_PATTERN
from contracts.http import ErrorBody, JobResponse
from contracts.job_state import change_channel

MAX_WAIT_SECONDS = 25.0

router = APIRouter(prefix="/v1", tags=["jobs"])

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
    "/jobs/{id}",
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
    job_id = id.upper()
    stored = await services.reader.read(tenant_id, job_id)
    if wait > 0 and public_seq(stored.fields) <= after_seq:
        stored = await wait_for_change(services, tenant_id, job_id, wait, after_seq)
    if not is_complete(stored.fields):
        return not_found()
    return job_response(services, job_id, stored, if_none_match)


def job_response(
    services: Services, job_id: str, stored: StoredJobFields, if_none_match: str | None
) -> Response:
    bucket_seconds = services.presign_bucket_seconds
    bucket_start = int(time.time()) // bucket_seconds * bucket_seconds
    fields = stored.fields
    seqs = f"{head_seq(fields)}.{public_seq(fields)}"
    etag = f'"{stored.version}.{seqs}.{bucket_start}.{fields_digest(fields):08x}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if if_none_match and _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    presigner = services.presigner
    cache_key = body_key(job_id, stored.fields, bucket_start, presigner.credentials())
    body = services.bodies.get(cache_key)
    if body is None:
        signed_at = datetime.fromtimestamp(bucket_start, UTC)
        expires_in = services.presign_ttl_seconds + bucket_seconds
        observe = services.metrics.presign_seconds.observe

        def sign(bucket: str, key: str) -> str:
            started = time.perf_counter()
            url = presigner.presign_get(bucket, key, expires_in, signed_at)
            observe(time.perf_counter() - started)
            return url

        body = render_job(job_id, stored.fields, sign)
        services.bodies.put(cache_key, body)
    return Response(body, media_type=JSON, headers=headers)


def _matches(if_none_match: str, etag: str) -> bool:
    candidates = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return any(tag in (etag, "*") for tag in candidates)


async def wait_for_change(
    services: Services, tenant_id: str, job_id: str, wait: float, after_seq: int
) -> StoredJobFields:
    deadline = time.monotonic() + wait
    version = await services.reader.active_version()
    channel = change_channel(version, tenant_id, job_id)
    async with services.notifier.watch(channel) as changed:
        # Read again once subscribed: a change between the first read and the subscription
        # would otherwise go unnoticed until the deadline.
        stored = await services.reader.read(tenant_id, job_id)
        while public_seq(stored.fields) <= after_seq:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
            changed.clear()
            stored = await services.reader.read(tenant_id, job_id)
    return stored
