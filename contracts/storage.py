"""Which storage an event may name: the trust boundary between producers and presigning
(CONTRACT §1, §3).

Producers are other teams' services. An artifact's `bucket` must be one of `ARTIFACT_BUCKETS`
and, with `ARTIFACT_KEY_PREFIX` set (a template with `{tenant_id}`, e.g. `tenants/{tenant_id}/`),
its `key` must start with that prefix for the event's tenant and hold no `.` or `..` path
segment (a client or a proxy that normalises the URL's path would fetch another object than
the one checked). The projector dead-letters an event that breaks the rule; the api checks
every reference again before it signs one, whatever Redis holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

TENANT_FIELD = "{tenant_id}"


@dataclass(frozen=True, slots=True)
class StorageRules:
    buckets: frozenset[str]
    key_prefix: str | None = None  # a template holding `{tenant_id}`

    @classmethod
    def of(cls, buckets: Iterable[str], key_prefix: str | None = None) -> StorageRules:
        named = frozenset(bucket.strip() for bucket in buckets if bucket.strip())
        if not named:
            raise ValueError("name at least one bucket")
        if key_prefix is not None:
            if key_prefix.count(TENANT_FIELD) != 1 or "{" in key_prefix.replace(TENANT_FIELD, ""):
                raise ValueError("must hold {tenant_id} once and no other {field}")
            if not key_prefix.endswith("/"):
                raise ValueError("must end with '/' (e.g. tenants/{tenant_id}/)")
        return cls(named, key_prefix or None)

    def refusal(self, tenant_id: str, bucket: str, key: str) -> str | None:
        """Why `tenant_id` may not name `bucket`/`key`; None when it may."""
        if bucket not in self.buckets:
            return f"bucket {bucket!r} is not one of ARTIFACT_BUCKETS"
        if self.key_prefix is None:
            return None
        prefix = self.key_prefix.replace(TENANT_FIELD, tenant_id)
        if not key.startswith(prefix):
            return f"key must start with {prefix!r} (ARTIFACT_KEY_PREFIX) for tenant {tenant_id}"
        if any(segment in (".", "..") for segment in key.split("/")):
            return "key must hold no '.' or '..' path segment"
        return None
