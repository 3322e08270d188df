"""The read API against its own OpenAPI schema (schemathesis), plus hostile hand-written requests.

Generated requests - with a valid token, and with whatever Authorization schemathesis makes up -
must never get a 5xx, only statuses the schema documents, and bodies that match the documented
schema of their status. The hand-written cases (oversized headers, path traversal, long and
unicode ids, long tokens) are sent both to the in-process ASGI app and over a socket to the real
`python -m api` (uvicorn + httptools), since header limits and path decoding live in the server.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jwt
import pytest
import schemathesis
from fastapi import FastAPI
from redis import Redis
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.settings import ApiSettings
from contracts.events import JobEvent
from contracts.job_state import encode_state, job_key
from projector.fold import fold
from tests.integration.support import event
from tests.stack import Stack
from tests.stack.processes import LocalProcess
from tests.stack.services import start_api

pytestmark = pytest.mark.integration

SECRET = "fuzz-test-secret-0123456789abcdef012"  # noqa: S105 - a test key
FUZZ_DB = 4  # a database of its own: `projection:active` is per database
TENANT = "acme"
# The schema's own example id, so the examples phase reads a job that exists.
DONE = "01JDQ8Z3M4W8K2V7T6R5N4P3Q2"
RUNNING = "01JDQ8Z3M4W8K2V7T6R5N4P3R3"
GLOBEX_JOB = "01JDQ8Z3M4W8K2V7T6R5N4P3S4"
MAX_WAIT = 0.05  # long polls are exercised, but must not hold the run for up to 25 s each
DOCUMENTED = {200, 304, 401, 404, 422, 503}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]
seen_statuses: Counter[int] = Counter()


def token(tenant: str = TENANT, exp_in: float = 3600) -> str:
    return jwt.encode({"tenant_id": tenant, "exp": int(time.time() + exp_in)}, SECRET, "HS256")


def db_url(redis_url: str, db: int) -> str:
    return re.sub(r"/\d*$", "", redis_url.rstrip("/")) + f"/{db}"


def finals(job_id: str) -> list[dict[str, Any]]:
    return [
        {
            "bucket": "fuzz-renders",
            "key": f"renders/{job_id}/look {i}+ü.png",
            "kind": "on_model_render",
            "role": "final",
            "metadata": {"width": 2048, "height": 3072},
        }
        for i in range(4)
    ]


def jobs() -> dict[tuple[str, str], list[JobEvent]]:
    return {
        (TENANT, DONE): [
            event(job_id=DONE, seq=1, kind="created"),
            event(job_id=DONE, seq=2, kind="stage", message='ünïcode ✓ "quoted"\n'),
            event(
                job_id=DONE,
                seq=3,
                kind="succeeded",
                artifacts=finals(DONE),
                payload={"cost": {"credits": 3}},
            ),
        ],
        (TENANT, RUNNING): [
            event(job_id=RUNNING, seq=1, kind="created"),
            event(job_id=RUNNING, seq=2, kind="stage"),
        ],
        ("globex", GLOBEX_JOB): [event(job_id=GLOBEX_JOB, tenant_id="globex", seq=1)],
    }


@pytest.fixture(scope="module")
def fuzz_redis_url(redis_url: str) -> Iterator[str]:
    """Database FUZZ_DB holding the jobs, written as the projector's merge writes them."""
    url = db_url(redis_url, FUZZ_DB)
    client = Redis.from_url(url)
    try:
        client.flushdb()
        for (tenant, job_id), events in jobs().items():
            client.hset(job_key("v1", tenant, job_id), mapping=encode_state(fold(events)))
        yield url
    finally:
        client.close()


@pytest.fixture(scope="module")
def settings(stack: Stack, fuzz_redis_url: str) -> Iterator[ApiSettings]:
    mp = pytest.MonkeyPatch()
    access_key, secret_key = stack.s3_credentials
    mp.setenv("AWS_ACCESS_KEY_ID", access_key)
    mp.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    try:
        yield ApiSettings(
            redis_url=fuzz_redis_url,
            s3_endpoint_url=stack.s3_endpoint_url,
            aws_region="us-east-1",
            jwt_secret=SECRET,  # type: ignore[arg-type]  # pydantic turns it into a SecretStr
        )
    finally:
        mp.undo()


# --- generated requests --------------------------------------------------------------------------


