"""Stored job fields -> the response body, with storage references turned into URLs.

The stored values are nearly in their returned form (statuses; timestamps usually already
UTC; the public event's artifacts, when they are the manifest, taken from the head by the
codec), so this only decodes two JSON values, renders the timestamps in UTC, swaps each
artifact's (bucket, key) for a presigned URL and serialises once. Nothing else of storage
is copied into the body.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Hashable
from typing import Any

from cachetools import FIFOCache

from contracts.job_state import (
    F_HEAD,
    F_ORIGIN,
    F_PUBLIC,
    stored_head,
    stored_origin,
    stored_public,
    utc_text,
)

# (bucket, key) -> presigned GET URL, or None for a reference the api refuses to sign.
SignUrl = Callable[[str, str], str | None]

_HEAD, _ORIGIN, _PUBLIC = F_HEAD.encode(), F_ORIGIN.encode(), F_PUBLIC.encode()
# What a cached body costs beside its bytes: its key (the stored groups, shared with Redis's
# reply but kept alive by the cache) and the cache's own entry, roughly.
ENTRY_OVERHEAD_BYTES = 512


class BodyCache:
    """Rendered bodies keyed by everything a body depends on - the job's stored groups, the
    job's presign time bucket, the signing credentials and the tenant (`body_key`) - so a hit
    is always the body a render would give. Pollers re-read unchanged jobs; this spares them
    the JSON and the HMACs. Bounded in bytes, the oldest body first: a body of a past time
    bucket is never hit again (its key names the bucket) and is among the first to go."""

    def __init__(self, max_bytes: int) -> None:
        self._bodies: FIFOCache[Hashable, bytes] = FIFOCache(
            maxsize=max_bytes, getsizeof=lambda body: len(body) + ENTRY_OVERHEAD_BYTES
        )

    def get(self, key: Hashable) -> bytes | None:
        return self._bodies.get(key)

    def put(self, key: Hashable, body: bytes) -> None:
        if len(body) + ENTRY_OVERHEAD_BYTES <= self._bodies.maxsize:
            self._bodies[key] = body

    @property
    def size_bytes(self) -> float:
        return self._bodies.currsize


def body_key(
    tenant_id: str, job_id: str, fields: dict[bytes, bytes], *context: Hashable
) -> Hashable:
    """The tenant is part of it: the storage rules that decide which artifacts are signed
    depend on it (`ARTIFACT_KEY_PREFIX`), even where two tenants' stored groups are equal."""
    return (
        tenant_id,
        job_id,
        fields.get(_HEAD),
        fields.get(_ORIGIN),
        fields.get(_PUBLIC),
        *context,
    )


def fields_digest(fields: dict[bytes, bytes]) -> int:
    """A checksum of the stored groups: with the seqs in the ETag, it also tells apart a
    job whose group was replaced at the same seq (a greater event_id) or whose origin moved."""
    return zlib.crc32(
        fields.get(_PUBLIC, b""),
        zlib.crc32(fields.get(_ORIGIN, b""), zlib.crc32(fields.get(_HEAD, b""))),
    )


def is_complete(fields: dict[bytes, bytes]) -> bool:
    """A job exists for readers once its head and origin are stored."""
    return _HEAD in fields and _ORIGIN in fields


def _artifacts(stored: list[dict[str, Any]], sign: SignUrl) -> list[dict[str, Any]]:
    """The returned artifacts: a URL for each stored reference, none for a refused one."""
    returned = []
    for artifact in stored:
        url = sign(artifact["bucket"], artifact["key"])
        if url is not None:
            returned.append(
                {
                    "image_url": url,
                    "kind": artifact["kind"],
                    "role": artifact["role"],
                    "metadata": artifact["metadata"],
                }
            )
    return returned


def render_job(job_id: str, fields: dict[bytes, bytes], sign: SignUrl) -> bytes:
    head = fields[_HEAD]
    status, manifest = stored_head(head)
    job_type, created_at = stored_origin(fields[_ORIGIN])
    latest = None
    if public := fields.get(_PUBLIC):
        seq, event = stored_public(public, head)
        kind, message, artifacts, payload, occurred_at = json.loads(event)
        latest = {
            "seq": seq,
            "kind": kind,
            "visibility": "public",
            "message": message,
            "artifacts": _artifacts(artifacts, sign),
            "payload": payload,
            "created_at": utc_text(occurred_at),
        }
    body = {
        "id": job_id,
        "type": job_type.decode(),
        "status": status.decode(),
        "created_at": utc_text(created_at.decode()),
        "manifest": _artifacts(json.loads(manifest), sign),
        "latest_event": latest,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
