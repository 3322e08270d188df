"""Hostile requests against the real `python -m api` (uvicorn + httptools), over a raw socket.

Completes `test_api_fuzz.py` (schemathesis, plus hand-written paths and long tokens) with what
it does not send: request targets and header blocks beyond the server's limits, hundreds of
headers, megabyte tokens, forged JWT headers (`alg: none`, another HMAC, `jku`, `x5u`, `jwk`,
`kid` injection), malformed base64 and JSON inside tokens, claims beyond a double, and more
path tricks. Every answer is a status the contract documents (CONTRACT §3) - or, for bytes
that are not an HTTP request at all, the server's own 400 - and no body carries a trace of
storage (bucket, key, `s3://`), a stack trace, a local path or the JWT secret.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from redis import Redis
from redis.typing import EncodableT, FieldT

from contracts.job_state import encode_state, job_key
from devstack import Stack
from devstack.data import event
from devstack.processes import LocalProcess
from devstack.services import start_api
from projector.fold import fold

pytestmark = pytest.mark.integration

SECRET = "hostile-test-secret-0123456789abcdef"  # noqa: S105 - a test key
HOSTILE_DB = 7  # a database of its own: `projection:active` is per database
TENANT = "acme"
DONE = "01JDQ8Z3M4W8K2V7T6R5N4P3Q2"
BUCKET = "hostile-renders-bucket"
STORAGE_KEY = "renders/storage-key-do-not-leak"
DOCUMENTED = {200, 304, 401, 404, 422, 503}
# What uvicorn (httptools) answers to bytes that do not parse as an HTTP/1.1 request, and to a
# request target over ~64 KB: 400, `Invalid HTTP request received.` as text/plain. It has no
# header-size limit (so never 431): a megabyte header reaches the app, which answers 401.
NOT_HTTP = {400}
LEAKS = re.compile(
    rb"(?i)" + re.escape(BUCKET.encode()) + rb"|storage-key|s3://|traceback|\bfile \"|"
    rb"\.py\b|/work/|redis://|" + re.escape(SECRET.encode())
)

Reply = tuple[int, dict[str, str], bytes]


# --- the server and its data --------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_redis_url(redis_url: str) -> Iterator[str]:
    """A finished job of TENANT whose artifacts name BUCKET and STORAGE_KEY."""
    url = re.sub(r"/\d*$", "", redis_url.rstrip("/")) + f"/{HOSTILE_DB}"
    artifacts = [
        {"bucket": BUCKET, "key": f"{STORAGE_KEY}/{i}.png", "kind": "on_model_render",
         "role": "final", "metadata": {"i": i}}
        for i in range(2)
    ]  # fmt: skip
    events = [
        event(job_id=DONE, seq=1),
        event(job_id=DONE, seq=2, kind="succeeded", artifacts=artifacts),
    ]
    client = Redis.from_url(url)
    try:
        client.flushdb()
        fields: dict[FieldT, EncodableT] = {}
        fields.update(encode_state(fold(events)))
        client.hset(job_key("v1", TENANT, DONE), mapping=fields)
        yield url
    finally:
        client.close()


@pytest.fixture(scope="module")
def api(
    stack: Stack, hostile_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalProcess]:
    env = stack.env() | {
        "REDIS_URL": hostile_redis_url,
        "JWT_SECRET": SECRET,
        "ARTIFACT_BUCKETS": BUCKET,
    }
    server = start_api(env, Path(tmp_path_factory.mktemp("hostile-api")))
    try:
        yield server
    finally:
        server.stop()


async def send_raw(port: int, request: bytes) -> Reply:
    """Bytes as given, one request per connection; the answer, read to its end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=15)
    except ConnectionResetError:  # the server answered and closed before reading it all
        raw = await asyncio.wait_for(reader.read(), timeout=15)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def request(target: str, headers: list[tuple[str, str]] | None = None) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: api", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def assert_answer(name: str, reply: Reply, allowed: set[int]) -> None:
    """A status allowed here, the documented body of it, and nothing leaked."""
    status, headers, body = reply
    shown = f"{name}: {status} {body[:300]!r}"
    assert allowed <= DOCUMENTED | NOT_HTTP
    assert status in allowed, shown
    assert "set-cookie" not in headers, shown
    if status == 200:  # storage shows only inside the presigned URLs (path-style here)
        data = json.loads(body)
        assert data["id"] == DONE, shown
        for artifact in [*data["manifest"], *data["latest_event"]["artifacts"]]:
            assert set(artifact) == {"image_url", "kind", "role", "metadata"}, shown
            artifact.pop("image_url")
        body = json.dumps(data).encode()
    assert not LEAKS.search(body), shown
    if status == 400:
        assert body == b"Invalid HTTP request received.", shown
    elif status == 304:
        assert body == b"", shown
    elif status != 200:
        assert_error_body(status, headers, json.loads(body), shown)


