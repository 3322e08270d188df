"""Read path throughput: `GET /v1/jobs/{id}` hot and cold, against bare routes (same bytes).

In one run, under the same server settings (`python -m api`: uvicorn, uvloop, httptools, one
worker, no access log), five targets:

- ours, hot: the real api (`python -m api`) reading one job with 4 final artifacts (manifest
  of 4 + latest event with the same 4: 8 presigned URLs per response) from a real
  redis-server over and over, with one valid HS256 token for every request (the verifier
  caches its claims, as for a poller);
- ours, cold: the real api reading `--cold-jobs` distinct finished jobs of the same shape in
  turn (a wrk script cycles through their paths), so that each is read once per cycle;
- bare: `bench.bare_app`, a FastAPI route returning one captured response body of ours as
  pre-serialised bytes (its ceiling: HTTP + routing, nothing else);
- bare + HGETALL, hot and cold: the same route after one `HGETALL` of the job's real key
  with redis-py's asyncio client (what a careful team would write by hand), for the one job
  or for the same distinct jobs in turn.

All are loaded by wrk (`make bench` installs it) with the same connections and duration:
one warm-up per target, then `--rounds` rounds, each running every target once in an order
rotated from round to round. The figures are the medians over the rounds (each round's are
in the result too). The presigner is timed per URL against botocore's
`generate_presigned_url` (s3v4).

    uv run python -m bench.read [--rounds 5] [--connections 32] [--duration 5] [--warmup 2]
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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import jwt
from redis import Redis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from bench.bare_app import HGETALL_PREFIX
from bench.common import write_result
from bench.presign_compare import SETUPS, presign_cost, sample_keys
from contracts.job_state import DEFAULT_VERSION, encode_state, job_key
from devstack import start_stack
from devstack.data import event, ulid
from devstack.processes import LocalProcess, free_port
from devstack.services import start_api, start_listening
from projector.fold import fold

SECRET = "bench-read-secret-0123456789abcdef0123"  # noqa: S105 - a bench key
TENANT = "acme"
JOB_ID = "01JDQ8Z3M4W8K2V7T6R5N4P3Q2"
PATH = f"/v1/jobs/{JOB_ID}"
COLD_JOBS = 20_000
TARGET_VS_BARE = 0.5
TARGET_PRESIGN_SPEEDUP = 10.0
# The ratios the read path is judged by, against bare + HGETALL: (target, at most or at least).
RATIO_TARGETS: dict[str, tuple[float, bool]] = {
    "hot_p99_vs_bare_hgetall": (0.5, True),
    "hot_rps_vs_bare_hgetall": (2.0, False),
    "cold_p99_vs_bare_hgetall": (1.0, True),
    "cold_rps_vs_bare_hgetall": (1.0, False),
}
# The targets, in the order of a round's first run; later rounds rotate it.
ORDER = ("ours_hot", "bare_hgetall_hot", "bare", "ours_cold", "bare_hgetall_cold")
LABELS = {
    "ours_hot": "ours, hot",
    "ours_cold": "ours, cold",
    "bare": "bare",
    "bare_hgetall_hot": "bare + HGETALL, hot",
    "bare_hgetall_cold": "bare + HGETALL, cold",
}
WRK_MISSING = (
    "wrk is not on PATH. `make bench` installs it where apt-get can; otherwise "
    "`brew install wrk` (macOS) or build https://github.com/wg/wrk."
)
# wrk prints one JSON line when done; latencies are in microseconds. `next_path` is where a
# cycle through paths (WRK_CYCLE) stopped: the next run starts there.
WRK_DONE = """
local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

done = function(summary, latency, requests)
  local e = summary.errors
  local next_path = 0
  for _, thread in ipairs(threads) do
    next_path = math.max(next_path, thread:get("next_path") or 0)
  end
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"socket_errors":%d,"non_2xx_3xx":%d,'
    .. '"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"next_path":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.mean, next_path))
end
"""
# Arguments: a file of paths (one a line), the number of threads, the index to start at.
# Thread k reads paths start + k, start + k + threads, ...: each path once per cycle.
WRK_CYCLE = """
local paths = {}
local step = 1

