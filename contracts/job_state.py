"""The stored job: three tagged groups, and their encoding as one Redis hash (CONTRACT §2).

A job's state is a head, an origin and a public group, each tagged by the `(seq, event_id)`
of the event that set it (DESIGN "The fold is a merge"). Each group is one hash field
(`h`, `o`, `p`) whose value starts with its tag: `seq US event_id US values...`, US being
the ASCII unit separator. The values are what the projector can write cheapest and the api
can render directly: statuses, compact JSON, and timestamps in ISO 8601 as pydantic-core
writes them (usually already UTC with `Z`; the api renders any other offset in UTC, see
`utc_text`). A merge only compares tags and copies strings, a read only splits and decodes,
and a job costs three small fields of memory.
Storage references (bucket, key) stay in the stored values; only the api turns them into URLs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NamedTuple

from pydantic import TypeAdapter

from contracts.events import EventKind, StorageArtifact, rfc3339_utc

Status = Literal["NOT_STARTED", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED"]

STATUS_BY_KIND: dict[str, Status] = {
    "created": "NOT_STARTED",
    "queued": "QUEUED",
    "stage": "RUNNING",
    "succeeded": "SUCCEEDED",
    "failed": "FAILED",
}
# Kinds that may surface as `latest_event` when public: `created` never does.
SURFACING_KINDS = frozenset({"queued", "stage", "succeeded", "failed"})


class Head(NamedTuple):
    """Set by the event with the greatest (seq, event_id): status and manifest."""

    seq: int
    event_id: str
    status: Status
    manifest_json: str  # compact JSON list of stored artifacts; "[]" unless SUCCEEDED


class Origin(NamedTuple):
    """Set by the event with the least seq (equal seqs: the greater event_id)."""

    seq: int
    event_id: str
    job_type: str
    created_at: str  # ISO 8601 with an offset; `utc_text` renders it


class Public(NamedTuple):
    """Set by the greatest (seq, event_id) among public queued/stage/succeeded/failed events."""

    seq: int
    event_id: str
    event_json: str  # compact JSON array: a StoredEvent's fields in order


class JobState(NamedTuple):
    """A job as folded from a set of events; a group is None until an event sets it."""

    head: Head | None = None
    origin: Origin | None = None
    public: Public | None = None


# Hash fields, one per group; short, since memory is per job.
F_HEAD, F_ORIGIN, F_PUBLIC = "h", "o", "p"
# The separator between the values of one group: it never occurs in them (compact JSON
# escapes control characters; ids, statuses, types and timestamps have none).
UNIT = "\x1f"
# A job's delta for the server-side merge: its head, origin and public group values, '' for
# an absent group.
Delta = tuple[str, str, str]


def job_key(version: str, tenant_id: str, job_id: str) -> str:
    """`job:<version>:{<tenant>:<job_id>}` - the braces keep a job in one cluster slot."""
    return f"job:{version}:{{{tenant_id}:{job_id}}}"


def change_channel(version: str, tenant_id: str, job_id: str) -> str:
    """Where the merge announces a change of the head or public group (sharded pub/sub): the
    job's key names its channel too (channels and keys are apart in Redis), so the merge
    publishes without building a name, and the channel shares the key's cluster slot."""
    return job_key(version, tenant_id, job_id)


def job_key_pattern(version: str) -> str:
    """A SCAN pattern matching every job of one projection version."""
    return f"job:{version}:*"


ACTIVE_VERSION_KEY = "projection:active"
DEFAULT_VERSION = "v1"


def head_value(head: Head) -> str:
    return f"{head.seq}{UNIT}{head.event_id}{UNIT}{head.status}{UNIT}{head.manifest_json}"


def origin_value(origin: Origin) -> str:
    return f"{origin.seq}{UNIT}{origin.event_id}{UNIT}{origin.job_type}{UNIT}{origin.created_at}"


def public_value(public: Public) -> str:
    return f"{public.seq}{UNIT}{public.event_id}{UNIT}{public.event_json}"


def pack_delta(state: JobState) -> Delta:
    """The three group values of a state, as the server-side merge takes them."""
    head, origin, public = state.head, state.origin, state.public
    return (
        "" if head is None else head_value(head),
        "" if origin is None else origin_value(origin),
        "" if public is None else public_value(public),
    )


def unpack_delta(delta: Delta) -> JobState:
    """The inverse of `pack_delta`."""
    fields = zip((F_HEAD, F_ORIGIN, F_PUBLIC), delta, strict=True)
    return decode_state({name: value for name, value in fields if value})


def encode_state(state: JobState) -> dict[str, str]:
    """The hash fields of a state, as the server-side merge writes them."""
    fields: dict[str, str] = {}
    if state.head is not None:
        fields[F_HEAD] = head_value(state.head)
    if state.origin is not None:
        fields[F_ORIGIN] = origin_value(state.origin)
    if state.public is not None:
        fields[F_PUBLIC] = public_value(state.public)
    return fields


def decode_state(fields: dict[str, str]) -> JobState:
    """The inverse of `encode_state`; groups whose field is missing stay None."""
    head = origin = public = None
    if F_HEAD in fields:
        seq, event_id, status, manifest = fields[F_HEAD].split(UNIT, 3)
        head = Head(int(seq), event_id, _status(status), manifest)
    if F_ORIGIN in fields:
        seq, event_id, job_type, created_at = fields[F_ORIGIN].split(UNIT, 3)
        origin = Origin(int(seq), event_id, job_type, created_at)
    if F_PUBLIC in fields:
        seq, event_id, event_json = fields[F_PUBLIC].split(UNIT, 2)
        public = Public(int(seq), event_id, event_json)
    return JobState(head, origin, public)


def _status(text: str) -> Status:
    if text not in STATUS_BY_KIND.values():
        raise ValueError(f"not a status: {text!r}")
    status: Status = text  # type: ignore[assignment]  # checked just above
    return status


class StoredEvent(NamedTuple):
    """The public event kept as `latest_event`, with storage references, never URLs.

    Stored as a JSON array of these fields in this order (no keys: written by one
    serialiser call per job and smaller in memory). `seq` is the group's tag."""

    kind: EventKind
    message: str
    artifacts: list[StorageArtifact]
    payload: dict[str, Any]
    created_at: str  # ISO 8601 with an offset; `utc_text` renders it


_stored_event = TypeAdapter(StoredEvent)


def decode_stored_event(event_json: str | bytes) -> StoredEvent:
    """A public group's event, validated (for tools and tests; the api reads it raw)."""
    return _stored_event.validate_json(event_json)


def utc_text(stored: str) -> str:
    """A stored timestamp as the HTTP surface gives it: RFC 3339 in UTC ending in `Z`, a
    fraction only when there is one (CONTRACT §3). The common case, already UTC without a
    fraction (`YYYY-MM-DDTHH:MM:SSZ`, 20 characters), is returned as it is."""
    if len(stored) == 20:
        return stored
    return rfc3339_utc(datetime.fromisoformat(stored))