def assert_error_body(status: int, headers: dict[str, str], data: Any, shown: str) -> None:
    if status == 401:
        assert headers["www-authenticate"].startswith("Bearer"), shown
    if status == 422:
        assert {"loc", "msg", "type"} <= set(data["detail"][0]), shown
    elif status != 404 or data != {"detail": "Not Found"}:  # that one: a path no route has
        assert set(data["detail"]) == {"code", "message"}, shown


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**extra: Any) -> dict[str, Any]:
    return {"tenant_id": TENANT, "exp": int(time.time()) + 3600} | extra


def valid_token(**extra: Any) -> str:
    return jwt.encode(claims(**extra), SECRET, "HS256")


def signed(header: dict[str, Any] | bytes, payload: bytes, key: bytes = SECRET.encode()) -> str:
    """A JWS with exactly this header and payload, signed HMAC-SHA256 with `key`."""
    head = b64(header if isinstance(header, bytes) else json.dumps(header).encode())
    signing_input = f"{head}.{b64(payload)}"
    return f"{signing_input}.{b64(hmac.digest(key, signing_input.encode(), hashlib.sha256))}"


# --- oversized requests -------------------------------------------------------------------------


def with_authorization(value: str, target: str = f"/v1/jobs/{DONE}") -> bytes:
    return request(target, [("Authorization", value)])


def padded(count: int, size: int) -> bytes:
    return request(f"/v1/jobs/{DONE}", [(f"X-Pad-{i}", "v" * size) for i in range(count)])


TLS_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n"
OVERSIZED: list[tuple[str, bytes, set[int]]] = [
    ("64 KB Authorization", with_authorization("Bearer " + "x" * 65_536), {401}),
    ("1 MB token", with_authorization("Bearer " + "e" * 1_000_000), {401}),
    ("1 MB JWT-shaped token", with_authorization("Bearer " + ".".join(["e" * 333_333] * 3)), {401}),
    ("100 headers, no token", padded(100, 100), {401}),
    ("1,000 headers of 1 KB, no token", padded(1_000, 1_024), {401}),
    ("64 KB request target", request("/v1/jobs/" + "0" * 65_536), NOT_HTTP),
    ("1 MB request target", request("/v1/jobs/" + "0" * 1_000_000), NOT_HTTP),
    ("a raw NUL in the path", request(f"/v1/jobs/{DONE[:-1]}\x00"), NOT_HTTP),
    ("a raw space in the path", request(f"/v1/jobs/{DONE[:-1]} 2"), NOT_HTTP),
    ("a header name with a space", request(f"/v1/jobs/{DONE}", [("Bad Name", "x")]), NOT_HTTP),
    ("a control byte in a header value", with_authorization("Bearer a\x01b"), NOT_HTTP),
    ("a folded header line", with_authorization("Bearer\r\n x"), NOT_HTTP),
    ("a TLS handshake", TLS_HELLO, NOT_HTTP),
]


@pytest.mark.parametrize(
    ("raw", "allowed"), [case[1:] for case in OVERSIZED], ids=[case[0] for case in OVERSIZED]
)
async def test_oversized_and_malformed_requests_get_a_documented_status_or_the_servers_400(
    api: LocalProcess, raw: bytes, allowed: set[int]
) -> None:
    assert_answer("", await send_raw(api.port, raw), allowed)


