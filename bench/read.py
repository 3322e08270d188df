"""Read path throughput: `GET /v1/jobs/{id}` against a bare route serving the same bytes.

In one run, under the same server settings (`python -m api`: uvicorn, uvloop, httptools, one
worker, no access log):

- ours: the real api (`python -m api`), reading a job with 4 final artifacts (manifest of 4 +
  latest event with the same 4: 8 presigned URLs per response) from a real redis-server, with
  one valid HS256 token for every request (the verifier caches its claims, as for a poller);
- bare: `bench.bare_app`, a FastAPI route returning one captured response body of ours as
  pre-serialised bytes (its ceiling: HTTP + routing, nothing else).

Both are loaded by wrk (`make bench` installs it) with the same connections and duration,
after a warm-up. The
presigner is timed per URL against botocore's `generate_presigned_url` (s3v4).

    uv run python -m bench.read [--connections 32] [--duration 10] [--warmup 2]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import jwt
from redis import Redis
from redis.typing import EncodableT, FieldT

from bench.common import write_result
from bench.presign_compare import SETUPS, presign_cost, sample_keys
from contracts.job_state import encode_state, job_key
from devstack import start_stack
from devstack.data import event
from devstack.processes import LocalProcess, free_port
from devstack.services import start_api, start_listening
from projector.fold import fold

SECRET = "bench-read-secret-0123456789abcdef0123"  # noqa: S105 - a bench key
TENANT = "acme"
JOB_ID = "01JDQ8Z3M4W8K2V7T6R5N4P3Q2"
PATH = f"/v1/jobs/{JOB_ID}"
TARGET_VS_BARE = 0.5
TARGET_PRESIGN_SPEEDUP = 10.0
WRK_MISSING = (
    "wrk is not on PATH. `make bench` installs it where apt-get can; otherwise "
    "`brew install wrk` (macOS) or build https://github.com/wg/wrk."
)
# wrk prints one JSON line when done; latencies are in microseconds.
WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"socket_errors":%d,"non_2xx_3xx":%d,'
    .. '"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


# --- the job and the servers ---------------------------------------------------------------------


def store_job(redis_url: str, bucket: str) -> None:
    """One succeeded job with 4 final artifacts, written as the projector's merge writes it."""
    finals = [
        {
            "bucket": bucket,
            "key": f"renders/{TENANT}/{JOB_ID}/look-{i}.png",
            "kind": "on_model_render",
            "role": "final",
            "metadata": {"width": 2048, "height": 3072},
        }
        for i in range(4)
    ]
    events = [
        event(job_id=JOB_ID, tenant_id=TENANT, seq=1, kind="created"),
        event(job_id=JOB_ID, tenant_id=TENANT, seq=2, kind="queued"),
        event(job_id=JOB_ID, tenant_id=TENANT, seq=3, kind="stage", payload={"progress": 50}),
        event(
            job_id=JOB_ID,
            tenant_id=TENANT,
            seq=4,
            kind="succeeded",
            artifacts=finals,
            payload={"cost": {"credits": 3}},
            message="Render finished",
        ),
    ]
    fields: dict[FieldT, EncodableT] = {}
    fields.update(encode_state(fold(events)).items())
    redis = Redis.from_url(redis_url)
    try:
        redis.hset(job_key("v1", TENANT, JOB_ID), mapping=fields)
    finally:
        redis.close()


def bearer_token() -> str:
    claims = {"tenant_id": TENANT, "exp": int(time.time()) + 3600, "sub": "bench"}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def start_bare(body_path: Path, workdir: Path) -> LocalProcess:
    port = free_port()
    argv = [sys.executable, "-m", "bench.bare_app"]
    env = {"BARE_BODY_PATH": str(body_path), "BARE_PORT": str(port)}
    return start_listening("bare", argv, env, workdir, port)


# --- one request, for checks ---------------------------------------------------------------------


