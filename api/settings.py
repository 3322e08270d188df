"""Settings of the api process (CONTRACT §3, §4). No secret has a default."""

from __future__ import annotations

from ipaddress import ip_address
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from contracts.settings import RedisUrl, StorageSettings


class ApiSettings(StorageSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    redis_url: RedisUrl = "redis://localhost:6379/0"
    s3_endpoint_url: str | None = None
    aws_region: str | None = None
    presign_ttl_seconds: int = Field(default=300, ge=1, le=604800)
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_tenant_claim: str = "tenant_id"
    # Clock skew between the identity provider and us, for exp, nbf and iat.
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=600)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    api_workers: int = Field(default=1, ge=1)
    # Long-polls held at once (CONTRACT §3); beyond them, 429 with Retry-After.
    api_max_waiters: int = Field(default=10_000, ge=1)
    api_max_waiters_per_tenant: int = Field(default=1_000, ge=1)
    # Rendered bodies kept for pollers, in bytes.
    api_body_cache_bytes: int = Field(default=32 * 1024 * 1024, ge=0)
    # Stored jobs kept in the process for hot jobs and long-polls (`api.near_cache`), in bytes;
    # 0: every read goes to Redis. The age is the backstop for changes nobody announces (a job
    # expiring under JOB_RETENTION_SECONDS).
    api_near_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    api_near_cache_max_age_seconds: float = Field(default=1.0, gt=0, le=60)
    api_docs: bool = True  # /docs, /redoc and /openapi.json
    api_access_log: bool = True  # one JSON line per request
    # How long the active projection version is trusted before it is read again.
    active_version_ttl_seconds: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _one_kind_of_key(self) -> ApiSettings:
        public = self.jwt_public_key is not None or self.jwt_jwks_url is not None
        if (self.jwt_secret is None) == (not public):
            raise ValueError(
                "set JWT_SECRET (HS256), or JWT_PUBLIC_KEY (RS256/ES256, PEM) and/or "
                "JWT_JWKS_URL - not both kinds"
            )
        if self.jwt_secret is not None and len(self.jwt_secret.get_secret_value().encode()) < 32:
            raise ValueError("JWT_SECRET must be at least 32 bytes (RFC 7518 §3.2 for HS256)")
        if self.jwt_jwks_url is not None and not _trusted_transport(self.jwt_jwks_url):
            # Whoever could alter the key set in transit could mint tokens for any tenant.
            raise ValueError(
                "JWT_JWKS_URL must be an https:// URL (http:// only on the loopback interface)"
            )
        return self

    @property
    def presign_bucket_seconds(self) -> int:
        """URLs are signed at the start of a time bucket, so that they - and the ETag - stay
        identical within it; they are signed for TTL + bucket, so every URL served lives
        at least `presign_ttl_seconds`."""
        return max(1, min(60, self.presign_ttl_seconds // 5))


def _trusted_transport(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.hostname)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ip_address(parts.hostname).is_loopback
    except ValueError:
        return False
