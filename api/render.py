"""Stored job fields -> the response body, with storage references turned into URLs.

The stored values are nearly in their returned form (statuses; timestamps usually already
UTC), so this only decodes two JSON values, renders the timestamps in UTC, swaps each
artifact's (bucket, key) for a presigned URL and serialises once. Nothing else of storage
is copied into the body.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Hashable
from typing import Any

from cachetools import LRUCache

from contracts.job_state import (
    F_HEAD,
    F_ORIGIN,
    F_PUBLIC,
    stored_head,
    stored_origin,
    stored_public,
    utc_text,
)

SignUrl = Callable[[str, str], str]  # (bucket, key) -> presigned GET URL

_HEAD, _ORIGIN, _PUBLIC = F_HEAD.encode(), F_ORIGIN.encode(), F_PUBLIC.encode()
BODY_CACHE_ENTRIES = 4096


def body_cache(entries: int = BODY_CACHE_ENTRIES) -> LRUCache[Hashable, bytes]:
    """Rendered bodies keyed by everything a body depends on - the job's stored groups, the
    presign time bucket and the signing credentials (`body_key`) - so a hit is always the
    body a render would give. Pollers re-read unchanged jobs; this spares them the JSON and
    the HMACs. Bounded: the least recently used body goes first."""
    return LRUCache(maxsize=entries)


def body_key(job_id: str, fields: dict[bytes, bytes], *context: Hashable) -> Hashable:
    return (job_id, fields.get(_HEAD), fields.get(_ORIGIN), fields.get(_PUBLIC), *context)


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
    return [
        {
            "image_url": sign(a["bucket"], a["key"]),
            "kind": a["kind"],
            "role": a["role"],
            "metadata": a["metadata"],
        }
        for a in stored
    ]


def render_job(job_id: str, fields: dict[bytes, bytes], sign: SignUrl) -> bytes:
    status, manifest = stored_head(fields[_HEAD])
    job_type, created_at = stored_origin(fields[_ORIGIN])
    latest = None
    if public := fields.get(_PUBLIC):
        seq, event = stored_public(public)
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
