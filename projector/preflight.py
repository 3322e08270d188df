"""Startup checks that turn an unreachable broker or Redis - or one that refuses our TLS or
our credentials - or a port in use, into one line naming the setting."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaClient
from aiokafka.conn import create_conn
from aiokafka.errors import SaslAuthenticationFailed, UnsupportedSaslMechanismError
from redis.asyncio.cluster import RedisCluster

from contracts.kafka import KafkaConnection
from contracts.redis_client import AnyRedis, redis_problem
from projector.redis_client import connect_redis

if TYPE_CHECKING:
    from projector.settings import ProjectorSettings
from contracts.settings import config_error, redact

TIMEOUT_SECONDS = 10.0


async def kafka_error(kafka: KafkaConnection, timeout: float = TIMEOUT_SECONDS) -> str | None:
    """Why no bootstrap server can be reached as the settings say (TLS refused, credentials
    refused, nothing listening); None when one can. Each server is tried with a connection of
    its own, which reports the TLS or SASL error itself (aiokafka's bootstrap only says that
    none answered)."""
    options = kafka.security.client_options()
    reasons = []
    for server in kafka.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            connection = await asyncio.wait_for(
                create_conn(
                    host.strip("[]"), int(port), request_timeout_ms=int(timeout * 1000), **options
                ),
                timeout,
            )
        except Exception as error:  # each kind is a reason to report, none a crash
            reason = _reason(error)
            if kafka.security.uses_sasl and isinstance(error, KeyError):
                # aiokafka's SCRAM client fails this way on a server's error reply (`e=...`
                # instead of the server signature `v=...`, RFC 5802): the login was refused.
                reason = "SASL: the broker refused the login (an unknown user or a wrong password)"
            reasons.append(f"{server.strip()}: {reason}")
            continue
        connection.close()
        return None
    return "; ".join(reasons)


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {TIMEOUT_SECONDS:.0f} s"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate is not trusted ({error.verify_message})"
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error.reason or error}"
    if isinstance(error, SaslAuthenticationFailed | UnsupportedSaslMechanismError):
        return f"SASL: {str(error).splitlines()[0]}"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    cause = error.__cause__ or error.__context__
    if isinstance(cause, ssl.SSLError | SaslAuthenticationFailed):
        return _reason(cause)
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".strip(": ")


async def check_or_exit(kafka: KafkaConnection | None, redis_url: str | None) -> None:
    if kafka is not None and (error := await kafka_error(kafka)):
        config_error(
            f"KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers} "
            f"(KAFKA_SECURITY_PROTOCOL={kafka.security.protocol}): "
            f"no Kafka broker answered ({error})"
        )
    if redis_url is not None and (problem := await redis_problem(redis_url, TIMEOUT_SECONDS)):
        said = problem.reason if problem.refused else f"Redis did not answer ({problem.reason})"
        config_error(f"REDIS_URL={redact(redis_url)}: {said}")


def listen_or_exit(host: str, port: int) -> socket.socket:
    """Bind the HTTP port before the consumer joins its group: a port in use then stops
    the process with one line, instead of after a join that makes the group rebalance."""
    try:
        return bind_socket(host, port)
    except OSError as exc:
        config_error(
            f"PROJECTOR_HTTP_HOST={host} PROJECTOR_HTTP_PORT={port}: cannot listen ({exc.strerror})"
        )


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def projector_problems(settings: ProjectorSettings) -> list[str]:
    """What stops a projector at start beyond reaching Kafka and Redis, one line each."""
    problems = []
    client = AIOKafkaClient(**settings.kafka.client_options())
    try:
        await client.bootstrap()
        metadata = await client.fetch_all_metadata()
    finally:
        await client.close()
    for topic, kind in ((settings.kafka_topic, "topic"), (settings.dlq_topic, "dead-letter topic")):
        if not metadata.partitions_for_topic(topic):
            problems.append(
                f"KAFKA_TOPIC={settings.kafka_topic}: the {kind} {topic} does not exist "
                "(create it: the events come from it, poison records go to its .dlq)"
            )
    redis = await connect_redis(settings.redis_url)
    try:
        problems += await _redis_settings_problems(redis, settings)
    finally:
        await redis.aclose()
    return problems


async def _redis_settings_problems(redis: AnyRedis, settings: ProjectorSettings) -> list[str]:
    problems = []
    memory: Any = await redis.info("memory")
    policy = _one_value(memory, "maxmemory_policy")
    if policy != "noeviction" and not settings.redis_allow_eviction:
        problems.append(
            f"REDIS_URL: maxmemory-policy is {policy}: under memory pressure Redis would evict "
            "jobs; set it to noeviction (or REDIS_ALLOW_EVICTION=true to accept that)"
        )
    wanted = settings.redis_min_replicas
    if wanted and isinstance(redis, RedisCluster):
        problems.append("REDIS_MIN_REPLICAS is not supported on a Redis Cluster")
    elif wanted:
        replication: Any = await redis.info("replication")
        connected = int(replication.get("connected_slaves", 0))
        if connected < wanted:
            problems.append(
                f"REDIS_MIN_REPLICAS={wanted}: the primary has {connected} connected replicas"
            )
    return problems


def _one_value(info: Any, name: str) -> str:
    """A field of INFO; on a cluster, redis-py answers per node: they must agree."""
    if name in info:
        return str(info[name])
    values = {str(node.get(name)) for node in info.values() if isinstance(node, dict)}
    return values.pop() if len(values) == 1 else ", ".join(sorted(values))
