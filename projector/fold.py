"""The fold: a job's state as a merge of three tagged groups (DESIGN "The fold is a merge").

Pure: no I/O. `state_of(event)` is the singleton state of one event, `merge` takes each group
from the side with the winning tag, `fold(events)` merges singletons. `merge` is associative,
commutative and idempotent, so delivery order and duplicates cannot change a projection.

`BatchFold` is the same rule, made cheap for a consumer batch: it keeps each job's winning
*events* per group and encodes only those at the end, instead of encoding every event.

Events are taken as their fields (`EventFields`, what the projector validates into); the
pure functions also take a `JobEvent`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from pydantic import TypeAdapter
from pydantic_core import to_jsonable_python

from contracts.events import JobEvent, StorageArtifact
from contracts.job_state import (
    STATUS_BY_KIND,
    SURFACING_KINDS,
    UNIT,
    Delta,
    Head,
    JobState,
    Origin,
    Public,
    unpack_delta,
)
from projector.event_fields import EventFields, fields_of

G = TypeVar("G", Head, Public)
JobRef = tuple[str, str]  # (tenant_id, job_id): the same job id under two tenants is two jobs
AnyEvent = JobEvent | EventFields


def head_key(seq: int, event_id: str) -> tuple[int, str]:
    """Head and public: the greatest (seq, event_id) wins."""
    return (seq, event_id)


def origin_key(seq: int, event_id: str) -> tuple[int, str]:
    """Origin: the least seq wins; among equal seqs, the greater event_id (CONTRACT §2)."""
    return (-seq, event_id)


# Typed serialisers: pydantic-core then need not work out each value's type (measured:
# 0.76 against 1.02 us for a stored event, 2.1 against 2.6 us for two artifacts). The output
# is `to_json`'s, byte for byte.
_artifacts_json = TypeAdapter(list[StorageArtifact]).serializer.to_json
_stored_event_json = TypeAdapter(
    tuple[str, str, list[StorageArtifact], dict[str, Any], datetime]
).serializer.to_json


def _fields(event: AnyEvent) -> EventFields:
    return fields_of(event) if isinstance(event, JobEvent) else event


def manifest_json(event: EventFields) -> str:
    """The head's manifest: a succeeded event's artifacts as a JSON list, else `[]`."""
    if event["kind"] != "succeeded":
        return "[]"
    return _artifacts_json(event["artifacts"]).decode()


def head_of(event: AnyEvent) -> Head:
    fields = _fields(event)
    return Head(
        fields["seq"], fields["event_id"], STATUS_BY_KIND[fields["kind"]], manifest_json(fields)
    )


def origin_of(event: AnyEvent) -> Origin:
    fields = _fields(event)
    created_at = iso_text(fields["job_created_at"])
    return Origin(fields["seq"], fields["event_id"], fields["job_type"], created_at)


def surfaces(event: EventFields) -> bool:
    """Only public queued/stage/succeeded/failed events may become `latest_event`."""
    return event["visibility"] == "public" and event["kind"] in SURFACING_KINDS


def iso_text(moment: datetime) -> str:
    """ISO 8601 as pydantic-core writes it; the api renders it in UTC (`utc_text`)."""
    text: str = to_jsonable_python(moment)  # the JSON string's text, without its quotes
    return text


def stored_event_json(event: EventFields) -> str:
    """The public event as `latest_event` keeps it: a `StoredEvent` as a JSON array,
    serialised in one pydantic-core call (the hot path of the projector: measured 1.1 us
    against 2.3 us for an object assembled from pieces with the timestamp made UTC here)."""
    stored = (
        event["kind"],
        event["message"],
        event["artifacts"],
        event["payload"],
        event["occurred_at"],
    )
    return _stored_event_json(stored).decode()


def public_of(event: AnyEvent) -> Public:
    fields = _fields(event)
    return Public(fields["seq"], fields["event_id"], stored_event_json(fields))


def packed_delta(head: EventFields, origin: EventFields, public: EventFields | None) -> Delta:
    """`pack_delta(JobState(head_of(head), origin_of(origin), public_of(public)))`, written
    straight from the winning events: once per job and batch, the projector's hot path."""
    return (
        f"{head['seq']}{UNIT}{head['event_id']}{UNIT}{STATUS_BY_KIND[head['kind']]}{UNIT}"
        f"{manifest_json(head)}",
        f"{origin['seq']}{UNIT}{origin['event_id']}{UNIT}{origin['job_type']}{UNIT}"
        f"{iso_text(origin['job_created_at'])}",
        ""
        if public is None
        else f"{public['seq']}{UNIT}{public['event_id']}{UNIT}{stored_event_json(public)}",
    )


def single_event_delta(event: EventFields) -> Delta:
    """`packed_delta(event, event, event if surfaces(event) else None)`: the delta of a job
    seen once in a batch, the common case under live traffic, with the shared tag written
    once (measured: 2.1 against 2.5 us per job)."""
    kind = event["kind"]
    tag = f"{event['seq']}{UNIT}{event['event_id']}{UNIT}"
    return (
        f"{tag}{STATUS_BY_KIND[kind]}{UNIT}{manifest_json(event)}",
        f"{tag}{event['job_type']}{UNIT}{iso_text(event['job_created_at'])}",
        f"{tag}{stored_event_json(event)}"
        if event["visibility"] == "public" and kind in SURFACING_KINDS
        else "",
    )


