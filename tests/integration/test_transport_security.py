"""Kafka and Redis reached with TLS and credentials, end to end, and refused ones stopping the
processes at start with one line (CONTRACT §4).

Kafka: the local broker has no TLS listener, so a TLS-terminating proxy (`tests.tls`) stands
in front of it, requiring a client certificate, and the broker advertises the proxy's port.
SASL is covered at the level of the client settings (`tests/unit/test_kafka_security.py`):
the local broker keeps no SCRAM users, so a successful login cannot be made here; a refused one
can (a broker with authentication on and no user). Redis: `redis-server --tls-port` with an ACL
user.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio import Redis

from contracts.kafka import KafkaConnection, KafkaSecurity
from contracts.publisher import JobEventPublisher
from devstack import Stack
from devstack.processes import LocalProcess, free_port, start_redis, start_tansu
from devstack.services import start_api
from tests.integration.projection import (
    expected_states,
    job_events,
    projector_env,
    spawn,
    stored_state,
)
from tests.integration.support import eventually
from tests.tls import TestCa, TlsProxy

pytestmark = pytest.mark.integration

SECRET = "transport-test-secret-0123456789abcdef"  # noqa: S105 - a test key
REDIS_USER, REDIS_PASSWORD = "projection", "acl-password-not-for-logs"


@dataclass
class TlsKafka:
    connection: KafkaConnection
    env: dict[str, str]  # the settings that reach it
    ca: TestCa


@pytest.fixture
async def tls_kafka(tmp_path: Path, processes: list[LocalProcess]) -> AsyncIterator[TlsKafka]:
    ca = TestCa(tmp_path, "kafka")
    proxy_port = free_port()
    processes.append(start_tansu(tmp_path, advertised_port=proxy_port))
    client = ca.issue("projector-client", server=False)
    proxy = TlsProxy(ca.issue("broker"), processes[-1].port, client_cafile=ca.cafile)
    await proxy.start(proxy_port)
    security = KafkaSecurity(
        protocol="SSL",
        ssl_cafile=ca.cafile,
        ssl_certfile=client.certfile,
        ssl_keyfile=client.keyfile,
    )
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{proxy_port}",
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CAFILE": str(ca.cafile),
        "KAFKA_SSL_CERTFILE": str(client.certfile),
        "KAFKA_SSL_KEYFILE": str(client.keyfile),
    }
    try:
        yield TlsKafka(
            KafkaConnection(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], security=security),
            env,
            ca,
        )
    finally:
        await proxy.stop()


async def create_topics(kafka: KafkaConnection, *names: str) -> None:
    admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 2, 1) for name in names])
    finally:
        await admin.close()


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_projector_consumes_and_dead_letters_through_mutual_tls(
    tls_kafka: TlsKafka,
    redis_url: str,
    redis: Redis,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    topic = "jobs.events.tls"
    await create_topics(tls_kafka.connection, topic, f"{topic}.dlq")
    events = job_events(jobs=10)
    kafka = tls_kafka.connection
    async with JobEventPublisher(
        kafka.bootstrap_servers, topic, idempotent=False, security=kafka.security
    ) as publisher:
        await publisher.publish_many(events)
    producer = AIOKafkaProducer(**kafka.client_options())
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{not an event", key=b"poison")
    finally:
        await producer.stop()
    env = projector_env(kafka.bootstrap_servers, topic, redis_url, version) | tls_kafka.env
    processes.append(spawn(env, tmp_path))
    expected = expected_states(events)

    async def projected() -> bool:
        return all(
            [await stored_state(redis, version, ref) == state for ref, state in expected.items()]
        )

    await eventually(projected, 60, "the events projected through TLS")
    consumer = AIOKafkaConsumer(
        f"{topic}.dlq", **kafka.client_options(), auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        letter = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert (letter.key, letter.value) == (b"poison", b"{not an event")


async def test_a_broker_certificate_the_ca_does_not_sign_stops_the_projector_with_one_line(
    tls_kafka: TlsKafka, redis_url: str, tmp_path: Path
) -> None:
    stranger = TestCa(tmp_path, "stranger")
    env = tls_kafka.env | {
        "KAFKA_SSL_CAFILE": str(stranger.cafile),
        "REDIS_URL": redis_url,
        "ARTIFACT_BUCKETS": "renders",
    }
    # In a thread: the proxy runs on this test's event loop.
    done = await asyncio.to_thread(run, ["-m", "projector", "run"], env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("configuration error: KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:")
    assert "TLS: the broker's certificate is not trusted" in line


async def test_a_plaintext_client_does_not_reach_the_tls_broker(
    tls_kafka: TlsKafka, redis_url: str
) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": tls_kafka.env["KAFKA_BOOTSTRAP_SERVERS"],
        "REDIS_URL": redis_url,
        "ARTIFACT_BUCKETS": "renders",
    }
    done = await asyncio.to_thread(run, ["-m", "projector", "run"], env)
    assert done.returncode == 2
    assert "configuration error: KAFKA_BOOTSTRAP_SERVERS=" in done.stderr


async def test_credentials_the_broker_refuses_stop_the_projector_with_one_line(
    tmp_path: Path, processes: list[LocalProcess], redis_url: str
) -> None:
    broker = start_tansu(tmp_path, authentication=True)
    processes.append(broker)
    password = "sasl-password-not-for-logs"  # noqa: S105 - a test credential
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker.port}",
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "KAFKA_SASL_USERNAME": "jobs-projector",
        "KAFKA_SASL_PASSWORD": password,
        "REDIS_URL": redis_url,
        "ARTIFACT_BUCKETS": "renders",
    }
    done = await asyncio.to_thread(run, ["-m", "projector", "run"], env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"configuration error: KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{broker.port}")
    assert "SASL: the broker refused the login" in line
    assert password not in line


# --- Redis: TLS and an ACL user -------------------------------------------------------------


@dataclass
class TlsRedis:
    url: str  # with the user, its password and the CA
    port: int
    ca: TestCa


@pytest.fixture
def tls_redis(tmp_path: Path, processes: list[LocalProcess]) -> TlsRedis:
    ca = TestCa(tmp_path, "redis")
    server = ca.issue("redis-server")
    port = free_port()
    tls = ["--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"]
    tls += ["--tls-cert-file", str(server.certfile), "--tls-key-file", str(server.keyfile)]
    tls += ["--tls-ca-cert-file", str(ca.cafile)]
    acl = ["--user", "default", "off", "--user", REDIS_USER, "on", f">{REDIS_PASSWORD}"]
    acl += ["~*", "&*", "+@all"]
    processes.append(start_redis(tmp_path, port=port, extra=[*tls, *acl]))
    url = f"rediss://{REDIS_USER}:{REDIS_PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={ca.cafile}"
    return TlsRedis(url, port, ca)


async def test_the_projector_and_the_api_use_a_redis_with_tls_and_an_acl_user(
    stack: Stack,
    tls_redis: TlsRedis,
    topic: str,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    from tests.integration.projection import produce

    events = job_events(jobs=5)
    processes.append(
        spawn(projector_env(stack.kafka_bootstrap, topic, tls_redis.url, version), tmp_path)
    )
    await produce(stack.kafka_bootstrap, topic, events)
    client = Redis.from_url(tls_redis.url)
    try:
        expected = expected_states(events)

        async def projected() -> bool:
            return all(
                [await stored_state(client, version, ref) == s for ref, s in expected.items()]
            )

        await eventually(projected, 60, "the events projected into the TLS Redis")
        await client.set("projection:active", version)
    finally:
        await client.aclose()
    api_env = stack.env() | {"REDIS_URL": tls_redis.url, "JWT_SECRET": SECRET}
    processes.append(start_api(api_env, tmp_path))
    (tenant, job_id), _state = next(iter(expected.items()))
    token = jwt.encode({"tenant_id": tenant, "exp": 2_000_000_000}, SECRET, "HS256")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{processes[-1].port}") as http:
        answer = await http.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    for process in processes:
        assert REDIS_PASSWORD not in process.log_path.read_text(errors="replace")


@pytest.mark.parametrize("process", [["-m", "projector", "run"], ["-m", "api"]])
async def test_a_redis_that_refuses_the_password_stops_the_process_with_one_line(
    stack: Stack, tls_redis: TlsRedis, process: list[str]
) -> None:
    wrong = tls_redis.url.replace(REDIS_PASSWORD, "a-wrong-password-not-for-logs")
    env = stack.env() | {"REDIS_URL": wrong, "JWT_SECRET": SECRET}
    done = run(process, env)
    assert done.returncode == 2, done.stderr
    assert "a-wrong-password-not-for-logs" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"configuration error: REDIS_URL=rediss://{REDIS_USER}:***@")
    assert "WRONGPASS" in last or "refused" in last


@pytest.mark.parametrize("process", [["-m", "projector", "run"], ["-m", "api"]])
async def test_a_redis_certificate_the_ca_does_not_sign_stops_the_process_with_one_line(
    stack: Stack, tls_redis: TlsRedis, tmp_path: Path, process: list[str]
) -> None:
    stranger = TestCa(tmp_path, "stranger")
    url = tls_redis.url.replace(str(tls_redis.ca.cafile), str(stranger.cafile))
    done = run(process, stack.env() | {"REDIS_URL": url, "JWT_SECRET": SECRET})
    assert done.returncode == 2, done.stderr
    assert "TLS: the server's certificate is not trusted" in done.stderr.strip().splitlines()[-1]
    await asyncio.sleep(0)
