"""The stored job: three tagged groups, and their encoding as one Redis hash (CONTRACT §2).

A job's state is a head, an origin and a public group, each tagged by the `(seq, event_id)`
of the event that set it (DESIGN "The fold is a merge"). Each group is stored as a few hash
fields under short names, its values already in their final form (statuses, UTC timestamps,
compact JSON), so a merge only compares tags and copies strings, and a read only decodes.
Storage references (bucket, key) stay in the stored values; only the api turns them into URLs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter

from contracts.events import EventKind, StorageArtifact

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


@dataclass(frozen=True, slots=True)
class Head:
    """Set by the event with the greatest (seq, event_id): status and manifest."""

    seq: int
    event_id: str
    status: Status
    manifest_json: str  # compact JSON list of stored artifacts; "[]" unless SUCCEEDED


@dataclass(frozen=True, slots=True)
class Origin:
    """Set by the event with the least seq (equal seqs: the greater event_id)."""

    seq: int
    event_id: str
    job_type: str
    created_at: str  # RFC 3339 UTC


@dataclass(frozen=True, slots=True)
class Public:
    """Set by the greatest (seq, event_id) among public queued/stage/succeeded/failed events."""

    seq: int
    event_id: str
    event_json: str  # compact JSON of a StoredEvent


@dataclass(frozen=True, slots=True)
class JobState:
    """A job as folded from a set of events; a group is None until an event sets it."""

    head: Head | None = None
    origin: Origin | None = None
    public: Public | None = None


# Hash field names, kept short: one job is a small hash and memory is per job.
F_HEAD_SEQ, F_HEAD_ID, F_STATUS, F_MANIFEST = "hs", "he", "st", "mf"
F_ORIGIN_SEQ, F_ORIGIN_ID, F_TYPE, F_CREATED_AT = "os", "oe", "ty", "ca"
F_PUBLIC_SEQ, F_PUBLIC_ID, F_EVENT = "ps", "pe", "le"


def job_key(version: str, tenant_id: str, job_id: str) -> str:
    """`job:<version>:{<tenant>:<job_id>}` - the braces keep a job in one cluster slot."""
    return f"job:{version}:{{{tenant_id}:{job_id}}}"


def change_channel(version: str, tenant_id: str, job_id: str) -> str:
    """Where the merge announces a change of the head or public group (sharded pub/sub)."""
    return f"changed:{version}:{{{tenant_id}:{job_id}}}"


def job_key_pattern(version: str) -> str:
    """A SCAN pattern matching every job of one projection version."""
    return f"job:{version}:*"


ACTIVE_VERSION_KEY = "projection:active"
PREVIOUS_VERSION_KEY = "projection:previous"
DEFAULT_VERSION = "v1"


def merge_args(state: JobState) -> list[str]:
    """The argument list of the server-side merge: the three groups, '' for an absent one."""
    head, origin, public = state.head, state.origin, state.public
    args = ["", "", "", "", "", "", "", "", "", "", ""]
    if head is not None:
        args[0:4] = [str(head.seq), head.event_id, head.status, head.manifest_json]
    if origin is not None:
        args[4:8] = [str(origin.seq), origin.event_id, origin.job_type, origin.created_at]
    if public is not None:
        args[8:11] = [str(public.seq), public.event_id, public.event_json]
    return args


def encode_state(state: JobState) -> dict[str, str]:
    """The hash fields of a state, as the server-side merge writes them."""
    fields: dict[str, str] = {}
    if state.head is not None:
        h = state.head
        fields |= {F_HEAD_SEQ: str(h.seq), F_HEAD_ID: h.event_id, F_STATUS: h.status}
        fields[F_MANIFEST] = h.manifest_json
    if state.origin is not None:
        o = state.origin
        fields |= {F_ORIGIN_SEQ: str(o.seq), F_ORIGIN_ID: o.event_id, F_TYPE: o.job_type}
        fields[F_CREATED_AT] = o.created_at
    if state.public is not None:
        p = state.public
        fields |= {F_PUBLIC_SEQ: str(p.seq), F_PUBLIC_ID: p.event_id, F_EVENT: p.event_json}
    return fields


def decode_state(fields: dict[str, str]) -> JobState:
    """The inverse of `encode_state`; groups whose fields are missing stay None."""
    head = origin = public = None
    if F_HEAD_SEQ in fields:
        status: Any = fields[F_STATUS]
        head = Head(int(fields[F_HEAD_SEQ]), fields[F_HEAD_ID], status, fields[F_MANIFEST])
    if F_ORIGIN_SEQ in fields:
        origin = Origin(
            int(fields[F_ORIGIN_SEQ]), fields[F_ORIGIN_ID], fields[F_TYPE], fields[F_CREATED_AT]
        )
    if F_PUBLIC_SEQ in fields:
        public = Public(int(fields[F_PUBLIC_SEQ]), fields[F_PUBLIC_ID], fields[F_EVENT])
    return JobState(head, origin, public)


class StoredEvent(BaseModel):
    """The public event kept as `latest_event`, with storage references, never URLs."""

    model_config = ConfigDict(frozen=True)

    seq: int
    kind: EventKind
    message: str
    artifacts: list[StorageArtifact]
    payload: dict[str, Any]
    created_at: str


STORED_ARTIFACTS = TypeAdapter(list[StorageArtifact])
