"""Stored job fields -> the response body, with storage references turned into URLs.

The stored values are already in their returned form (statuses, UTC timestamps), so this
only decodes two JSON values, swaps each artifact's (bucket, key) for a presigned URL and
serialises once. Nothing else of storage is copied into the body.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from contracts.job_state import (
    F_CREATED_AT,
    F_EVENT,
    F_HEAD_SEQ,
    F_MANIFEST,
    F_PUBLIC_SEQ,
    F_STATUS,
    F_TYPE,
)

SignUrl = Callable[[str, str], str]  # (bucket, key) -> presigned GET URL

_HEAD_SEQ, _PUBLIC_SEQ = F_HEAD_SEQ.encode(), F_PUBLIC_SEQ.encode()
_STATUS, _TYPE, _CREATED = F_STATUS.encode(), F_TYPE.encode(), F_CREATED_AT.encode()
_MANIFEST, _EVENT = F_MANIFEST.encode(), F_EVENT.encode()


def is_complete(fields: dict[bytes, bytes]) -> bool:
    """A job exists for readers once its head and origin are stored."""
    return _STATUS in fields and _TYPE in fields


def public_seq(fields: dict[bytes, bytes]) -> int:
    raw = fields.get(_PUBLIC_SEQ)
    return int(raw) if raw else 0


def head_seq(fields: dict[bytes, bytes]) -> int:
    raw = fields.get(_HEAD_SEQ)
    return int(raw) if raw else 0


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
    latest = None
    if raw_event := fields.get(_EVENT):
        event = json.loads(raw_event)
        latest = {
            "seq": event["seq"],
            "kind": event["kind"],
            "visibility": "public",
            "message": event["message"],
            "artifacts": _artifacts(event["artifacts"], sign),
            "payload": event["payload"],
            "created_at": event["created_at"],
        }
    body = {
        "id": job_id,
        "type": fields[_TYPE].decode(),
        "status": fields[_STATUS].decode(),
        "created_at": fields[_CREATED].decode(),
        "manifest": _artifacts(json.loads(fields[_MANIFEST]), sign),
        "latest_event": latest,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
