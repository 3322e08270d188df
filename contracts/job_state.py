"""The stored job: three tagged groups, their encoding as one Redis hash, and the keys.

This is the one module that knows the stored format: the projector writes with it, the api
reads with it, the replay tools compare with it, and the server-side functions get its
separators from `lua_prelude()`. Nothing else splits or joins the values.

A job's state is a head, an origin and a public group, each tagged by the `(seq, event_id)`
of the event that set it (DESIGN "The fold is a merge"). Each group is one hash field
(`h`, `o`, `p`) whose value starts with its tag: `seq US event_id US values...`, US being
the ASCII unit separator. The values are what the projector can write cheapest and the api
can render directly: statuses, compact JSON, and timestamps in ISO 8601 as pydantic-core
writes them (usually already UTC with `Z`; the api renders any other offset in UTC, see
`utc_text`). A merge only compares tags and copies strings, a read only splits and decodes,
and a job costs three small fields of memory (CONTRACT §2; DESIGN "Redis layout").
Storage references (bucket, key) stay in the stored values; only the api turns them into URLs.

A finished job's artifacts are stored once. The public value keeps its event's JSON array cut
around the artifacts, `seq US event_id US lead US artifacts US tail` (the event is
`lead + artifacts + tail`), and leaves the artifacts part empty when the head is the same
event's (the same tag) and its manifest is those artifacts, not `[]` (`shares_artifacts`):
the empty part then means "the head's manifest". The encoding is a function of the state
(`encode_state`), which the server-side merge keeps: when it replaces the head under a public
value that shares its artifacts, it writes them back into the public value. A reader resolves
an empty part only against a head of the same tag (`[]` otherwise, which a merge never
leaves). A public value of the earlier layout, `seq US event_id US event`, is read as well.
"""

from __future__ import annotations

import json
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
GROUP_FIELDS = (F_HEAD, F_ORIGIN, F_PUBLIC)
_GROUP_FIELD_BYTES = tuple(name.encode() for name in GROUP_FIELDS)
# The separator between the values of one group: it never occurs in them (compact JSON
# escapes control characters; ids, statuses, types and timestamps have none).
UNIT = "\x1f"
_UNIT_BYTES = UNIT.encode()
# Between the groups of a job where they are joined into one string (`join_groups`: what a
# merge announces on the job's channel, and what the digests `replay verify` compares hash):
# a control character no group value holds.
GROUP_SEPARATOR = "\x1e"
_GROUP_SEPARATOR_BYTES = GROUP_SEPARATOR.encode()
# A job's delta for the server-side merge: its head, origin and public group values, '' for
# an absent group.
Delta = tuple[str, str, str]
# The manifest of a head that is not a succeeded event's, and the artifacts of most events: a
# public value keeps it rather than share it, so that a head replaced under it (any later
# event) leaves the public value as it is.
NO_ARTIFACTS = "[]"
_NO_ARTIFACTS_BYTES = NO_ARTIFACTS.encode()

# --- keys ------------------------------------------------------------------------------------

ACTIVE_VERSION_KEY = "projection:active"
# The version `rollback` returns to. The hash tag puts it in the active key's cluster slot, so
# that one server-side call switches both at once.
PREVIOUS_VERSION_KEY = "{projection:active}:previous"
DEFAULT_VERSION = "v1"
# What the replay tools know of a version (a hash: partial, built_at, verified...).
VERSION_META_PREFIX = "projection:meta:"
# A running projector's heartbeat: `projection:projector:<version>:<instance>`, short-lived.
PROJECTOR_KEY_PREFIX = "projection:projector:"


def version_meta_key(version: str) -> str:
    return f"{VERSION_META_PREFIX}{version}"


def projector_key(version: str, instance: str) -> str:
    return f"{PROJECTOR_KEY_PREFIX}{version}:{instance}"


def version_of_projector_key(key: bytes | str) -> str:
    text = key.decode() if isinstance(key, bytes) else key
    return text.removeprefix(PROJECTOR_KEY_PREFIX).split(":", 1)[0]


def job_key(version: str, tenant_id: str, job_id: str) -> str:
    """`job:<version>:{<tenant>:<job_id>}` - the braces keep a job in one cluster slot."""
    return f"job:{version}:{{{tenant_id}:{job_id}}}"