def state_of(event: AnyEvent) -> JobState:
    fields = _fields(event)
    public = public_of(fields) if surfaces(fields) else None
    return JobState(head_of(fields), origin_of(fields), public)


def _later(a: G | None, b: G | None) -> G | None:
    if a is None or b is None:
        return a if b is None else b
    return a if head_key(a.seq, a.event_id) >= head_key(b.seq, b.event_id) else b


def _earlier(a: Origin | None, b: Origin | None) -> Origin | None:
    if a is None or b is None:
        return a if b is None else b
    return a if origin_key(a.seq, a.event_id) >= origin_key(b.seq, b.event_id) else b


def merge(a: JobState, b: JobState) -> JobState:
    return JobState(
        head=_later(a.head, b.head),
        origin=_earlier(a.origin, b.origin),
        public=_later(a.public, b.public),
    )


def fold(events: Iterable[AnyEvent], start: JobState | None = None) -> JobState:
    state = start or JobState()
    for event in events:
        state = merge(state, state_of(event))
    return state


class _Winners:
    """A job's winning events per group within one batch (two or more events seen)."""

    __slots__ = ("events", "head", "origin", "public")

    def __init__(self, first: EventFields) -> None:
        self.head = self.origin = first
        self.public: EventFields | None = first if surfaces(first) else None
        self.events = 1  # seen in this batch, duplicates included

    def add(self, event: EventFields) -> None:
        self.events += 1
        seq, eid = event["seq"], event["event_id"]
        head = self.head
        if seq > head["seq"] or (seq == head["seq"] and eid > head["event_id"]):
            self.head = event
        origin = self.origin
        if seq < origin["seq"] or (seq == origin["seq"] and eid > origin["event_id"]):
            self.origin = event
        if surfaces(event):
            public = self.public
            if (
                public is None
                or seq > public["seq"]
                or (seq == public["seq"] and eid > public["event_id"])
            ):
                self.public = event

    def packed(self) -> Delta:
        return packed_delta(self.head, self.origin, self.public)


class BatchFold:
    """Folds one batch's events into one delta per job; equal to `fold` per job.

    A job seen once in the batch (the common case under live traffic, where a batch holds
    one event of each of thousands of jobs) keeps its event as it is; its `_Winners` are
    made only when a second event of the job arrives."""

    __slots__ = ("_jobs",)

    def __init__(self) -> None:
        self._jobs: dict[JobRef, EventFields | _Winners] = {}

    def add(self, event: EventFields) -> None:
        ref = (event["tenant_id"], event["job_id"])
        seen = self._jobs.get(ref)
        if seen is None:
            self._jobs[ref] = event
        elif type(seen) is _Winners:
            seen.add(event)
        else:
            winners = self._jobs[ref] = _Winners(seen)  # type: ignore[arg-type]  # its fields
            winners.add(event)

    def __len__(self) -> int:
        return len(self._jobs)

    def deltas(self) -> dict[JobRef, JobState]:
        """Each job's delta as a state: its packed values read back."""
        jobs, values = self.packed()
        return {
            ref: unpack_delta((values[3 * i], values[3 * i + 1], values[3 * i + 2]))
            for i, ref in enumerate(jobs)
        }

    def jobs(self) -> list[JobRef]:
        return list(self._jobs)

    def events_per_job(self) -> dict[int, int]:
        """Events seen per job, by the job's index in `jobs()`, for the jobs seen more than
        once (every other job was seen once): a job's events count as one outcome."""
        return {
            index: seen.events
            for index, seen in enumerate(self._jobs.values())
            if type(seen) is _Winners
        }

    def occurred_at_sample(self, size: int) -> list[datetime]:
        """`occurred_at` of the latest event of up to `size` jobs, spread over the batch:
        enough to follow the event-to-visible latency without a clock read per event."""
        seen = list(self._jobs.values())
        step = max(1, len(seen) // size)
        return [
            (one.head if type(one) is _Winners else one)["occurred_at"]  # type: ignore[index]
            for one in seen[::step][:size]
        ]

    def packed(self) -> tuple[list[JobRef], list[str]]:
        """The jobs and their deltas, as `pack_delta(fold(events))` per job, flat: three
        values per job, in the order of the jobs (as the merge takes them)."""
        return self.jobs(), _flat(self._jobs.values())

    def packed_slices(self, size: int) -> Iterator[list[str]]:
        """`packed()[1]` in slices of `size` jobs, for a caller that yields between them."""
        seen = list(self._jobs.values())
        for start in range(0, len(seen), size):
            yield _flat(seen[start : start + size])


def _flat(jobs: Iterable[EventFields | _Winners]) -> list[str]:
    values: list[str] = []
    extend = values.extend
    for seen in jobs:
        extend(_packed(seen))
    return values


def _packed(seen: EventFields | _Winners) -> Delta:
    if type(seen) is _Winners:
        return seen.packed()
    return single_event_delta(seen)  # type: ignore[arg-type]  # not _Winners: its fields
