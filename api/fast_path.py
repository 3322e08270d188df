"""The pollers' hot path: `GET /v1/jobs/{id}`, plain or long-polling, with a valid token,
served without FastAPI's per-request machinery.

A plain ASGI middleware in front of the app. It answers only when everything is routine -
the exact path, a ULID, no query string or only `wait` and `after_seq` in plain digits
within the route's bounds, a token that verifies - with the route's own handler
(`api.read_job.read_job`), so the bytes are the route's. Anything else (no or bad token,
another parameter, a value the route would refuse or parse differently, another path) goes to
FastAPI unchanged, which stays the one place that writes 401 and 422 bodies. FastAPI's
dependency solving and parameter validation cost several times the work of the read itself
(docs/performance.md); a long-poll answers every change of a job, so it is as hot as a plain
read.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import Unauthenticated
from api.dependencies import Services
from api.errors import too_many_requests, unavailable
from api.metrics import remember_tenant
from api.read_job import MAX_WAIT_SECONDS, read_job
from api.redis_client import UNAVAILABLE_ERRORS
from api.waiters import TooManyWaiters
from contracts.events import ULID_PATTERN
from contracts.http import JOBS_PATH

_JOB_PATH = re.compile(re.escape(JOBS_PATH) + "(" + ULID_PATTERN.strip("^$") + ")")
_PLAIN_SECONDS = re.compile(rb"\d{1,2}(?:\.\d{1,6})?")
_PLAIN_SEQ = re.compile(rb"\d{1,18}")


def poll_parameters(query: bytes) -> tuple[float, int] | None:
    """(`wait`, `after_seq`) of a query holding only those, each at most once, in plain
    digits within the route's bounds; None when the route must decide (and maybe say 422)."""
    wait, after_seq = 0.0, 0
    seen: set[bytes] = set()
    for part in query.split(b"&") if query else ():
        name, equals, value = part.partition(b"=")
        if not equals or name in seen:
            return None
        seen.add(name)
        if name == b"wait" and _PLAIN_SECONDS.fullmatch(value):
            wait = float(value)
            if wait > MAX_WAIT_SECONDS:
                return None
        elif name == b"after_seq" and _PLAIN_SEQ.fullmatch(value):
            after_seq = int(value)
        else:
            return None
    return wait, after_seq


class FastJobReads:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or (match := _JOB_PATH.fullmatch(scope["path"])) is None
            or (poll := poll_parameters(scope["query_string"])) is None
        ):
            await self.app(scope, receive, send)
            return
        services: Services | None = getattr(scope["app"].state, "services", None)
        if services is None:
            await self.app(scope, receive, send)
            return
        authorization = if_none_match = None
        for name, value in scope["headers"]:  # the first of repeated headers, as the route
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"if-none-match" and if_none_match is None:
                if_none_match = value.decode("latin-1")
        try:
            tenant_id = await services.verifier.tenant_of(authorization)
        except Unauthenticated:
            await self.app(scope, receive, send)  # FastAPI writes the 401
            return
        remember_tenant(scope, tenant_id)
        wait, after_seq = poll
        try:
            response = await read_job(
                services, tenant_id, match.group(1).upper(), wait, after_seq, if_none_match
            )
        except UNAVAILABLE_ERRORS:
            response = unavailable()
        except TooManyWaiters:
            response = too_many_requests()
        await response(scope, receive, send)