def change_channel(version: str, tenant_id: str, job_id: str) -> str:
    """Where the merge announces a change of the head or public group (sharded pub/sub): the
    job's key names its channel too (channels and keys are apart in Redis), so the merge
    publishes without building a name, and the channel shares the key's cluster slot."""
    return job_key(version, tenant_id, job_id)


def job_key_pattern(version: str, tenant_id: str | None = None) -> str:
    """A SCAN pattern matching every job of one projection version (or of one tenant in it)."""
    if tenant_id is None:
        return f"job:{version}:*"
    return f"job:{version}:{{{tenant_id}:*"


def job_of_key(key: bytes | str) -> tuple[str, str, str]:
    """`job:<version>:{<tenant>:<job_id>}` -> (version, tenant, job_id)."""
    text = key.decode() if isinstance(key, bytes) else key
    _, version, tagged = text.split(":", 2)
    tenant, job_id = tagged[1:-1].split(":", 1)
    return version, tenant, job_id


# --- group values ----------------------------------------------------------------------------


def head_value(seq: int, event_id: str, status: str, manifest_json: str) -> str:
    return f"{seq}{UNIT}{event_id}{UNIT}{status}{UNIT}{manifest_json}"


def origin_value(seq: int, event_id: str, job_type: str, created_at: str) -> str:
    return f"{seq}{UNIT}{event_id}{UNIT}{job_type}{UNIT}{created_at}"


def shares_artifacts(
    seq: int, event_id: str, artifacts_json: str, head_seq: int, head_event_id: str, manifest: str
) -> bool:
    """Whether a public value leaves its artifacts to the head's manifest: the same event
    (tag), the same artifacts, and not `[]`."""
    return (
        artifacts_json == manifest
        and artifacts_json != NO_ARTIFACTS
        and seq == head_seq
        and event_id == head_event_id
    )


def public_value_of_parts(
    seq: int, event_id: str, lead: str, artifacts_json: str, tail: str, shared: bool
) -> str:
    """The stored public value of an event cut into its JSON array's lead, artifacts and
    tail (`event_parts`); `shared`: as `shares_artifacts` says for the job's head."""
    return f"{seq}{UNIT}{event_id}{UNIT}{lead}{UNIT}{'' if shared else artifacts_json}{UNIT}{tail}"


def public_value(seq: int, event_id: str, event_json: str, head: Head | None = None) -> str:
    """The stored public value of a `Public` group under the job's `head` (None: the event's
    artifacts are kept in it)."""
    lead, artifacts, tail = event_parts(event_json)
    shared = head is not None and shares_artifacts(
        seq, event_id, artifacts, head.seq, head.event_id, head.manifest_json
    )
    return public_value_of_parts(seq, event_id, lead, artifacts, tail, shared)


_json_value_end = json.JSONDecoder().raw_decode


def event_parts(event_json: str) -> tuple[str, str, str]:
    """A stored event's compact JSON array `[kind,message,artifacts,payload,created_at]` cut
    into `[kind,message,` (lead), `artifacts` and `,payload,created_at]` (tail)."""
    try:
        if not event_json.startswith("["):
            raise ValueError("not a JSON array")
        _, end = _json_value_end(event_json, 1)  # kind
        _, end = _json_value_end(event_json, _after_comma(event_json, end))  # message
        start = _after_comma(event_json, end)
        _, end = _json_value_end(event_json, start)  # artifacts
    except ValueError as error:
        raise ValueError(f"not a stored event: {event_json[:80]!r} ({error})") from None
    return event_json[:start], event_json[start:end], event_json[end:]


def _after_comma(text: str, end: int) -> int:
    if text[end : end + 1] != ",":
        raise ValueError(f"no ',' at {end}")
    return end + 1


def pack_delta(state: JobState) -> Delta:
    """The three group values of a state, as the server-side merge takes them."""
    head, origin, public = state.head, state.origin, state.public
    return (
        "" if head is None else head_value(*head),
        "" if origin is None else origin_value(*origin),
        "" if public is None else public_value(*public, head),
    )


