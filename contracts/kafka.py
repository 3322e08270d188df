"""How a Kafka client of this contract connects: plaintext, TLS, SASL (CONTRACT §4).

One model for every client - the projector, its dead letters, the replay tools, the publisher
of worker services, the demo and the start-up checks - so that a managed Kafka (MSK,
Confluent Cloud, Aiven) is reached the same way by all of them. `client_options()` gives the
keyword arguments of aiokafka's producer, consumer and admin client.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSecurity(BaseModel):
    """`KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*` and `KAFKA_SSL_*` as one value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None  # PEM; unset: the system's CAs
    ssl_certfile: Path | None = None  # PEM client certificate, for mutual TLS
    ssl_keyfile: Path | None = None

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @model_validator(mode="after")
    def _complete(self) -> KafkaSecurity:
        if self.uses_sasl:
            missing = [
                name
                for name, value in (
                    ("KAFKA_SASL_MECHANISM", self.sasl_mechanism),
                    ("KAFKA_SASL_USERNAME", self.sasl_username),
                    ("KAFKA_SASL_PASSWORD", self.sasl_password),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"{self.protocol} needs {', '.join(missing)}")
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password:
            raise ValueError("KAFKA_SASL_* given, but KAFKA_SECURITY_PROTOCOL has no SASL")
        files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        if not self.uses_tls and any(files):
            raise ValueError("KAFKA_SSL_* given, but KAFKA_SECURITY_PROTOCOL has no TLS")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        for path in files:
            if path is not None and not path.is_file():
                raise ValueError(f"{path}: no such file")
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context (hostname checked), with the client certificate if any."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(
            cafile=None if self.ssl_cafile is None else str(self.ssl_cafile)
        )
        if self.ssl_certfile is not None and self.ssl_keyfile is not None:
            context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile))
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's clients."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            assert self.sasl_password is not None
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password.get_secret_value(),
            }
        return options


class KafkaConnection(BaseModel):
    """Where the brokers are and how to reach them: what every client is built from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str
    security: KafkaSecurity = KafkaSecurity()

    def client_options(self) -> dict[str, Any]:
        """`bootstrap_servers` and the security options of aiokafka's clients."""
        return {"bootstrap_servers": self.bootstrap_servers, **self.security.client_options()}
