"""An event as the projector handles it: `JobEvent`'s fields in a plain dict.

`projector.intake.parse` validates a record into this shape (cheaper to build, read and free
than a model instance, on every record); the fold reads it. `fields_of` gives the same shape
for a `JobEvent` made in Python.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict, cast

from contracts.events import EventKind, JobEvent, StorageArtifact, Visibility


class EventFields(TypedDict):
    """A valid event's fields, as `JobEvent` has them."""

    schema_version: int
    event_id: str
    tenant_id: str
    job_id: str
    job_type: str
    job_created_at: datetime
    seq: int
    kind: EventKind
    visibility: Visibility
    message: str
    artifacts: list[StorageArtifact]
    payload: dict[str, Any]
    occurred_at: datetime


def fields_of(event: JobEvent) -> EventFields:
    """A `JobEvent`'s fields, as `parse` gives them."""
    return cast(EventFields, dict(event))
