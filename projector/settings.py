"""Settings of the projector process (CONTRACT §4, §5)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from contracts.settings import KafkaSettings, RedisUrl, StorageSettings, VersionName


# Two bases with fields: the pydantic mypy plugin types their `model_construct` apart.
class ProjectorSettings(KafkaSettings, StorageSettings):  # type: ignore[misc]
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    kafka_topic: str = Field(default="jobs.events", min_length=1)
    kafka_group_id: str = Field(default="jobs-projector", min_length=1)
    # Tansu (local stack) has no idempotent producer; Apache Kafka does.
    kafka_idempotent_producer: bool = False
    redis_url: RedisUrl = "redis://localhost:6379/0"
    projection_version: VersionName = "v1"
    # /healthz, /readyz, /metrics; 0.0.0.0 in a container, loopback by default.
    projector_http_host: str = "127.0.0.1"
    projector_http_port: int = Field(default=8001, ge=1, le=65535)
    # Bigger batches amortise the per-call costs. The timeout is how long one `getmany` waits
    # for records (it returns as soon as any are fetched), and how long FastStream sleeps
    # after a `getmany` that found none - which happens only after a second without records
    # (the consumer's idle wait, `projector.kafka.lenient`).
    batch_max_records: int = Field(default=2000, ge=1)
    batch_timeout_ms: int = Field(default=20, ge=1)
    # How long the broker may hold a fetch while it has nothing new. Tansu answers a waiting
    # fetch only when this expires, not when data arrives: with aiokafka's 500 ms default an
    # event waited up to 500 ms before the projector saw it. Apache Kafka answers as soon as
    # data arrives, whatever this is. 10 and 5 ms did not shorten the tail at 5,000 events/s
    # and cost Tansu more fetches (docs/performance.md, "Freshness: where the tail comes from").
    kafka_fetch_max_wait_ms: int = Field(default=20, ge=1)
    retry_backoff_max_seconds: float = Field(default=5.0, gt=0)
    # Replicas that must acknowledge a batch's merges before its offsets are committed.
    redis_min_replicas: int = Field(default=0, ge=0)
    # Jobs vanishing under memory pressure is not a fallback: noeviction, unless overridden.
    redis_allow_eviction: bool = False
    # A finished job's key expires this long after its final event (unset: never).
    job_retention_seconds: int | None = Field(default=None, ge=1)

    @property
    def group_id(self) -> str:
        return f"{self.kafka_group_id}.{self.projection_version}"

    @property
    def dlq_topic(self) -> str:
        return f"{self.kafka_topic}.dlq"
