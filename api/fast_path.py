"""The pollers' hot path: `GET /v1/jobs/{id}` with a valid token and no query, served
without FastAPI's per-request machinery.

A plain ASGI middleware in front of the app. It answers only when everything is routine -
the exact path, a ULID, no query string, a token that verifies, a stored job - using the
same pieces as the route (`TokenVerifier`, `JobReader`, `job_response`), so the bytes are
the route's. Anything else (no or bad token, a query such as `?wait=`, another path) goes
to FastAPI unchanged, which stays the one place that writes 401 and 422 bodies. Measured:
FastAPI's dependency solving and parameter validation cost several times the work of the
read itself (README "Performance").
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import Unauthenticated
from api.dependencies import Services
from api.errors import not_found, unavailable
from api.redis_client import UNAVAILABLE_ERRORS
from api.render import is_complete
from api.routes import job_response

_JOB_PATH = re.compile(r"/v1/jobs/([0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25})")


class FastJobReads:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or scope["query_string"]
            or (match := _JOB_PATH.fullmatch(scope["path"])) is None
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
            tenant_id = services.verifier.tenant_of(authorization)
        except Unauthenticated:
            await self.app(scope, receive, send)  # FastAPI writes the 401
            return
        job_id = match.group(1).upper()
        try:
            stored = await services.reader.read(tenant_id, job_id)
        except UNAVAILABLE_ERRORS:
            await unavailable()(scope, receive, send)
            return
        if not is_complete(stored.fields):
            response = not_found()
        else:
            response = job_response(services, job_id, stored, if_none_match)
        await response(scope, receive, send)
