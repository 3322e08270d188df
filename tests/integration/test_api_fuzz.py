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
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jwt
import pytest
import schemathesis
from fastapi import FastAPI
from redis import Redis
from redis.typing import EncodableT, FieldT
from schemathesis import Case, HookContext
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
from contracts.events import ULID_PATTERN, JobEvent
from contracts.job_state import encode_state, job_key
from devstack import Stack
from devstack.data import event
from devstack.processes import LocalProcess
from devstack.services import start_api
from projector.fold import fold

pytestmark = pytest.mark.integration

SECRET = "fuzz-test-secret-0123456789abcdef012"  # noqa: S105 - a test key
FUZZ_BUCKET = "fuzz-renders"
FUZZ_DB = 4  # a database of its own: `projection:active` is per database
TENANT = "acme"
# The schema's own example id, so the examples phase reads a job that exists.
DONE = "01JDQ8Z3M4W8K2V7T6R5N4P3Q2"
RUNNING = "01JDQ8Z3M4W8K2V7T6R5N4P3R3"
GLOBEX_JOB = "01JDQ8Z3M4W8K2V7T6R5N4P3S4"
MAX_WAIT = 0.05  # long polls are exercised, but must not hold the run for up to 25 s each
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]
seen_statuses: Counter[int] = Counter()


def token(tenant: str = TENANT, exp_in: float = 3600, pad: int = 0) -> str:
    claims: dict[str, Any] = {"tenant_id": tenant, "exp": int(time.time() + exp_in)}
    if pad:
        claims["pad"] = "p" * pad
    return jwt.encode(claims, SECRET, "HS256")


def db_url(redis_url: str, db: int) -> str:
    return re.sub(r"/\d*$", "", redis_url.rstrip("/")) + f"/{db}"


