"""The real parts as containers, when asked for (`JOBS_STACK=containers`) on a machine with a
Docker engine: Apache Kafka (KRaft, one node), Redis and MinIO.

Written against testcontainers' core API (a generic `DockerContainer` for Kafka and MinIO: the
community Kafka module is Confluent's image, its MinIO module needs the `minio` client; the
community Redis module for Redis). Building a definition asks nothing of the engine - the
client's API version is pinned - so `tests/unit/test_containers.py` builds every one of them
on machines without Docker.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import urlsplit

from testcontainers.community.redis import RedisContainer
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import HttpWaitStrategy, LogMessageWaitStrategy

from devstack.processes import REDIS_STORAGE_SETTINGS, free_port

KAFKA_IMAGE = "apache/kafka:3.9.1"
REDIS_IMAGE = "redis:7.4-alpine"
MINIO_IMAGE = "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z"
MINIO_CREDENTIALS = ("minio-access-key", "minio-secret-key")
# Docker Engine API 1.41 (Engine 20.10) and later engines speak it; pinned, the client does not
# ask the engine for its version when a definition is built.
DOCKER_CLIENT = {"version": "1.41"}

Stopper = Callable[[], None]


def docker_host() -> str:
    """Where containers' published ports are reached from here."""
    configured = os.environ.get("DOCKER_HOST", "")
    remote = urlsplit(configured).hostname if configured.startswith("tcp://") else None
    return remote or "127.0.0.1"


def kafka_container(host_port: int) -> DockerContainer:
    """A one-node KRaft broker whose listener is published on `host_port` and advertised as
    such: clients outside the container reach it at the address the broker gives them."""
    container = DockerContainer(KAFKA_IMAGE, docker_client_kw=DOCKER_CLIENT)
    container.with_envs(
        KAFKA_NODE_ID="1",
        KAFKA_PROCESS_ROLES="broker,controller",
        KAFKA_LISTENERS="PLAINTEXT://:9092,CONTROLLER://:9093",
        KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://{docker_host()}:{host_port}",
        KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
        KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
        KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
        KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
        KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
        KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
    )
    container.with_bind_ports(9092, host_port)
    return container.waiting_for(LogMessageWaitStrategy("Kafka Server started"))


def redis_container() -> RedisContainer:
    container = RedisContainer(REDIS_IMAGE, docker_client_kw=DOCKER_CLIENT)
    # As the projector wants it: no eviction (it refuses an evicting Redis); job hashes kept
    # compact as by the local processes.
    settings = " ".join(REDIS_STORAGE_SETTINGS)
    return container.with_command(f"redis-server --maxmemory-policy noeviction {settings}")


def minio_container() -> DockerContainer:
    access_key, secret_key = MINIO_CREDENTIALS
    container = DockerContainer(MINIO_IMAGE, docker_client_kw=DOCKER_CLIENT)
    container.with_envs(MINIO_ROOT_USER=access_key, MINIO_ROOT_PASSWORD=secret_key)
    container.with_command("server /data").with_exposed_ports(9000)
    return container.waiting_for(HttpWaitStrategy(9000, "/minio/health/live"))


def start_kafka() -> tuple[str, Stopper]:
    port = free_port()
    container = kafka_container(port).start()
    return f"{docker_host()}:{port}", container.stop


def start_redis() -> tuple[str, Stopper]:
    container = redis_container().start()
    host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
    return f"redis://{host}:{port}/0", container.stop


def start_s3() -> tuple[str, tuple[str, str], Stopper]:
    container = minio_container().start()
    host, port = container.get_container_host_ip(), container.get_exposed_port(9000)
    return f"http://{host}:{port}", MINIO_CREDENTIALS, container.stop
