"""The read API over HTTP, against a projection written by the real projector from real
broker events, presigning for the real S3 server (CONTRACT §3)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from redis.asyncio import Redis

from api.app import create_app
from api.settings import ApiSettings
from contracts.events import JobEvent
from devstack import Stack, s3_client
from devstack.data import BUCKETS, event
from devstack.processes import LocalProcess, free_port
from tests.integration.projection import produce, projector_env, spawn, wait_until_caught_up

pytestmark = pytest.mark.integration

SECRET = "api-test-secret-0123456789abcdef0123"  # noqa: S105 - a test key
API_DB = 3  # a database of its own: `projection:active` is per database
DONE, RUNNING, FAILED, FRESH = (
    "01JDQ8Z3M4W8K2V7T6R5N4P3A1",
    "01JDQ8Z3M4W8K2V7T6R5N4P3A2",
    "01JDQ8Z3M4W8K2V7T6R5N4P3A3",
    "01JDQ8Z3M4W8K2V7T6R5N4P3A4",
)
GLOBEX_JOB = "01JDQ8Z3M4W8K2V7T6R5N4P3B1"


def db_url(redis_url: str, db: int) -> str:
    return re.sub(r"/\d*$", "", redis_url.rstrip("/")) + f"/{db}"


def token(
    tenant: str | None = "acme", *, exp_in: float = 600, key: str = SECRET, **extra: Any
) -> str:
    claims: dict[str, Any] = {"exp": int(time.time() + exp_in), **extra}
    if tenant is not None:
        claims["tenant_id"] = tenant
    return jwt.encode(claims, key, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def artifacts(bucket: str, job_id: str, n: int, role: str = "final") -> list[dict[str, Any]]:
    return [
        {
            "bucket": bucket,
            "key": f"renders/{job_id}/look {i}+ü.png",
            "kind": "on_model_render",
            "role": role,
            "metadata": {"width": 2048, "height": 3072},
        }
        for i in range(n)
    ]


def scenario(bucket: str) -> list[JobEvent]:
    done = [
        event(job_id=DONE, seq=1, kind="created"),
        event(job_id=DONE, seq=2, kind="queued"),
        event(
            job_id=DONE, seq=3, kind="stage", artifacts=artifacts(bucket, DONE, 1, "intermediate")
        ),
        event(job_id=DONE, seq=4, kind="stage", visibility="internal"),
        event(
            job_id=DONE,
            seq=5,
            kind="succeeded",
            artifacts=artifacts(bucket, DONE, 4),
            payload={"cost": {"credits": 3}},
        ),
    ]
    running = [
        event(job_id=RUNNING, seq=1, kind="created"),
        event(job_id=RUNNING, seq=2, kind="stage"),
    ]
    failed = [
        event(job_id=FAILED, seq=1, kind="created"),
        event(job_id=FAILED, seq=2, kind="failed", payload={"error": {"code": "OOM"}}),
    ]
    fresh = [event(job_id=FRESH, seq=1, kind="created")]
    other = [event(job_id=GLOBEX_JOB, tenant_id="globex", seq=1, kind="queued")]
    return done + running + failed + fresh + other


@pytest.fixture(scope="module")
def api_redis_url(redis_url: str) -> str:
    return db_url(redis_url, API_DB)


@pytest.fixture(scope="module")
async def projected(
    stack: Stack, bucket: str, api_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[JobEvent]]:
    """The scenario's events, projected into version v1 by a real projector."""
    from devstack import create_topics

    redis = Redis.from_url(api_redis_url)
    await redis.flushdb()
    topic = f"jobs.events.api.{int(time.time() * 1000)}"
    await create_topics(stack.kafka_bootstrap, {topic: 4, f"{topic}.dlq": 1})
    events = scenario(bucket)
    s3 = s3_client(stack)
    for e in events:
        for a in e.artifacts:
            s3.put_object(Bucket=a.bucket, Key=a.key, Body=f"bytes of {a.key}".encode())
    workdir = Path(tmp_path_factory.mktemp("api-projector"))
    env = projector_env(stack.kafka_bootstrap, topic, api_redis_url, "v1")
    projector = spawn(env, workdir)
    try:
        await produce(stack.kafka_bootstrap, topic, events)
        await wait_until_caught_up(stack.kafka_bootstrap, topic, "v1", len(events))
        _state["topic"] = topic
        _state["projector"] = projector
        yield events
    finally:
        projector.stop()
        await redis.aclose()