async def fetch(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# --- load generators -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    generator: str
    connections: int
    seconds: float
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: int  # socket errors and non-2xx answers


def run_wrk(
    wrk: str, port: int, headers: dict[str, str], connections: int, threads: int, seconds: float
) -> Load:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    try:
        argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "-s", script.name]
        for name, value in headers.items():
            argv += ["-H", f"{name}: {value}"]
        argv.append(f"http://127.0.0.1:{port}{PATH}")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.unlink(script.name)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    line = next(s for s in reversed(done.stdout.splitlines()) if s.startswith("{"))
    stats = json.loads(line)
    elapsed = stats["duration_us"] / 1e6
    return Load(
        generator=f"wrk -t{threads}",
        connections=connections,
        seconds=elapsed,
        requests=stats["requests"],
        requests_per_s=stats["requests"] / elapsed,
        p50_ms=stats["p50_us"] / 1000,
        p99_ms=stats["p99_us"] / 1000,
        mean_ms=stats["mean_us"] / 1000,
        errors=stats["socket_errors"] + stats["non_2xx_3xx"],
    )


def load(port: int, headers: dict[str, str], args: argparse.Namespace, wrk: str) -> Load:
    run_wrk(wrk, port, headers, args.connections, args.threads, args.warmup)  # warm-up
    return run_wrk(wrk, port, headers, args.connections, args.threads, args.duration)


# --- presigning ----------------------------------------------------------------------------------


def presign_costs(n: int, repeats: int) -> dict[str, dict[str, float]]:
    """µs per URL, ours against botocore (s3v4), for each addressing setup."""
    keys = sample_keys()
    return {name: presign_cost(name, keys, n, repeats) for name in SETUPS}


# --- where the time goes (--profile) -------------------------------------------------------------


