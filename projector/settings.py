"""Settings of the projector process (CONTRACT §4, §5)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.settings import BootstrapServers, RedisUrl, VersionName


class ProjectorSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    kafka_bootstrap_servers: BootstrapServers = "localhost:9092"
    kafka_topic: str = Field(default="jobs.events", min_length=1)
    kafka_group_id: str = Field(default="jobs-projector", min_length=1)
    # Tansu (local stack) has no idempotent producer; Apache Kafka does.
    kafka_idempotent_producer: bool = False
    redis_url: RedisUrl = "redis://localhost:6379/0"
    projection_version: VersionName = "v1"
    projector_http_port: int = Field(default=8001, ge=0, le=65535)
    # Bigger batches amortise the per-call costs; the timeout bounds the added latency.
    batch_max_records: int = Field(default=2000, ge=1)
    batch_timeout_ms: int = Field(default=20, ge=1)
    retry_backoff_max_seconds: float = Field(default=5.0, gt=0)

    @property
    def group_id(self) -> str:
        return f"{self.kafka_group_id}.{self.projection_version}"

    @property
    def dlq_topic(self) -> str:
        return f"{self.kafka_topic}.dlq"