def unpack_delta(delta: Delta) -> JobState:
    """The inverse of `pack_delta`."""
    fields = zip(GROUP_FIELDS, delta, strict=True)
    return decode_state({name: value for name, value in fields if value})


def encode_state(state: JobState) -> dict[str, str]:
    """The hash fields of a state, as the server-side merge writes them."""
    return {
        name: value for name, value in zip(GROUP_FIELDS, pack_delta(state), strict=True) if value
    }


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
        public = _public(fields[F_PUBLIC], head)
    return JobState(head, origin, public)


def _public(value: str, head: Head | None) -> Public:
    parts = value.split(UNIT, 4)
    if len(parts) == 3:  # the earlier layout: the event whole
        seq, event_id, event_json = parts
        return Public(int(seq), event_id, event_json)
    seq, event_id, lead, artifacts, tail = parts
    if not artifacts:
        artifacts = NO_ARTIFACTS
        if head is not None and (head.seq, head.event_id) == (int(seq), event_id):
            artifacts = head.manifest_json
    return Public(int(seq), event_id, lead + artifacts + tail)


# --- reading the stored bytes (the api's hot path: no decoding beyond what it returns) --------


def stored_head(value: bytes) -> tuple[bytes, bytes]:
    """A stored head group's (status, manifest JSON)."""
    _, _, status, manifest = value.split(_UNIT_BYTES, 3)
    return status, manifest


def stored_origin(value: bytes) -> tuple[bytes, bytes]:
    """A stored origin group's (job type, created_at)."""
    _, _, job_type, created_at = value.split(_UNIT_BYTES, 3)
    return job_type, created_at


def stored_public(value: bytes, head: bytes | None) -> tuple[int, bytes]:
    """A stored public group's (seq, stored event JSON), under the job's stored head."""
    parts = value.split(_UNIT_BYTES, 4)
    if len(parts) == 3:  # the earlier layout: the event whole
        return int(parts[0]), parts[2]
    seq, event_id, lead, artifacts, tail = parts
    if not artifacts:
        tag = seq + _UNIT_BYTES + event_id + _UNIT_BYTES
        if head is not None and head.startswith(tag):
            artifacts = head.split(_UNIT_BYTES, 3)[3]
        else:
            artifacts = _NO_ARTIFACTS_BYTES
    return int(seq), lead + artifacts + tail


def stored_seq(value: bytes | None) -> int:
    """The seq of a stored group's tag; 0 for an absent group."""
    return int(value[: value.index(_UNIT_BYTES)]) if value else 0


def join_groups(state: JobState) -> str:
    """A state's group values joined (h, o, p; '' for an absent group), as the server-side
    functions join a stored job's."""
    return GROUP_SEPARATOR.join(pack_delta(state))


def split_groups(joined: bytes) -> dict[bytes, bytes] | None:
    """The hash fields (as HGETALL returns them) of a job whose groups are joined as a merge
    announces them; None for a payload that is not that (an announcement of an older release,
    which carried only the public seq)."""
    values = joined.split(_GROUP_SEPARATOR_BYTES)
    if len(values) != len(GROUP_FIELDS):
        return None
    return {name: value for name, value in zip(_GROUP_FIELD_BYTES, values, strict=True) if value}


def lua_prelude() -> str:
    """The stored format's separators and the manifest a public value never shares, as the
    server-side functions (`projector/jobs.lua`) declare them, so that they are written in this
    module only."""
    return (
        f"local UNIT, GROUP_SEPARATOR = '\\{ord(UNIT)}', '\\{ord(GROUP_SEPARATOR)}'\n"
        f"local NO_ARTIFACTS = '{NO_ARTIFACTS}'\n"
    )


def _status(text: str) -> Status:
    if text not in STATUS_BY_KIND.values():
        raise ValueError(f"not a status: {text!r}")
    status: Status = text  # type: ignore[assignment]  # checked just above
    return status


class StoredEvent(NamedTuple):
    """The public event kept as `latest_event`, with storage references, never URLs.

    A JSON array of these fields in this order (no keys: smaller in memory), stored cut
    around its artifacts (`event_parts`). `seq` is the group's tag."""

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