async def test_a_hundred_extra_headers_do_not_stop_a_valid_read(api: LocalProcess) -> None:
    padding = [(f"X-Pad-{i}", "v" * 100) for i in range(100)]
    token = ("Authorization", f"Bearer {valid_token()}")
    for headers in ([*padding, token], [token, *padding]):
        reply = await send_raw(api.port, request(f"/v1/jobs/{DONE}", headers))
        assert_answer("padded", reply, {200})


async def test_repeated_authorization_headers_get_documented_statuses(api: LocalProcess) -> None:
    good, bad = f"Bearer {valid_token()}", "Bearer not.a.token"
    for target in (f"/v1/jobs/{DONE}", f"/v1/jobs/{DONE}?wait=0"):
        for headers, allowed in (
            ([bad] * 100, {401}),
            ([good] * 100, {200}),
            # The first one counts, on the fast path as on the route.
            ([bad, good], {401}),
            ([good, *[bad] * 99], {200}),
        ):
            raw = request(target, [("Authorization", h) for h in headers])
            assert_answer(f"{target} {len(headers)}", await send_raw(api.port, raw), allowed)


# --- hostile ids --------------------------------------------------------------------------------

# (request target, where it lands with a valid token: 422 for an id that is not a ULID, 404
# for a path no route matches - dot segments and encoded slashes are not resolved)
HOSTILE_IDS: list[tuple[str, str, int]] = [
    ("encoded traversal to /etc/passwd", "/v1/jobs/..%2F..%2Fetc%2Fpasswd", 404),
    ("plain traversal to /etc/passwd", "/v1/jobs/../../etc/passwd", 404),
    ("encoded dot-dot as the id", "/v1/jobs/%2e%2e", 422),
    ("encoded dot as the id", "/v1/jobs/%2E", 422),
    ("double-encoded traversal", "/v1/jobs/%252e%252e%252fetc%252fpasswd", 422),
    ("overlong UTF-8 dot-dot-slash", "/v1/jobs/%C0%AE%C0%AE%C0%AF", 422),
    ("backslash traversal", "/v1/jobs/..%5C..%5Cwindows%5Cwin.ini", 422),
    ("NUL after a valid id", f"/v1/jobs/{DONE}%00", 422),
    ("NUL inside the id", f"/v1/jobs/{DONE[:13]}%00{DONE[14:]}", 422),
    ("CRLF header injection", "/v1/jobs/%0d%0aSet-Cookie:%20x=1", 422),
    ("10,000-character id", "/v1/jobs/" + "0" * 10_000, 422),
    ("60,000-character id", "/v1/jobs/" + "7" * 60_000, 422),
    ("emoji id", "/v1/jobs/" + "%F0%9F%98%80" * 26, 422),
    ("right-to-left override in the id", f"/v1/jobs/{DONE[:-1]}%E2%80%AE", 422),
    ("fullwidth ULID", "/v1/jobs/" + "".join(f"%EF%BC%{0x90 + int(c):02X}" for c in "0" * 26), 422),
    ("Kelvin sign for K", f"/v1/jobs/{DONE[:-1]}%E2%84%AA", 422),
    ("Redis hash tag in the id", "/v1/jobs/%7Bacme%3A" + DONE + "%7D", 422),
    ("Redis glob as the id", "/v1/jobs/*", 422),
    ("matrix parameter", f"/v1/jobs/{DONE};jsessionid=1", 422),
    ("trailing space", f"/v1/jobs/{DONE}%20", 422),
    ("traversal to another job", f"/v1/jobs/{DONE}%2F..%2F{DONE}", 404),
    ("a query naming another path", f"/v1/jobs/{DONE}?id=../../etc/passwd", 200),
    ("absolute-form target", f"http://evil.example/v1/jobs/{DONE}", 200),
]


def hostile_id_cases() -> list[Any]:
    return [
        pytest.param(target, status, with_token, id=f"{name}, {'' if with_token else 'no '}token")
        for name, target, status in HOSTILE_IDS
        for with_token in (True, False)
    ]