_state: dict[str, Any] = {}


def settings_for(stack: Stack, redis_url: str, **overrides: Any) -> ApiSettings:
    _access_key, _secret_key = stack.s3_credentials
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "s3_endpoint_url": stack.s3_endpoint_url,
        "aws_region": "us-east-1",
        "jwt_secret": SECRET,
        "artifact_buckets": ",".join(BUCKETS),
    } | overrides
    return ApiSettings(**values)


@pytest.fixture(scope="module", autouse=True)
def aws_credentials(stack: Stack) -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    access_key, secret_key = stack.s3_credentials
    mp.setenv("AWS_ACCESS_KEY_ID", access_key)
    mp.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    yield
    mp.undo()


async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


@pytest.fixture
async def client(
    stack: Stack, api_redis_url: str, projected: list[JobEvent]
) -> AsyncIterator[httpx.AsyncClient]:
    async for c in serve(create_app(settings_for(stack, api_redis_url))):
        yield c


def strip_urls(body: dict[str, Any]) -> str:
    text = json.dumps(body, ensure_ascii=False)
    return re.sub(r'"image_url": "[^"]*"', '"image_url": ""', text)


async def test_a_succeeded_job_has_its_manifest_and_latest_public_event(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(f"/v1/jobs/{DONE}", headers=bearer(token()))
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["id", "type", "status", "created_at", "manifest", "latest_event"]
    assert body["id"] == DONE
    assert body["type"] == "ON_MODEL_RENDER"
    assert body["status"] == "SUCCEEDED"
    assert body["created_at"] == "2026-11-29T12:00:00Z"
    assert [a["role"] for a in body["manifest"]] == ["final"] * 4
    assert body["manifest"][0]["metadata"] == {"width": 2048, "height": 3072}
    latest = body["latest_event"]
    assert latest["seq"] == 5
    assert latest["kind"] == "succeeded"
    assert latest["visibility"] == "public"
    assert latest["payload"] == {"cost": {"credits": 3}}
    assert latest["created_at"] == "2026-11-29T12:00:05Z"
    assert len(latest["artifacts"]) == 4
    assert set(latest["artifacts"][0]) == {"image_url", "kind", "role", "metadata"}
    assert response.headers["cache-control"] == "private, no-cache"
    assert response.headers["etag"]


async def test_every_presigned_url_fetches_its_object(client: httpx.AsyncClient) -> None:
    body = (await client.get(f"/v1/jobs/{DONE}", headers=bearer(token()))).json()
    urls = [a["image_url"] for a in body["manifest"] + body["latest_event"]["artifacts"]]
    assert len(urls) == 8
    async with httpx.AsyncClient() as s3:
        for n, url in enumerate(urls[:4]):
            fetched = await s3.get(url)
            assert fetched.status_code == 200, url
            assert fetched.content == f"bytes of renders/{DONE}/look {n}+ü.png".encode()


async def test_no_bucket_key_or_s3_scheme_appears_outside_the_urls(
    client: httpx.AsyncClient, bucket: str
) -> None:
    body = (await client.get(f"/v1/jobs/{DONE}", headers=bearer(token()))).json()
    text = strip_urls(body)
    for leak in (bucket, "renders/", "look 0", "s3://", '"bucket"', '"key"'):
        assert leak not in text


async def test_status_follows_the_highest_seq_event(client: httpx.AsyncClient) -> None:
    running = (await client.get(f"/v1/jobs/{RUNNING}", headers=bearer(token()))).json()
    assert (running["status"], running["manifest"]) == ("RUNNING", [])
    assert running["latest_event"]["kind"] == "stage"
    failed = (await client.get(f"/v1/jobs/{FAILED}", headers=bearer(token()))).json()
    assert failed["status"] == "FAILED"
    assert failed["latest_event"]["payload"] == {"error": {"code": "OOM"}}
    fresh = (await client.get(f"/v1/jobs/{FRESH}", headers=bearer(token()))).json()
    assert (fresh["status"], fresh["latest_event"]) == ("NOT_STARTED", None)


async def test_the_id_is_accepted_in_any_case(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v1/jobs/{DONE.lower()}", headers=bearer(token()))
    assert response.status_code == 200
    assert response.json()["id"] == DONE


async def test_another_tenants_job_is_byte_identical_to_a_missing_one(
    client: httpx.AsyncClient,
) -> None:
    other = await client.get(f"/v1/jobs/{GLOBEX_JOB}", headers=bearer(token("acme")))
    missing = await client.get("/v1/jobs/01JDQ8Z3M4W8K2V7T6R5N4P3ZZ", headers=bearer(token()))
    assert other.status_code == missing.status_code == 404
    assert other.content == missing.content
    assert other.json() == {"detail": {"code": "JOB_NOT_FOUND", "message": "Job not found."}}
    own = await client.get(f"/v1/jobs/{GLOBEX_JOB}", headers=bearer(token("globex")))
    assert own.status_code == 200


async def test_an_id_that_is_not_a_ulid_is_a_validation_error(client: httpx.AsyncClient) -> None:
    for bad in ("not-a-ulid", "81JDQ8Z3M4W8K2V7T6R5N4P3Q2", "01JDQ8Z3M4W8K2V7T6R5N4P3QI", "x" * 27):
        response = await client.get(f"/v1/jobs/{bad}", headers=bearer(token()))
        assert response.status_code == 422, bad
        detail = response.json()["detail"]
        assert detail[0]["loc"] == ["path", "id"]
        assert {"loc", "msg", "type"} <= set(detail[0])


def rsa_pem() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public.decode()


def unsigned(claims: dict[str, Any]) -> str:
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = jwt.utils.base64url_encode(json.dumps(claims).encode())
    return f"{header.decode()}.{payload.decode()}."


BAD_TOKENS: list[tuple[str, dict[str, str], bool]] = [
    ("missing", {}, False),
    ("not bearer", {"Authorization": "Basic dXNlcjpwYXNz"}, False),
    ("empty bearer", {"Authorization": "Bearer "}, False),
    ("malformed", bearer("not.a.jwt"), True),
    ("bad signature", bearer(token(key="another-secret-0123456789abcdefgh")), True),
    ("expired", bearer(token(exp_in=-30)), True),
    ("no tenant claim", bearer(token(None)), True),
    ("tenant not a string", bearer(token(None, tenant_id=["acme"])), True),
    ("no exp", bearer(jwt.encode({"tenant_id": "acme"}, SECRET, algorithm="HS256")), True),
    ("alg none", bearer(unsigned({"tenant_id": "acme", "exp": int(time.time()) + 600})), True),
    ("very long", bearer("a" * 20_000), True),
]


@pytest.mark.parametrize(
    ("name", "headers", "token_given"), BAD_TOKENS, ids=[b[0] for b in BAD_TOKENS]
)
async def test_requests_without_a_valid_token_get_the_documented_401(
    client: httpx.AsyncClient, name: str, headers: dict[str, str], token_given: bool
) -> None:
    for path in (f"/v1/jobs/{DONE}", "/v1/jobs/not-a-ulid"):  # authentication comes first
        response = await client.get(path, headers=headers)
        assert response.status_code == 401, name
        assert response.json()["detail"]["code"] == "UNAUTHENTICATED"
        assert response.json()["detail"]["message"]
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Bearer")
        assert ('error="invalid_token"' in challenge) == token_given


async def test_rs256_tokens_verify_and_hs256_signed_with_the_public_key_does_not(
    stack: Stack, api_redis_url: str, projected: list[JobEvent]
) -> None:
    private, public_pem = rsa_pem()
    settings = settings_for(stack, api_redis_url, jwt_secret=None, jwt_public_key=public_pem)
    exp = int(time.time()) + 600
    good = jwt.encode({"tenant_id": "acme", "exp": exp}, private, algorithm="RS256")
    confused = _hs256_with_raw_key({"tenant_id": "acme", "exp": exp}, public_pem)
    async for client in serve(create_app(settings)):
        assert (await client.get(f"/v1/jobs/{DONE}", headers=bearer(good))).status_code == 200
        response = await client.get(f"/v1/jobs/{DONE}", headers=bearer(confused))
        assert response.status_code == 401


def _hs256_with_raw_key(claims: dict[str, Any], key: str) -> str:
    """An HS256 token whose HMAC key is the server's public key: the classic confusion."""
    import hashlib
    import hmac

    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = jwt.utils.base64url_encode(json.dumps(claims).encode())
    signing_input = header + b"." + payload
    signature = hmac.new(key.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


async def test_audience_and_issuer_are_checked_when_set(
    stack: Stack, api_redis_url: str, projected: list[JobEvent]
) -> None:
    settings = settings_for(stack, api_redis_url, jwt_audience="jobs-api", jwt_issuer="studio")
    async for client in serve(create_app(settings)):
        right = token(aud="jobs-api", iss="studio")
        assert (await client.get(f"/v1/jobs/{DONE}", headers=bearer(right))).status_code == 200
        for wrong in (token(aud="other", iss="studio"), token(aud="jobs-api", iss="x"), token()):
            assert (await client.get(f"/v1/jobs/{DONE}", headers=bearer(wrong))).status_code == 401


async def test_an_unchanged_job_answers_304_to_its_etag(client: httpx.AsyncClient) -> None:
    first = await client.get(f"/v1/jobs/{DONE}", headers=bearer(token()))
    etag = first.headers["etag"]
    again = await client.get(f"/v1/jobs/{DONE}", headers=bearer(token()) | {"If-None-Match": etag})
    assert again.status_code in (304, 200)  # 200 only if the presign time bucket just turned
    if again.status_code == 304:
        assert again.content == b""
        assert again.headers["etag"] == etag
    stale = await client.get(
        f"/v1/jobs/{DONE}", headers=bearer(token()) | {"If-None-Match": '"v1.1.1.0"'}
    )
    assert stale.status_code == 200


async def test_urls_stay_identical_within_a_presign_time_bucket(client: httpx.AsyncClient) -> None:
    first = await client.get(f"/v1/jobs/{DONE}", headers=bearer(token()))
    second = await client.get(f"/v1/jobs/{DONE}", headers=bearer(token()))
    if first.headers["etag"] == second.headers["etag"]:
        assert first.content == second.content


async def test_a_long_poll_returns_as_soon_as_the_public_seq_passes_after_seq(
    client: httpx.AsyncClient, stack: Stack
) -> None:
    headers = bearer(token())
    current = (await client.get(f"/v1/jobs/{RUNNING}", headers=headers)).json()
    seq = current["latest_event"]["seq"]

    async def publish_later() -> None:
        await asyncio.sleep(1.0)
        await produce(
            stack.kafka_bootstrap,
            _state["topic"],
            [event(job_id=RUNNING, seq=seq + 1, kind="stage", message="halfway")],
        )

    started = time.monotonic()
    publisher = asyncio.create_task(publish_later())
    response = await client.get(
        f"/v1/jobs/{RUNNING}", params={"wait": 20, "after_seq": seq}, headers=headers
    )
    elapsed = time.monotonic() - started
    await publisher
    assert response.status_code == 200
    assert response.json()["latest_event"]["seq"] == seq + 1
    assert response.json()["latest_event"]["message"] == "halfway"
    assert elapsed < 15, "woken by the change, not by the deadline"


async def test_a_long_poll_without_change_returns_the_job_after_the_wait(
    client: httpx.AsyncClient,
) -> None:
    started = time.monotonic()
    response = await client.get(
        f"/v1/jobs/{FAILED}", params={"wait": 1.5, "after_seq": 99}, headers=bearer(token())
    )
    assert 1.4 <= time.monotonic() - started < 5
    assert response.status_code == 200
    assert response.json()["status"] == "FAILED"


async def test_wait_beyond_25_seconds_is_a_validation_error(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v1/jobs/{DONE}", params={"wait": 26}, headers=bearer(token()))
    assert response.status_code == 422


async def test_redis_unreachable_answers_503_with_retry_after_quickly(stack: Stack) -> None:
    from devstack.processes import free_port

    settings = settings_for(stack, f"redis://127.0.0.1:{free_port()}/0")
    async for client in serve(create_app(settings)):
        started = time.monotonic()
        response = await client.get(f"/v1/jobs/{DONE}", headers=bearer(token()))
        assert time.monotonic() - started < 5
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert response.json()["detail"]["code"] == "UNAVAILABLE"


async def test_a_frozen_redis_answers_503_not_a_hang(stack: Stack, tmp_path: Path) -> None:
    from devstack.processes import start_redis

    server: LocalProcess = start_redis(tmp_path)
    try:
        settings = settings_for(stack, f"redis://127.0.0.1:{server.port}/0")
        async for client in serve(create_app(settings)):
            assert (
                await client.get(f"/v1/jobs/{DONE}", headers=bearer(token()))
            ).status_code == 404
            server.pause()
            started = time.monotonic()
            response = await client.get(f"/v1/jobs/{DONE}", headers=bearer(token()))
            assert time.monotonic() - started < 5
            assert response.status_code == 503
    finally:
        server.stop()


async def test_openapi_documents_the_statuses_bodies_and_security(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/v1/jobs/{id}"]["get"]
    assert {"200", "401", "404", "422"} <= set(operation["responses"])
    assert schema["components"]["securitySchemes"]
    assert operation["security"]
    assert "another tenant" in operation["description"]


async def test_an_unknown_path_answers_401_without_a_token_and_404_with_one(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/v1/nothing-here", f"/v1/jobs/{DONE}/", "/admin"):
        anonymous = await client.get(path)
        assert anonymous.status_code == 401, path
        assert anonymous.json()["detail"]["code"] == "UNAUTHENTICATED"
        assert (await client.get(path, headers=bearer(token()))).status_code == 404, path
    assert (await client.get("/openapi.json")).status_code == 200


async def test_the_fast_path_and_the_route_answer_the_same_bytes(client: httpx.AsyncClient) -> None:
    # The fast path answers a plain read or a long-poll; a parameter it does not know sends
    # the request through FastAPI's route (which ignores that parameter).
    for job, query in itertools.product(
        (DONE, RUNNING, FRESH, "01JDQ8Z3M4W8K2V7T6R5N4P3ZZ", GLOBEX_JOB),
        ("", "?after_seq=0", "?wait=0.5&after_seq=99"),
    ):
        fast = await client.get(f"/v1/jobs/{job}{query}", headers=bearer(token()))
        separator = "&" if query else "?"
        routed = await client.get(
            f"/v1/jobs/{job}{query}{separator}route=1", headers=bearer(token())
        )
        if fast.headers.get("etag") == routed.headers.get("etag"):
            assert (fast.status_code, fast.content) == (routed.status_code, routed.content), job
            assert fast.headers.get("cache-control") == routed.headers.get("cache-control")


# --- tokens as identity providers issue them ------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"iat": 10, "nbf": 10}, 200),  # the provider's clock 10 s ahead of ours
        ({"iat": 25}, 200),
        ({"nbf": 60}, 401),  # beyond the 30 s of leeway
        ({"iat": 60}, 401),
        ({"exp": -10}, 200),  # expired 10 s ago by our clock: within the leeway
        ({"exp": -60}, 401),
    ],
)
async def test_clock_skew_within_the_leeway_is_accepted(
    client: httpx.AsyncClient, claims: dict[str, int], status: int
) -> None:
    now = int(time.time())
    timed: dict[str, Any] = {name: now + offset for name, offset in claims.items()}
    exp_in = timed.pop("exp", now + 600) - time.time()
    response = await client.get(f"/v1/jobs/{DONE}", headers=bearer(token(exp_in=exp_in, **timed)))
    assert response.status_code == status, response.text


class JwksServer:
    """An identity provider's key set on a local HTTP server; `keys` can change (rotation)."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.keys: list[dict[str, Any]] = []
        self.requests = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, kid: str, key: rsa.RSAPrivateKey) -> None:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        self.keys.append(public | {"kid": kid, "use": "sig", "alg": "RS256"})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


def signed(key: rsa.RSAPrivateKey, kid: str, **claims: Any) -> dict[str, str]:
    body = {"tenant_id": "acme", "exp": int(time.time()) + 600} | claims
    return bearer(jwt.encode(body, key, algorithm="RS256", headers={"kid": kid}))


async def test_keys_from_a_jwks_url_verify_tokens_across_a_key_rotation(
    stack: Stack,
    api_redis_url: str,
    projected: list[JobEvent],
    jwks: JwksServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import api.jwks

    old, new = rsa_pem()[0], rsa_pem()[0]
    jwks.publish("2026-11", old)
    settings = settings_for(stack, api_redis_url, jwt_secret=None, jwt_jwks_url=jwks.url)
    monkeypatch.setattr(api.jwks, "UNKNOWN_KID_SECONDS", 0.5)
    async for client in serve(create_app(settings)):
        path = f"/v1/jobs/{DONE}"
        assert (await client.get(path, headers=signed(old, "2026-11"))).status_code == 200
        assert jwks.requests == 1
        jwks.publish("2026-12", new)  # the provider rotates: a new key, tokens follow
        # Made before the fetch below: making RSA keys can take longer than the pause
        # between two fetches for unknown kids.
        forged = [signed(rsa_pem()[0], f"made-up-{n}") for n in range(5)]
        await asyncio.sleep(0.6)
        assert (await client.get(path, headers=signed(new, "2026-12"))).status_code == 200
        assert jwks.requests == 2
        for headers in forged:  # made-up kids: 401 each, and no fetch per token
            assert (await client.get(path, headers=headers)).status_code == 401
        assert jwks.requests == 2, "made-up kids so soon after a fetch make no fetch"
        wrong_key = signed(new, "2026-11")  # a published kid, another key's signature
        assert (await client.get(path, headers=wrong_key)).status_code == 401


async def test_a_jwks_url_that_does_not_answer_gives_401_never_500(
    stack: Stack, api_redis_url: str, projected: list[JobEvent]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/jwks.json"
    settings = settings_for(stack, api_redis_url, jwt_secret=None, jwt_jwks_url=dead)
    async for client in serve(create_app(settings)):
        response = await client.get(f"/v1/jobs/{DONE}", headers=signed(rsa_pem()[0], "k"))
        assert response.status_code == 401
        assert response.json()["detail"]["code"] == "UNAUTHENTICATED"


# --- storage references outside the rules ---------------------------------------------------


async def test_a_stored_reference_outside_the_storage_rules_is_left_out_never_signed(
    stack: Stack, bucket: str, api_redis_url: str, projected: list[JobEvent]
) -> None:
    """A job projected before the rules changed: the api re-checks every reference."""
    settings = settings_for(stack, api_redis_url, artifact_buckets="some-other-bucket")
    app = create_app(settings)
    async for client in serve(app):
        response = await client.get(f"/v1/jobs/{DONE}", headers=bearer(token()))
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "SUCCEEDED"
    assert body["manifest"] == []
    assert body["latest_event"]["artifacts"] == []
    assert "X-Amz-Signature" not in response.text
    assert "api_refused_artifacts_total 8.0" in metrics  # 4 in the manifest, 4 in the event


# --- traces -------------------------------------------------------------------------------------


async def test_a_read_continues_the_clients_trace_with_the_redis_read_as_a_child(
    stack: Stack, api_redis_url: str, projected: list[JobEvent]
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = bearer(token()) | {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    app = create_app(settings_for(stack, api_redis_url), tracer_provider=provider)
    async for client in serve(app):
        assert (await client.get(f"/v1/jobs/{DONE}", headers=headers)).status_code == 200
    spans = {span.name: span for span in exporter.get_finished_spans()}
    request, read = spans["GET /v1/jobs/{id}"], spans["redis HGETALL"]
    assert request.context is not None
    assert read.context is not None
    assert f"{request.context.trace_id:032x}" == trace_id, "the client's trace goes on"
    assert request.parent is not None
    assert request.parent.span_id == 0x00F067AA0BA902B7
    assert read.parent is not None
    assert read.parent.span_id == request.context.span_id
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 200