def config(*, authenticated: bool, max_examples: int) -> schemathesis.Config:
    project: dict[str, Any] = {
        "seed": 20261129,  # reproducible; change it to explore other inputs
        "generation": {"mode": "all", "max-examples": max_examples, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
    }
    if authenticated:
        project["auth"] = {"openapi": {"HTTPBearer": {"bearer": token()}}}
    return schemathesis.Config.from_dict(project)


@pytest.fixture(scope="module")
def fuzz_app(settings: ApiSettings) -> Iterator[FastAPI]:
    """One app for every generated request; schemathesis runs its lifespan on its own loop."""
    yield create_app(settings)
    shutdown_lifespans()


@pytest.fixture(scope="module")
def authenticated_schema(fuzz_app: FastAPI) -> BaseSchema:
    return schemathesis.openapi.from_asgi(
        "/openapi.json", fuzz_app, config=config(authenticated=True, max_examples=60)
    )


@pytest.fixture(scope="module")
def anonymous_schema(fuzz_app: FastAPI) -> BaseSchema:
    """No token configured: schemathesis sends none, or one it generated (never valid)."""
    return schemathesis.openapi.from_asgi(
        "/openapi.json", fuzz_app, config=config(authenticated=False, max_examples=15)
    )


def bound_the_wait(case: Case) -> None:
    """Shorten a valid `wait` (the value stays valid); invalid ones are left to get their 422."""
    if case.query is None:
        return
    wait = case.query.get("wait")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 < wait <= 25:
        case.query["wait"] = min(wait, MAX_WAIT)


def call_and_validate(case: Case) -> None:
    bound_the_wait(case)
    response = case.call()
    seen_statuses[response.status_code] += 1
    case.validate_response(response, checks=CHECKS)


authenticated = schemathesis.pytest.from_fixture("authenticated_schema")
anonymous = schemathesis.pytest.from_fixture("anonymous_schema")


@authenticated.parametrize()
def test_generated_requests_with_a_valid_token_get_documented_answers(case: Case) -> None:
    call_and_validate(case)


@anonymous.parametrize()
def test_generated_requests_without_a_valid_token_get_documented_answers(case: Case) -> None:
    call_and_validate(case)


def test_the_generated_requests_reached_the_job_the_missing_and_the_invalid_paths() -> None:
    if not seen_statuses:
        pytest.skip("run together with the generated tests")
    assert {200, 401, 404, 422} <= set(seen_statuses), dict(seen_statuses)


# --- hand-written hostile requests ---------------------------------------------------------------

Reply = tuple[int, dict[str, str], bytes]

LONG_TOKEN = "a" * 20_000
HUGE_AUTHORIZATION = "Bearer " + "x" * (16 * 1024)


def hostile_cases() -> list[tuple[str, str, bool]]:
    """(name, raw request target, with a valid token)."""
    paths = {
        "dot-dot slash": "/v1/jobs/../",
        "dot-dot to another route": "/v1/jobs/../../openapi.json",
        "encoded dot-dot slash": "/v1/jobs/%2e%2e%2f",
        "dot-dot encoded slash": "/v1/jobs/..%2F",
        "encoded traversal to a job": f"/v1/jobs/..%2F..%2Fjobs%2F{DONE}",
        "double-encoded traversal": "/v1/jobs/%252e%252e%252f",
        "very long id": "/v1/jobs/" + "0" * 10_000,
        "long almost-ulid": "/v1/jobs/" + DONE + "A" * 500,
        "unicode id": "/v1/jobs/01JDQ8Z3M4W8K2V7T6R5N4P3%C3%BC",
        "unicode lookalike digits": "/v1/jobs/" + "%EF%BC%90" * 26,  # fullwidth zero
        "nul byte in id": f"/v1/jobs/{DONE[:-1]}%00",
        "id with a query": f"/v1/jobs/{DONE}?wait=-1",
    }
    cases = []
    for name, target in paths.items():
        cases += [(f"{name}, token", target, True), (f"{name}, no token", target, False)]
    return cases


HOSTILE = hostile_cases()


def ok_body(status: int, body: bytes) -> bool:
    """Whether a body has the documented shape of its status."""
    if status == 304:
        return body == b""
    data = json.loads(body)
    if status == 200:
        return isinstance(data, dict) and data.get("id") == DONE
    if status == 422:
        return isinstance(data["detail"], list) and {"loc", "msg", "type"} <= set(data["detail"][0])
    return isinstance(data["detail"], dict) and set(data["detail"]) == {"code", "message"}


async def asgi_get(app: FastAPI, target: str, headers: dict[str, str]) -> Reply:
    """One GET through the ASGI interface, with the scope uvicorn would build for `target`."""
    raw_path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"api")]
        + [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("api", 80),
    }
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    response_headers = {k.decode().lower(): v.decode("latin-1") for k, v in start["headers"]}
    return start["status"], response_headers, b"".join(chunks)


