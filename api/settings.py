"""Settings of the api process (CONTRACT §3, §4). No secret has a default."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.settings import RedisUrl


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    redis_url: RedisUrl = "redis://localhost:6379/0"
    s3_endpoint_url: str | None = None
    aws_region: str | None = None
    presign_ttl_seconds: int = Field(default=300, ge=1, le=604800)
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_tenant_claim: str = "tenant_id"
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    api_workers: int = Field(default=1, ge=1)
    # How long the active projection version is trusted before it is read again.
    active_version_ttl_seconds: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _one_key(self) -> ApiSettings:
        if (self.jwt_secret is None) == (self.jwt_public_key is None):
            raise ValueError(
                "set exactly one of JWT_SECRET (HS256) or JWT_PUBLIC_KEY (RS256/ES256, PEM)"
            )
        return self

    @property
    def presign_bucket_seconds(self) -> int:
        """URLs are signed at the start of a time bucket, so that they - and the ETag - stay
        identical within it; they are signed for TTL + bucket, so every URL served lives
        at least `presign_ttl_seconds`."""
        return max(1, min(60, self.presign_ttl_seconds // 5))