@pytest.mark.parametrize(("target", "expected", "with_token"), hostile_id_cases())
async def test_hostile_ids_get_only_documented_statuses(
    api: LocalProcess, target: str, expected: int, with_token: bool
) -> None:
    headers = [("Authorization", f"Bearer {valid_token()}")] if with_token else []
    reply = await send_raw(api.port, request(target, headers))
    assert_answer(target[:80], reply, {expected} if with_token else {401})


# --- hostile tokens -----------------------------------------------------------------------------

HS256 = {"alg": "HS256"}
ATTACKER_SECRET = "attacker-key-0123456789abcdef01234567"  # noqa: S105 - a test key


def with_exp(exp: bytes) -> bytes:
    return b'{"tenant_id":"acme","exp":' + exp + b"}"


def unsigned(header: bytes, payload: bytes, signature: str = "") -> str:
    return f"{b64(header)}.{b64(payload)}.{signature}"


def signed_with(key: bytes, alg: str, payload: bytes) -> str:
    digest = {"HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing_input = f"{b64(json.dumps({'alg': alg}).encode())}.{b64(payload)}"
    return f"{signing_input}.{b64(hmac.digest(key, signing_input.encode(), digest))}"


def attacker_signed(**headers: Any) -> str:
    return jwt.encode(claims(), ATTACKER_SECRET, "HS256", headers=headers)


def attacker_jwk_token() -> str:
    """RS256 signed by the attacker, who puts the matching public key in the header."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return jwt.encode(claims(), private, "RS256", headers={"jwk": jwk, "kid": "attacker"})


def public_pem() -> bytes:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hostile_tokens() -> list[tuple[str, str]]:
    """(name, the value after `Bearer `): none of them may authenticate."""
    now = int(time.time())
    body = json.dumps(claims()).encode()
    deep = b"[" * 5_000 + b"]" * 5_000
    return [
        ("alg none", unsigned(b'{"alg":"none"}', body)),
        ("alg None", unsigned(b'{"alg":"None","typ":"JWT"}', body)),
        ("alg NONE with a signature", unsigned(b'{"alg":"NONE"}', body, "c2lnbmF0dXJl")),
        ("no alg at all", unsigned(b"{}", body)),
        ("HS512 with the secret", signed_with(SECRET.encode(), "HS512", body)),
        ("HS384 with the secret", signed_with(SECRET.encode(), "HS384", body)),
        ("RS256 claimed, HMAC with the secret", signed({"alg": "RS256"}, body)),
        ("RS256 claimed, HMAC with a public key", signed({"alg": "RS256"}, body, public_pem())),
        ("jku to an attacker's key set", attacker_signed(jku="https://evil.example/jwks.json")),
        ("x5u to an attacker's certificate", attacker_signed(x5u="https://evil.example/c.pem")),
        ("embedded jwk of the attacker", attacker_jwk_token()),
        ("kid traversal, empty key", signed(HS256 | {"kid": "../../../../dev/null"}, body, b"")),
        ("kid SQL injection", attacker_signed(kid="x' UNION SELECT 'attacker-key")),
        ("kid command injection", attacker_signed(kid="|cat /etc/passwd;")),
        ("unknown critical header", signed(HS256 | {"crit": ["exp-x"], "exp-x": 1}, body)),
        ("unencoded payload (b64 false)", signed(HS256 | {"b64": False, "crit": ["b64"]}, body)),
        ("header a JSON array", signed(b"[]", body)),
        ("header not JSON", signed(b"{alg: HS256}", body)),
        ("header nested 5,000 deep", signed(deep, body)),
        ("payload a JSON number", signed(HS256, b"1e400")),
        ("payload nested 5,000 deep", signed(HS256, deep)),
        ("exp of 5,000 digits", signed(HS256, with_exp(b"9" * 5_000))),
        ("exp NaN", signed(HS256, with_exp(b"NaN"))),
        ("exp Infinity", signed(HS256, with_exp(b"Infinity"))),
        ("exp 1e400", signed(HS256, with_exp(b"1e400"))),
        ("exp a list", signed(HS256, with_exp(b"[1]"))),
        ("exp a huge negative integer", signed(HS256, with_exp(b"-1" + b"0" * 400))),
        ("no exp", signed(HS256, b'{"tenant_id":"acme"}')),
        ("expired", valid_token(exp=now - 10)),
        ("not yet valid", valid_token(nbf=now + 3600)),
        ("iat beyond a double", signed(HS256, json.dumps(claims(iat=10**400)).encode())),
        ("tenant claim an object", valid_token(tenant_id={"$ne": None})),
        ("tenant claim a glob", valid_token(tenant_id="*")),
        ("tenant claim with a hash tag", valid_token(tenant_id="acme}:x{")),
        ("a bad signature", valid_token()[:-4] + "AAAA"),
        ("no signature", valid_token().rsplit(".", 1)[0] + "."),
        ("malformed base64", "!!!.###.$$$"),
        ("base64 with padding", f"{b64(json.dumps(HS256).encode())}==.{b64(body)}==.x"),
        ("standard base64 alphabet", valid_token().replace("-", "+").replace("_", "/") + "+/"),
        ("two segments", "eyJhbGciOiJIUzI1NiJ9.e30"),
        ("four segments", valid_token() + ".x"),
        ("only dots", "..."),
        ("latin-1 bytes", "\xff\xff\xff\xff.\xff\xff.\xff\xff"),
        ("whitespace inside", valid_token().replace(".", " . ", 1)),
    ]


TOKENS = hostile_tokens()


@pytest.mark.parametrize("value", [v for _, v in TOKENS], ids=[n for n, _ in TOKENS])
async def test_hostile_tokens_get_401_on_every_path(api: LocalProcess, value: str) -> None:
    for target in (f"/v1/jobs/{DONE}", f"/v1/jobs/{DONE}?wait=0", "/v1/jobs/x", "/nowhere"):
        reply = await send_raw(api.port, with_authorization(f"Bearer {value}", target))
        assert_answer(target, reply, {401})


@pytest.mark.parametrize(
    "authorization",
    ["Basic " + b64(b"acme:password"), "Bearer", "Bearer ", "Token x.y.z", "x" * 9_000,
     "Bearer\ta.b.c", "\u00a0Bearer a.b.c", "Bearer " + " " * 5_000],
    ids=["basic", "bare scheme", "empty token", "another scheme", "no scheme", "tab", "nbsp",
         "spaces only"],
)  # fmt: skip
async def test_other_schemes_and_empty_tokens_get_401(
    api: LocalProcess, authorization: str
) -> None:
    reply = await send_raw(api.port, with_authorization(authorization))
    assert_answer(authorization[:20], reply, {401})


async def test_a_token_with_injected_headers_but_a_valid_signature_reads_as_its_signature_says(
    api: LocalProcess,
) -> None:
    """The key is fixed by configuration: `jku`, `x5u` and `kid` are never followed, so a
    token the real secret signed works whatever they say, and nothing else does."""
    forged = {"jku": "https://evil.example/jwks", "x5u": "file:///etc/passwd", "kid": "../../x"}
    value = jwt.encode(claims(), SECRET, "HS256", headers=forged)
    reply = await send_raw(api.port, with_authorization(f"Bearer {value}"))
    assert_answer("forged headers, real signature", reply, {200})


@pytest.mark.parametrize(
    "exp",
    [b"1" + b"0" * 400, b'"1' + b"0" * 400 + b'"'],
    ids=["an integer beyond a double", "a numeric string beyond a double"],
)
async def test_a_signed_token_whose_exp_is_beyond_a_double_is_valid_not_a_500(
    api: LocalProcess, exp: bytes
) -> None:
    """PyJWT accepts any `int()`-able `exp`; 10**400 seconds is later than every time, so the
    token is valid (it was a 500: `float(exp)` overflowed after the signature checked out)."""
    value = signed({"alg": "HS256", "typ": "JWT"}, with_exp(exp))
    for target, status in ((f"/v1/jobs/{DONE}", 200), (f"/v1/jobs/{DONE}?wait=0", 200),
                           ("/v1/jobs/x", 422), ("/nowhere", 404)):  # fmt: skip
        reply = await send_raw(api.port, with_authorization(f"Bearer {value}", target))
        assert_answer(target, reply, {status})
