"""Setting types shared by the processes (CONTRACT §4), and one-line configuration errors.

Pydantic only: each process declares its own `BaseSettings` from these types (and
`StorageSettings`, which both share), and
`load_or_exit` turns a bad value into one line naming the setting instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.kafka import KafkaConnection, KafkaSecurity, SaslMechanism, SecurityProtocol
from contracts.storage import StorageRules

T = TypeVar("T")

REDIS_SCHEMES = ("redis", "rediss", "unix")


def _check_redis_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES:
        raise ValueError("must start with redis://, rediss:// or unix://")
    if parts.scheme != "unix":
        try:
            port = parts.port
        except ValueError:
            raise ValueError("has a port that is not a number") from None
        if not parts.hostname:
            raise ValueError("names no host (expected redis://host:port/db)")
        del port
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise ValueError("has a database that is not a number (expected /0)")
    return url


def _check_bootstrap(servers: str) -> str:
    for server in servers.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("must be host:port[,host:port...]")
    return servers


RedisUrl = Annotated[str, AfterValidator(_check_redis_url)]
BootstrapServers = Annotated[str, AfterValidator(_check_bootstrap)]
VersionName = Annotated[str, AfterValidator(lambda v: _check_version(v))]


def _check_version(version: str) -> str:
    if not version or len(version) > 32 or not all(c.isalnum() or c in "_-" for c in version):
        raise ValueError("must be 1-32 letters, digits, '_' or '-' (e.g. v2)")
    return version


def redact(url: str) -> str:
    """A URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def config_error(message: str) -> NoReturn:
    print(f"configuration error: {message}", file=sys.stderr)
    raise SystemExit(2)


def load_or_exit(factory: Callable[[], T]) -> T:
    """Build settings; on a bad value print one line per broken setting and exit 2."""
    try:
        return factory()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{name}: {message}" if name else message)
        config_error("; ".join(lines))


class StorageSettings(BaseSettings):
    """`ARTIFACT_BUCKETS` and `ARTIFACT_KEY_PREFIX` (CONTRACT §1, §4): what events may name and
    the api may sign, the same for both processes."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    artifact_buckets: str = Field(min_length=1, description="comma-separated bucket names")
    artifact_key_prefix: str | None = None

    @field_validator("artifact_buckets")
    @classmethod
    def _buckets(cls, value: str) -> str:
        StorageRules.of(value.split(","))
        return value

    @field_validator("artifact_key_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        StorageRules.of(["any"], value or None)
        return value

    @property
    def storage_rules(self) -> StorageRules:
        return StorageRules.of(self.artifact_buckets.split(","), self.artifact_key_prefix or None)


class KafkaSettings(BaseSettings):
    """The brokers and how to reach them (CONTRACT §4), for every Kafka client of a process."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    kafka_bootstrap_servers: BootstrapServers = "localhost:9092"
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None

    @model_validator(mode="after")
    def _security(self) -> KafkaSettings:
        self.kafka  # noqa: B018 - raises a one-line error for an incomplete combination
        return self

    @property
    def kafka(self) -> KafkaConnection:
        security = KafkaSecurity(
            protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
        )
        return KafkaConnection(bootstrap_servers=self.kafka_bootstrap_servers, security=security)