def finals(job_id: str) -> list[dict[str, Any]]:
    return [
        {
            "bucket": FUZZ_BUCKET,
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
            fields: dict[FieldT, EncodableT] = {}
            fields.update(encode_state(fold(events)).items())
            client.hset(job_key("v1", tenant, job_id), mapping=fields)
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
            artifact_buckets=FUZZ_BUCKET,
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


class LateApp:
    """An ASGI app that forwards to one set later by a fixture.

    The schema has to exist at import time, for `schema.parametrize()`; the real app needs the
    stack's addresses, known only once the session fixtures ran. (`schemathesis.pytest.
    from_fixture` would defer the schema instead, but in schemathesis 4.32.5 it sets
    `request.node._nodeid`, which pytest 9 no longer has: AttributeError.)
    """

    def __init__(self) -> None:
        self.target: FastAPI | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.target is None:
            raise RuntimeError("the `fuzz_app` fixture sets the app to test")
        await self.target(scope, receive, send)


late_app = LateApp()


def openapi_document() -> dict[str, Any]:
    """The app's own schema; building the app needs credentials, but not real ones."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "schema-only")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "schema-only")
        settings = ApiSettings(
            jwt_secret=SECRET,  # type: ignore[arg-type]
            aws_region="us-east-1",
            artifact_buckets=FUZZ_BUCKET,
        )
        return create_app(settings).openapi()


def load_schema(*, authenticated: bool, max_examples: int) -> BaseSchema:
    schema = schemathesis.openapi.from_dict(
        openapi_document(), config=config(authenticated=authenticated, max_examples=max_examples)
    )
    schema.app = late_app
    return schema


@pytest.fixture(scope="module")
def fuzz_app(settings: ApiSettings) -> Iterator[FastAPI]:
    """The app behind every generated request; schemathesis runs its lifespan on its own loop."""
    app = create_app(settings)
    assert app.openapi() == openapi_document()
    late_app.target = app
    try:
        yield app
    finally:
        shutdown_lifespans()
        late_app.target = None


def bound_the_wait(case: Case[Any]) -> None:
    """Shorten a valid `wait` (the value stays valid); invalid ones are left to get their 422."""
    if case.query is None:
        return
    wait = case.query.get("wait")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 < wait <= 25:
        case.query["wait"] = min(wait, MAX_WAIT)


def call_and_validate(case: Case[Any]) -> None:
    bound_the_wait(case)
    response = case.call()
    seen_statuses[response.status_code] += 1
    case.validate_response(response, checks=CHECKS)


# With a valid token; `ignored_auth` also replays each 2xx without a token and with a bad one.
authenticated = load_schema(authenticated=True, max_examples=200)
ULID = re.compile(ULID_PATTERN)
# Stored jobs (200), another tenant's (404) and whatever was generated (404, most likely).
STEERED_IDS = (DONE, DONE.lower(), RUNNING, GLOBEX_JOB, None)


@authenticated.hook
def map_path_parameters(_context: HookContext, path_parameters: dict[str, Any]) -> dict[str, Any]:
    """Steer valid generated ids to stored jobs, so that fuzzing also reads real ones; invalid
    ids (negative cases) stay as generated."""
    job_id = path_parameters.get("id")
    if isinstance(job_id, str) and ULID.fullmatch(job_id):
        steered = STEERED_IDS[ord(job_id[-1]) % len(STEERED_IDS)]
        path_parameters["id"] = steered or job_id
    return path_parameters


# No token configured: schemathesis sends none, or a bearer value it made up (never valid).
anonymous = load_schema(authenticated=False, max_examples=40)


@authenticated.parametrize()
def test_generated_requests_with_a_valid_token_get_documented_answers(
    case: Case[Any], fuzz_app: FastAPI
) -> None:
    call_and_validate(case)


@anonymous.parametrize()
def test_generated_requests_without_a_valid_token_get_documented_answers(
    case: Case[Any], fuzz_app: FastAPI
) -> None:
    call_and_validate(case)


def test_the_generated_requests_reached_the_job_the_missing_and_the_invalid_paths() -> None:
    if not seen_statuses:
        pytest.skip("run together with the generated tests")
    assert {200, 401, 404, 422} <= set(seen_statuses), dict(seen_statuses)


# --- hand-written hostile requests ---------------------------------------------------------------

Reply = tuple[int, dict[str, str], bytes]

LONG_TOKEN = "a" * 20_000
HUGE_AUTHORIZATION = "Bearer " + "x" * (16 * 1024)


# Paths that match no route (dot segments are not normalised by uvicorn or Starlette, and a
# trailing slash is not redirected: the app sets redirect_slashes=False) get the plain 404 of
# an unknown path - and, like every path, a 401 first when the token is missing.
UNROUTED = "unrouted"
ROUTED = "routed"


def hostile_cases() -> list[Any]:
    """pytest params: (name, raw request target, with a valid token, where it lands)."""
    paths: list[tuple[str, str, str, tuple[pytest.MarkDecorator, ...]]] = [
        ("dot-dot slash", "/v1/jobs/../", UNROUTED, ()),
        ("encoded dot-dot slash", "/v1/jobs/%2e%2e%2f", UNROUTED, ()),
        ("dot-dot encoded slash", "/v1/jobs/..%2F", UNROUTED, ()),
        ("trailing slash after an id", f"/v1/jobs/{DONE}/", UNROUTED, ()),
        ("dot-dot to another route", "/v1/jobs/../../openapi.json", UNROUTED, ()),
        ("encoded traversal to a job", f"/v1/jobs/..%2F..%2Fjobs%2F{DONE}", UNROUTED, ()),
        ("double-encoded traversal", "/v1/jobs/%252e%252e%252f", ROUTED, ()),
        ("dot-dot as the id", "/v1/jobs/..", ROUTED, ()),
        ("very long id", "/v1/jobs/" + "0" * 10_000, ROUTED, ()),
        ("long almost-ulid", "/v1/jobs/" + DONE + "A" * 500, ROUTED, ()),
        ("unicode id", "/v1/jobs/01JDQ8Z3M4W8K2V7T6R5N4P3%C3%BC", ROUTED, ()),
        ("fullwidth digits id", "/v1/jobs/" + "%EF%BC%90" * 26, ROUTED, ()),
        ("nul byte in id", f"/v1/jobs/{DONE[:-1]}%00", ROUTED, ()),
        ("invalid wait", f"/v1/jobs/{DONE}?wait=-1", ROUTED, ()),
    ]
    cases = []
    for name, target, lands, marks in paths:
        for with_token in (True, False):
            label = f"{name}, {'token' if with_token else 'no token'}"
            cases.append(pytest.param(target, with_token, lands, id=label, marks=marks))
    return cases


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

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
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
    env = stack.env() | {
        "REDIS_URL": fuzz_redis_url,
        "JWT_SECRET": SECRET,
        "ARTIFACT_BUCKETS": FUZZ_BUCKET,
    }
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


@pytest.mark.parametrize(("target", "with_token", "lands"), hostile_cases())
async def test_hostile_paths_get_only_documented_statuses(
    asgi_app: FastAPI, api_server: LocalProcess, target: str, with_token: bool, lands: str
) -> None:
    headers = {"Authorization": f"Bearer {token()}"} if with_token else {}
    for via, reply in (
        ("asgi", await asgi_get(asgi_app, target, headers)),
        ("wire", await wire_get(api_server.port, target, headers)),
    ):
        if lands == UNROUTED and with_token:
            assert reply[0] == 404, (via, reply)
            assert json.loads(reply[2]) == {"detail": "Not Found"}, (via, reply)
        else:
            assert_documented(via, reply, {404, 422} if with_token else {401})


HOSTILE_HEADERS: list[tuple[str, dict[str, str]]] = [
    ("16 KB Authorization", {"Authorization": HUGE_AUTHORIZATION}),
    ("20 000-char token", {"Authorization": f"Bearer {LONG_TOKEN}"}),
    ("long token that looks like a JWT", {"Authorization": "Bearer " + ".".join(["e" * 5000] * 3)}),
    ("validly signed token past the length limit", {"Authorization": f"Bearer {token(pad=9000)}"}),
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