async def wire_get(port: int, target: str, headers: dict[str, str]) -> Reply:
    """One GET over a socket, bytes as given (no client-side normalisation of the target)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"GET {target} HTTP/1.1", "Host: api", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    response_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        response_headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), response_headers, body


@pytest.fixture(scope="module")
async def asgi_app(settings: ApiSettings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture(scope="module")
def api_server(
    stack: Stack, fuzz_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalProcess]:
    env = stack.env() | {"REDIS_URL": fuzz_redis_url, "JWT_SECRET": SECRET}
    server = start_api(env, Path(tmp_path_factory.mktemp("fuzz-api")))
    try:
        yield server
    finally:
        server.stop()


def assert_documented(name: str, reply: Reply, allowed: set[int]) -> None:
    status, headers, body = reply
    assert status < 500, f"{name}: {status} {body[:300]!r}"
    assert status in allowed, f"{name}: {status} {body[:300]!r}"
    assert ok_body(status, body), f"{name}: {status} {body[:300]!r}"
    if status == 401:
        assert headers["www-authenticate"].startswith("Bearer"), name


@pytest.mark.parametrize(("name", "target", "with_token"), HOSTILE, ids=[c[0] for c in HOSTILE])
async def test_hostile_paths_get_only_documented_statuses(
    asgi_app: FastAPI, api_server: LocalProcess, name: str, target: str, with_token: bool
) -> None:
    headers = {"Authorization": f"Bearer {token()}"} if with_token else {}
    allowed = {404, 422} if with_token else {401}
    assert_documented(f"asgi {name}", await asgi_get(asgi_app, target, headers), allowed)
    assert_documented(f"wire {name}", await wire_get(api_server.port, target, headers), allowed)


HOSTILE_HEADERS: list[tuple[str, dict[str, str]]] = [
    ("16 KB Authorization", {"Authorization": HUGE_AUTHORIZATION}),
    ("20 000-char token", {"Authorization": f"Bearer {LONG_TOKEN}"}),
    ("long token that looks like a JWT", {"Authorization": "Bearer " + ".".join(["e" * 5000] * 3)}),
    ("valid token padded past the limit", {"Authorization": f"Bearer {token()}{' ' * 9000}"}),
    ("unicode token", {"Authorization": "Bearer ÿÿÿÿ.ÿÿÿÿ.ÿÿÿÿ"}),
    ("two schemes", {"Authorization": f"Bearer {token()}, Basic dXNlcjpwYXNz"}),
]


@pytest.mark.parametrize(("name", "headers"), HOSTILE_HEADERS, ids=[c[0] for c in HOSTILE_HEADERS])
async def test_hostile_authorization_headers_get_401(
    asgi_app: FastAPI, api_server: LocalProcess, name: str, headers: dict[str, str]
) -> None:
    for target in (f"/v1/jobs/{DONE}", "/v1/jobs/not-a-ulid"):
        allowed = {401}
        assert_documented(f"asgi {name}", await asgi_get(asgi_app, target, headers), allowed)
        assert_documented(f"wire {name}", await wire_get(api_server.port, target, headers), allowed)


async def test_a_valid_request_still_works_after_the_hostile_ones(
    asgi_app: FastAPI, api_server: LocalProcess
) -> None:
    headers = {"Authorization": f"Bearer {token()}", "If-None-Match": "x" * 16_000}
    for reply in (
        await asgi_get(asgi_app, f"/v1/jobs/{DONE.lower()}", headers),
        await wire_get(api_server.port, f"/v1/jobs/{DONE.lower()}", headers),
    ):
        assert reply[0] == 200, reply
        assert ok_body(200, reply[2])
        body = json.loads(reply[2])
        assert len(body["manifest"]) == len(body["latest_event"]["artifacts"]) == 4
