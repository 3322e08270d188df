"""Reading one job (CONTRACT §3): the one handler behind both entrances of `GET /v1/jobs/{id}`.

`api.routes` (FastAPI: parameter validation, OpenAPI, the 422 and 401 bodies) and
`api.fast_path` (the pollers' routine requests, without FastAPI's per-request machinery) both
end here once they know the tenant, the job id and the poll parameters, so the bytes a client
gets do not depend on the entrance. A Redis error and `TooManyWaiters` are raised; each
entrance answers them with the contract's 503 and 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from datetime import UTC, datetime

from fastapi.responses import Response

from api.dependencies import Services
from api.errors import JSON, not_found
from api.reader import StoredJobFields
from api.render import body_key, fields_digest, is_complete, render_job
from contracts.job_state import F_HEAD, F_PUBLIC, change_channel, stored_seq

log = logging.getLogger("api.read_job")

MAX_WAIT_SECONDS = 25.0


async def read_job(
    services: Services,
    tenant_id: str,
    job_id: str,
    wait: float = 0,
    after_seq: int = 0,
    if_none_match: str | None = None,
) -> Response:
    """The response to a read of `job_id` (upper-case) by `tenant_id`: the job, 304 when
    `if_none_match` still matches, or 404; held up to `wait` seconds while the job's public
    seq is not above `after_seq`."""
    stored = await services.reader.read(tenant_id, job_id)
    if wait > 0 and public_seq(stored) <= after_seq:
        with services.waiters.hold(tenant_id):  # raises TooManyWaiters: the entrance's 429
            stored = await wait_for_change(services, tenant_id, job_id, wait, after_seq)
    if not is_complete(stored.fields):
        return not_found()
    return job_response(services, tenant_id, job_id, stored, if_none_match)


def public_seq(stored: StoredJobFields) -> int:
    return stored_seq(stored.fields.get(_PUBLIC))


_HEAD, _PUBLIC = F_HEAD.encode(), F_PUBLIC.encode()


def job_response(
    services: Services,
    tenant_id: str,
    job_id: str,
    stored: StoredJobFields,
    if_none_match: str | None,
) -> Response:
    bucket_seconds = services.presign_bucket_seconds
    bucket_start = time_bucket(job_id, time.time(), bucket_seconds)
    fields = stored.fields
    seqs = f"{stored_seq(fields.get(_HEAD))}.{public_seq(stored)}"
    etag = f'"{stored.version}.{seqs}.{bucket_start}.{fields_digest(fields):08x}"'
    if if_none_match and _matches(if_none_match, etag):
        return JobBodyResponse(304, b"", etag)
    presigner = services.presigner
    cache_key = body_key(tenant_id, job_id, fields, bucket_start, presigner.credentials())
    body = services.bodies.get(cache_key)
    if body is None:
        signed_at = datetime.fromtimestamp(bucket_start, UTC)
        expires_in = services.presign_ttl_seconds + bucket_seconds
        observe = services.metrics.presign_seconds.observe

        def sign(bucket: str, key: str) -> str | None:
            refusal = services.storage.refusal(tenant_id, bucket, key)
            if refusal is not None:
                refuse_artifact(services, tenant_id, job_id, bucket, key, refusal)
                return None
            started = time.perf_counter()
            url = presigner.presign_get(bucket, key, expires_in, signed_at)
            observe(time.perf_counter() - started)
            return url

        body = render_job(job_id, fields, sign)
        services.bodies.put(cache_key, body)
    return JobBodyResponse(200, body, etag)


class JobBodyResponse(Response):
    """A job's 200 (or 304) with its headers built directly: the same bytes as
    `Response(body, media_type=JSON, headers={"ETag": ..., "Cache-Control": ...})`, without
    the generic header handling, on the pollers' hottest path."""

    media_type = JSON

    def __init__(self, status_code: int, body: bytes, etag: str) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = [(b"etag", etag.encode()), _CACHE_CONTROL]
        if status_code == 200:
            self.raw_headers += [(b"content-length", b"%d" % len(body)), _CONTENT_TYPE]


_CACHE_CONTROL = (b"cache-control", b"private, no-cache")
_CONTENT_TYPE = (b"content-type", JSON.encode())


def time_bucket(job_id: str, now: float, seconds: int) -> int:
    """The start of the job's presign time bucket at `now`: URLs are signed as of it, so that
    they and the ETag stay the same within it. Each job's buckets are offset by a fraction of
    their length taken from its id, so that the jobs' bodies are signed again spread over the
    bucket, not all in the same second (a burst of renders that every poller would wait on)."""
    offset = zlib.crc32(job_id.encode()) % seconds
    return int(now - offset) // seconds * seconds + offset


def refuse_artifact(
    services: Services, tenant_id: str, job_id: str, bucket: str, key: str, refusal: str
) -> None:
    """A stored reference outside the storage rules (projected before a rule changed): it is
    left out of the response, never signed."""
    services.metrics.refused_artifacts.inc()
    log.error(
        "artifact not signed: %s (bucket %r, key %r)",
        refusal,
        bucket,
        key,
        extra={"tenant": tenant_id, "job": job_id},
    )


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
        while public_seq(stored) <= after_seq:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
            changed.clear()
            stored = await services.reader.read(tenant_id, job_id)
    return stored
