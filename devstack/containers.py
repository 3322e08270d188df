"""The real parts as containers, for machines where a Docker engine answers."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

KAFKA_IMAGE = "apache/kafka:3.9.1"
REDIS_IMAGE = "redis:7.4-alpine"
MINIO_IMAGE = "minio/minio:RELEASE.2025-04-22T22-12-26Z"

Stopper = Callable[[], None]


def docker_answers() -> bool:
    # docker-py leaks a socket when no engine listens; look for one before asking it.
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return False
    try:
        import docker  # type: ignore[import-untyped]

        client: Any = docker.from_env(timeout=2)
    except Exception:  # no engine, no socket, no permission: all mean "not here"
        return False
    try:
        client.ping()
    except Exception:
        return False
    finally:
        client.close()
    return True


def start_kafka() -> tuple[str, Stopper]:
    from testcontainers.kafka import KafkaContainer

    container = KafkaContainer(KAFKA_IMAGE).with_kraft()
    container.start()
    return container.get_bootstrap_server(), container.stop


def start_redis() -> tuple[str, Stopper]:
    from testcontainers.redis import RedisContainer

    container = RedisContainer(REDIS_IMAGE)
    container.start()
    host = container.get_container_host_ip()
    port = container.get_exposed_port(6379)
    return f"redis://{host}:{port}/0", container.stop


def start_s3() -> tuple[str, tuple[str, str], Stopper]:
    from testcontainers.minio import MinioContainer

    container = MinioContainer(MINIO_IMAGE)
    container.start()
    config = container.get_config()
    endpoint = f"http://{config['endpoint']}"
    return endpoint, (config["access_key"], config["secret_key"]), container.stop
