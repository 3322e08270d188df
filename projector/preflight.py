"""Startup checks that turn an unreachable broker or Redis, or a port in use, into one line
naming the setting."""

from __future__ import annotations

import asyncio
import logging
import socket

from aiokafka import AIOKafkaClient
from redis.asyncio import Redis

from contracts.settings import config_error, redact

TIMEOUT_SECONDS = 10.0


async def kafka_answers(bootstrap: str, timeout: float = TIMEOUT_SECONDS) -> bool:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # our one line says it; aiokafka's retries need not
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
    except Exception:
        return False
    finally:
        await client.close()
        quiet.setLevel(level)
    return True


async def redis_error(url: str, timeout: float = TIMEOUT_SECONDS) -> str | None:
    client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        await client.ping()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    return None


async def check_or_exit(bootstrap: str | None, redis_url: str | None) -> None:
    if bootstrap is not None and not await kafka_answers(bootstrap):
        config_error(
            f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}: no Kafka broker answered "
            f"within {TIMEOUT_SECONDS:.0f} s"
        )
    if redis_url is not None and (error := await redis_error(redis_url)):
        config_error(f"REDIS_URL={redact(redis_url)}: Redis did not answer ({error})")


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