function init(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
  step = tonumber(args[2])
  next_path = tonumber(args[3]) + thread_index
end

request = function()
  local path = paths[next_path % #paths + 1]
  next_path = next_path + step
  return wrk.format(nil, path)
end
"""


# --- the jobs and the servers --------------------------------------------------------------------


def job_fields(bucket: str) -> dict[str, str]:
    """Job JOB_ID's hash: succeeded with 4 final artifacts, as the projector's merge writes it."""
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
    return dict(encode_state(fold(events)).items())


def cold_job_ids(jobs: int) -> list[str]:
    """Distinct valid ULIDs, none of them JOB_ID."""
    return [ulid(n) for n in range(1, jobs + 1)]


def store_jobs(redis_url: str, fields: Mapping[str, str], job_ids: Sequence[str]) -> None:
    """`fields` (job JOB_ID's) under each job id of `job_ids`, the job id in them replaced
    (its artifacts' keys), in pipelined HSETs."""
    redis = Redis.from_url(redis_url)
    try:
        pipe = redis.pipeline(transaction=False)
        for n, job_id in enumerate(job_ids, start=1):
            mapping: dict[FieldT, EncodableT] = {
                name: value.replace(JOB_ID, job_id) for name, value in fields.items()
            }
            pipe.hset(job_key(DEFAULT_VERSION, TENANT, job_id), mapping=mapping)
            if n % 1000 == 0:
                pipe.execute()
        pipe.execute()
    finally:
        redis.close()


def drop_jobs(redis_url: str, job_ids: Sequence[str]) -> None:
    """Unlink the jobs stored by `store_jobs` (on a Redis the bench did not start)."""
    redis = Redis.from_url(redis_url)
    try:
        for first in range(0, len(job_ids), 1000):
            keys = [job_key(DEFAULT_VERSION, TENANT, i) for i in job_ids[first : first + 1000]]
            redis.unlink(*keys)
    finally:
        redis.close()


def bearer_token() -> str:
    claims = {"tenant_id": TENANT, "exp": int(time.time()) + 3600, "sub": "bench"}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def start_bare(body_path: Path, redis_url: str, workdir: Path) -> LocalProcess:
    port = free_port()
    argv = [sys.executable, "-m", "bench.bare_app"]
    env = {
        "BARE_BODY_PATH": str(body_path),
        "BARE_PORT": str(port),
        "BARE_TENANT": TENANT,
        "BARE_VERSION": DEFAULT_VERSION,
        "REDIS_URL": redis_url,
    }
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


@dataclass
class Cycle:
    """Paths read in turn, one a line of `paths_file`; `start`: where the next run begins, so
    that a run does not read again what the last one has just read."""

    paths_file: Path
    paths: int
    start: int = 0


@dataclass(frozen=True)
class Target:
    name: str
    server: LocalProcess
    path: str  # read over and over, unless `cycle` is set
    cycle: Cycle | None = None


def run_wrk(
    wrk: str,
    port: int,
    path: str,
    headers: dict[str, str],
    connections: int,
    threads: int,
    seconds: float,
    cycle: Cycle | None = None,
) -> Load:
    """`path` over and over, or `cycle`'s paths in turn (advancing its `start`)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_DONE if cycle is None else WRK_DONE + WRK_CYCLE)
    try:
        argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "-s", script.name]
        for name, value in headers.items():
            argv += ["-H", f"{name}: {value}"]
        argv.append(f"http://127.0.0.1:{port}{path}")
        if cycle is not None:
            argv += [str(cycle.paths_file), str(threads), str(cycle.start)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.unlink(script.name)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    line = next(s for s in reversed(done.stdout.splitlines()) if s.startswith("{"))
    stats = json.loads(line)
    if cycle is not None:
        cycle.start = stats["next_path"] % cycle.paths
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


def load(
    target: Target, headers: dict[str, str], args: argparse.Namespace, wrk: str, seconds: float
) -> Load:
    found = run_wrk(
        wrk,
        target.server.port,
        target.path,
        headers,
        args.connections,
        args.threads,
        seconds,
        target.cycle,
    )
    if found.errors:
        raise RuntimeError(f"{target.name}: {found.errors} errors\n{target.server.log_tail()}")
    return found


def median_load(loads: Sequence[Load]) -> Load:
    """Each figure's median over the rounds (errors: their sum)."""

    def median(values: Sequence[float]) -> float:
        return float(statistics.median(values))

    return Load(
        generator=loads[0].generator,
        connections=loads[0].connections,
        seconds=median([x.seconds for x in loads]),
        requests=round(median([x.requests for x in loads])),
        requests_per_s=median([x.requests_per_s for x in loads]),
        p50_ms=median([x.p50_ms for x in loads]),
        p99_ms=median([x.p99_ms for x in loads]),
        mean_ms=median([x.mean_ms for x in loads]),
        errors=sum(x.errors for x in loads),
    )


def rounds_order(rounds: int) -> list[list[str]]:
    """Every target once per round, the order rotated by one from a round to the next."""
    return [[*ORDER[r % len(ORDER) :], *ORDER[: r % len(ORDER)]] for r in range(rounds)]


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


def write_paths(path: Path, prefix: str, job_ids: Sequence[str]) -> Cycle:
    path.write_text("".join(f"{prefix}/v1/jobs/{job_id}\n" for job_id in job_ids))
    return Cycle(path, len(job_ids))


def check_api(api: LocalProcess, auth: dict[str, str], cold_ids: Sequence[str]) -> bytes:
    """Ours answers for the hot job and the cold ones; returns its body of job JOB_ID."""
    status, body = asyncio.run(fetch(api.port, PATH, auth))
    if status != 200:
        raise RuntimeError(f"ours answered {status}: {body[:500]!r}\n{api.log_tail()}")
    parsed = json.loads(body)
    urls = parsed["manifest"] + parsed["latest_event"]["artifacts"]
    assert len(urls) == 8, f"expected 8 presigned URLs, got {len(urls)}"
    for job_id in (cold_ids[0], cold_ids[-1]):
        status, cold = asyncio.run(fetch(api.port, f"/v1/jobs/{job_id}", auth))
        if status != 200 or len(cold) != len(body) or job_id.encode() not in cold:
            raise RuntimeError(f"ours answered {status} for job {job_id}: {cold[:500]!r}")
    return body


def check_bare(bare: LocalProcess, body: bytes, cold_ids: Sequence[str]) -> None:
    """The bare routes serve ours's bytes; the HGETALL one reads the jobs' real keys."""
    for path in (PATH, f"{HGETALL_PREFIX}{PATH}", f"{HGETALL_PREFIX}/v1/jobs/{cold_ids[-1]}"):
        found = asyncio.run(fetch(bare.port, path, {}))
        assert found == (200, body), f"bare {path} must serve the same bytes: {found[0]}"
    missing = asyncio.run(fetch(bare.port, f"{HGETALL_PREFIX}/v1/jobs/{ulid(0)}", {}))
    assert missing[0] == 404, f"bare + HGETALL answered {missing[0]} for a job never stored"


def run(args: argparse.Namespace) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit(WRK_MISSING)
    print("presigning: ours against botocore ...", flush=True)
    presign = presign_costs(args.presign_n, args.presign_repeats)

    workdir = Path(tempfile.mkdtemp(prefix="bench-read-"))
    stack = start_stack(workdir)
    cold_ids = cold_job_ids(args.cold_jobs)
    try:
        with stopped_on_exit([]) as servers:
            bucket = "bench-renders"
            fields = job_fields(bucket)
            started = time.perf_counter()
            store_jobs(stack.redis_url, fields, [JOB_ID, *cold_ids])
            print(
                f"stored {len(cold_ids) + 1:,} jobs in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            env = stack.env() | {
                "JWT_SECRET": SECRET,
                "AWS_REGION": "us-east-1",
                "ARTIFACT_BUCKETS": bucket,
            }
            api = start_api(env, workdir)
            servers.append(api)
            auth = {"Authorization": f"Bearer {bearer_token()}"}
            body = check_api(api, auth, cold_ids)
            body_path = workdir / "body.json"
            body_path.write_bytes(body)
            bare = start_bare(body_path, stack.redis_url, workdir)
            servers.append(bare)
            check_bare(bare, body, cold_ids)

            targets = {
                "ours_hot": Target("ours_hot", api, PATH),
                "ours_cold": Target(
                    "ours_cold", api, "/", write_paths(workdir / "ours.txt", "", cold_ids)
                ),
                "bare": Target("bare", bare, PATH),
                "bare_hgetall_hot": Target("bare_hgetall_hot", bare, HGETALL_PREFIX + PATH),
                "bare_hgetall_cold": Target(
                    "bare_hgetall_cold",
                    bare,
                    "/",
                    write_paths(workdir / "hgetall.txt", HGETALL_PREFIX, cold_ids),
                ),
            }
            print(
                f"ours: {len(body)} B body; {args.rounds} round(s) of {len(targets)} targets, "
                f"{args.duration:g} s each, after a {args.warmup:g} s warm-up each ...",
                flush=True,
            )
            for name in ORDER:
                load(targets[name], auth, args, wrk, args.warmup)
            order = rounds_order(args.rounds)
            per_round: dict[str, list[Load]] = {name: [] for name in ORDER}
            for number, names in enumerate(order, start=1):
                for name in names:
                    found = load(targets[name], auth, args, wrk, args.duration)
                    per_round[name].append(found)
                    print(
                        f"  round {number}: {LABELS[name]:22s} {found.requests_per_s:8,.0f} req/s"
                        f"  p50 {found.p50_ms:6.2f} ms  p99 {found.p99_ms:6.2f} ms",
                        flush=True,
                    )
        pieces = None
        if args.profile:
            os.environ.update(env)  # the presigner reads its credentials as boto3 does
            pieces = asyncio.run(_profile(env, args.profile_requests))
    finally:
        if "redis" not in stack.local:  # a Redis the bench did not start: leave it clean
            with suppress(RedisError):
                drop_jobs(stack.redis_url, [JOB_ID, *cold_ids])
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    medians = {name: median_load(loads) for name, loads in per_round.items()}
    hot, cold = medians["ours_hot"], medians["ours_cold"]
    hgetall_hot, hgetall_cold = medians["bare_hgetall_hot"], medians["bare_hgetall_cold"]
    ratios = {
        "hot_p99_vs_bare_hgetall": hot.p99_ms / hgetall_hot.p99_ms,
        "hot_rps_vs_bare_hgetall": hot.requests_per_s / hgetall_hot.requests_per_s,
        "cold_p99_vs_bare_hgetall": cold.p99_ms / hgetall_cold.p99_ms,
        "cold_rps_vs_bare_hgetall": cold.requests_per_s / hgetall_cold.requests_per_s,
    }
    return {
        "body_bytes": len(body),
        "presigned_urls_per_response": 8,
        "cold_jobs": len(cold_ids),
        "rounds": args.rounds,
        "seconds_per_run": args.duration,
        "order": order,
        "load": {name: asdict(found) for name, found in medians.items()},  # medians
        "load_per_round": {name: [asdict(x) for x in loads] for name, loads in per_round.items()},
        "ratios": ratios,
        "meets": {name: meets(name, ratio) for name, ratio in ratios.items()},
        "ours_vs_bare": hot.requests_per_s / medians["bare"].requests_per_s,
        "in_process_us": pieces,
        "presign": presign,
        "targets": {
            "ratios": {
                name: {"target": target, "at_most": at_most}
                for name, (target, at_most) in RATIO_TARGETS.items()
            },
            "ours_vs_bare": TARGET_VS_BARE,
            "presign_speedup": TARGET_PRESIGN_SPEEDUP,
        },
    }


def meets(name: str, ratio: float) -> bool:
    target, at_most = RATIO_TARGETS[name]
    return ratio <= target if at_most else ratio >= target


def report(result: dict[str, Any]) -> None:
    loads = result["load"]
    first = loads["ours_hot"]
    print(
        f"\nGET {PATH} - {first['generator']}, {first['connections']} connections, "
        f"{result['body_bytes']} B body; cold: {result['cold_jobs']:,} jobs in turn; "
        f"median over {result['rounds']} round(s) of {result['seconds_per_run']:g} s"
    )
    print(f"{'':22s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s}  req/s per round")
    for name in ORDER:
        row = loads[name]
        rounds = ", ".join(f"{x['requests_per_s']:,.0f}" for x in result["load_per_round"][name])
        print(
            f"{LABELS[name]:22s} {row['requests_per_s']:9,.0f} {row['p50_ms']:8.2f} "
            f"{row['p99_ms']:8.2f}  {rounds}"
        )
    for name, ratio in result["ratios"].items():
        target, at_most = RATIO_TARGETS[name]
        verdict = "meets" if result["meets"][name] else "MISSES"
        print(f"{name:26s} {ratio:6.2f} ({verdict} {'≤' if at_most else '≥'} {target:g})")
    ratio = result["ours_vs_bare"]
    verdict = "meets" if ratio >= TARGET_VS_BARE else "BELOW"
    print(f"ours hot / bare req/s = {ratio:.0%} ({verdict} the {TARGET_VS_BARE:.0%} target)")
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
QUICK = [
    "--rounds",
    "1",
    "--duration",
    "1",
    "--warmup",
    "1",
    "--presign-n",
    "500",
    "--presign-repeats",
    "1",
]


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=positive, default=5, help="each runs every target once")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds per target, not measured"
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--cold-jobs", type=positive, default=COLD_JOBS, help="distinct jobs the cold targets read"
    )
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
