"""Made-up job events for the local stack, the benchmarks and the tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from ulid import ULID

from contracts.events import JobEvent
from contracts.storage import StorageRules

BASE_TIME = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
# The buckets the made-up events name: the storage rules of the stack (`Stack.env()`).
BUCKETS = ("renders", "test-renders")
STORAGE = StorageRules.of(BUCKETS)
# Every id made here shares the first 10 characters (a millisecond of 2024) with this one.
_BASE_ULID = int(ULID.from_str("01JDQ8Z3M40000000000000000"))
_counter = itertools.count(1)


def ulid(n: int | None = None) -> str:
    """A valid ULID, distinct per call (or per `n`), ordered by `n`."""
    return str(ULID.from_int(_BASE_ULID | (next(_counter) if n is None else n)))


def event_dict(
    *,
    job_id: str = "01JDQ8Z3M4W8K2V7T6R5N4P3Q2",
    tenant_id: str = "acme",
    seq: int = 1,
    kind: str = "created",
    visibility: str = "public",
    event_id: str | None = None,
    artifacts: list[dict[str, Any]] | None = None,
    payload: dict[str, Any] | None = None,
    message: str = "",
) -> dict[str, Any]:
    """An event as a producer writes it; every field but those given takes a plain value."""
    return {
        "schema_version": 1,
        "event_id": event_id or ulid(),
        "tenant_id": tenant_id,
        "job_id": job_id,
        "job_type": "ON_MODEL_RENDER",
        "job_created_at": BASE_TIME.isoformat(),
        "seq": seq,
        "kind": kind,
        "visibility": visibility,
        "message": message or f"{kind} {seq}",
        "artifacts": artifacts or [],
        "payload": payload or {},
        "occurred_at": (BASE_TIME + timedelta(seconds=seq)).isoformat(),
    }


def event(**fields: Any) -> JobEvent:
    return JobEvent.model_validate(event_dict(**fields), strict=False)