async def _asgi_get(app: Any, headers: list[tuple[bytes, bytes]]) -> int:
    """One request through the ASGI interface, without an HTTP client's own cost."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"api"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("api", 80),
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _profile(env: dict[str, str], requests: int) -> dict[str, float]:
    """Per-request cost of the app and of its pieces, in process, then a cProfile."""
    from api.app import create_app
    from api.dependencies import Services
    from api.render import render_job
    from api.settings import ApiSettings

    settings = ApiSettings(
        redis_url=env["REDIS_URL"],
        s3_endpoint_url=env["S3_ENDPOINT_URL"],
        aws_region="us-east-1",
        jwt_secret=SECRET,  # type: ignore[arg-type]  # pydantic makes it a SecretStr
        artifact_buckets=env["ARTIFACT_BUCKETS"],
    )
    app = create_app(settings)
    authorization = f"Bearer {bearer_token()}"
    headers = [(b"authorization", authorization.encode())]
    clock = time.perf_counter
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        for _ in range(200):
            assert await _asgi_get(app, headers) == 200
        started = clock()
        for _ in range(requests):
            await _asgi_get(app, headers)
        whole = (clock() - started) / requests * 1e6

        started = clock()
        for _ in range(requests):
            await services.verifier.tenant_of(authorization)
        verify = (clock() - started) / requests * 1e6

        started = clock()
        for _ in range(requests):
            stored = await services.reader.read(TENANT, JOB_ID)
        read = (clock() - started) / requests * 1e6

        signed_at = datetime.fromtimestamp(int(time.time()) // 60 * 60, UTC)
        presigner = services.presigner

        def sign(bucket: str, key: str) -> str:
            return presigner.presign_get(bucket, key, 360, signed_at)

        started = clock()
        for _ in range(requests):
            render_job(JOB_ID, stored.fields, sign)
        render = (clock() - started) / requests * 1e6

        async def client(n: int) -> None:
            for _ in range(n):
                await _asgi_get(app, headers)

        profiler = cProfile.Profile()
        profiler.enable()
        await asyncio.gather(*(client(requests // 32) for _ in range(32)))
        profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(25)
    return {
        "app_us_per_request": whole,
        "verify_us": verify,
        "redis_read_us": read,
        "render_and_presign_us": render,
        "rest_us": whole - verify - read - render,  # FastAPI, thread hops, routing
    }


# --- the run -------------------------------------------------------------------------------------


def _exit_on_sigterm(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


@contextmanager
def stopped_on_exit(processes: list[LocalProcess]) -> Iterator[list[LocalProcess]]:
    try:
        yield processes
    finally:
        for process in reversed(processes):
            process.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit(WRK_MISSING)
    print("presigning: ours against botocore ...", flush=True)
    presign = presign_costs(args.presign_n, args.presign_repeats)

    workdir = Path(tempfile.mkdtemp(prefix="bench-read-"))
    stack = start_stack(workdir)
    try:
        with stopped_on_exit([]) as servers:
            bucket = "bench-renders"
            store_job(stack.redis_url, bucket)
            env = stack.env() | {
                "JWT_SECRET": SECRET,
                "AWS_REGION": "us-east-1",
                "ARTIFACT_BUCKETS": bucket,
            }
            api = start_api(env, workdir)
            servers.append(api)
            auth = {"Authorization": f"Bearer {bearer_token()}"}
            status, body = asyncio.run(fetch(api.port, PATH, auth))
            if status != 200:
                raise RuntimeError(f"ours answered {status}: {body[:500]!r}\n{api.log_tail()}")
            parsed = json.loads(body)
            urls = parsed["manifest"] + parsed["latest_event"]["artifacts"]
            assert len(urls) == 8, f"expected 8 presigned URLs, got {len(urls)}"
            body_path = workdir / "body.json"
            body_path.write_bytes(body)
            bare = start_bare(body_path, workdir)
            servers.append(bare)
            bare_status, bare_body = asyncio.run(fetch(bare.port, PATH, {}))
            assert (bare_status, bare_body) == (200, body), "bare must serve the same bytes"

            print(f"ours: {len(body)} B body; loading both for {args.duration:g} s ...", flush=True)
            ours = load(api.port, auth, args, wrk)
            bare_load = load(bare.port, auth, args, wrk)
            for name, result, server in (("ours", ours, api), ("bare", bare_load, bare)):
                if result.errors:
                    raise RuntimeError(f"{name}: {result.errors} errors\n{server.log_tail()}")
        pieces = None
        if args.profile:
            os.environ.update(env)  # the presigner reads its credentials as boto3 does
            pieces = asyncio.run(_profile(env, args.profile_requests))
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    return {
        "body_bytes": len(body),
        "presigned_urls_per_response": 8,
        "load": {"ours": asdict(ours), "bare": asdict(bare_load)},
        "ours_vs_bare": ours.requests_per_s / bare_load.requests_per_s,
        "in_process_us": pieces,
        "presign": presign,
        "targets": {"ours_vs_bare": TARGET_VS_BARE, "presign_speedup": TARGET_PRESIGN_SPEEDUP},
    }


def report(result: dict[str, Any]) -> None:
    ours, bare = result["load"]["ours"], result["load"]["bare"]
    print(
        f"\nGET {PATH} - {ours['generator']}, {ours['connections']} connections, "
        f"{ours['seconds']:.1f} s each, {result['body_bytes']} B body"
    )
    print(f"{'':6s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'requests':>9s}")
    for name, row in (("ours", ours), ("bare", bare)):
        print(
            f"{name:6s} {row['requests_per_s']:9,.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} "
            f"{row['requests']:9,d}"
        )
    ratio = result["ours_vs_bare"]
    verdict = "meets" if ratio >= TARGET_VS_BARE else "BELOW"
    print(f"ours / bare = {ratio:.0%} ({verdict} the {TARGET_VS_BARE:.0%} target)")
    print(f"\npresign, µs per URL {'ours':>8s} {'botocore':>9s} {'speedup':>8s}")
    for name, cost in result["presign"].items():
        verdict = "ok" if cost["speedup"] >= TARGET_PRESIGN_SPEEDUP else "BELOW 10x"
        print(
            f"{name:32s} {cost['ours_us_per_url']:8.2f} {cost['botocore_us_per_url']:9.1f} "
            f"{cost['speedup']:7.1f}x {verdict}"
        )


def report_pieces(pieces: dict[str, float]) -> None:
    print("\nin process, one request at a time (µs per request):")
    for name, value in pieces.items():
        print(f"  {name:24s} {value:8.1f}")
    print("  (rest: FastAPI dependencies and parameters, thread-pool hops, routing)")


# The sizes of `python -m bench.run_all` and of its `--quick` check.
FULL: list[str] = []
QUICK = ["--duration", "1", "--warmup", "1", "--presign-n", "500", "--presign-repeats", "1"]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds, not measured")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--presign-n", type=int, default=5_000, help="signings per timed run")
    parser.add_argument("--presign-repeats", type=int, default=5)
    parser.add_argument(
        "--profile", action="store_true", help="then time the pieces in process, and cProfile"
    )
    parser.add_argument("--profile-requests", type=int, default=3200)
    return parser


def measure(args: argparse.Namespace) -> dict[str, Any]:
    return run(args)


def main() -> None:
    args = parser().parse_args()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    result = run(args)
    report(result)
    if result["in_process_us"]:
        report_pieces(result["in_process_us"])
    print(f"\nwrote {write_result('read', result)}")


if __name__ == "__main__":
    main()
