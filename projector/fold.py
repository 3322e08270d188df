"""The fold: a job's state as a merge of three tagged groups (DESIGN "The fold is a merge").

Pure: no I/O. This is the definition every other path is held to:
- `state_of(event)` is the singleton state of one event;
- `merge(a, b)` keeps, per group, the side that ranks higher (`head_rank`, `origin_rank`):
  the later event for the head and the public group, the earlier one for the origin, and
  between two different events with the same (seq, event_id) - twins, a contract breach -
  the one whose stored group is greater, so that no delivery order changes the result;
- `fold(events)` merges singletons. `merge` is associative, commutative and idempotent, so
  delivery order and duplicates cannot change a projection.

`BatchFold` is the same rule for a consumer batch: it ranks a job's events with the same
functions but keeps the winning *events* and encodes only those, once per job. The Redis
merge (`projector/jobs.lua`) is the same rule again over stored values; a property test runs
both on the same event sets (`tests/integration/test_merge_equals_fold.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from pydantic import TypeAdapter
from pydantic_core import to_jsonable_python

from contracts.events import JobEvent, StorageArtifact
from contracts.job_state import (
    NO_ARTIFACTS,
    STATUS_BY_KIND,
    SURFACING_KINDS,
    Delta,
    Head,
    JobState,
    Origin,
    Public,
    head_value,
    origin_value,
    public_value_of_parts,
    shares_artifacts,
    unpack_delta,
)
from projector.event_fields import EventFields, fields_of

JobRef = tuple[str, str]  # (tenant_id, job_id): the same job id under two tenants is two jobs
FINAL_KINDS = frozenset({"succeeded", "failed"})
Rank = tuple[Any, ...]
G = TypeVar("G", Head, Origin, Public)


def head_rank(group: Head | Public) -> Rank:
    """Head and public: the greatest (seq, event_id) wins; between twins, the greater rest of
    the group (for the head: the status, then the manifest)."""
    return tuple(group)


def origin_rank(group: Origin) -> Rank:
    """Origin: the least seq wins; among equal seqs, the greater event_id (CONTRACT §2), then
    between twins the greater rest (the job type, then the creation time)."""
    seq, event_id, job_type, created_at = group
    return (-seq, event_id, job_type, created_at)


# Serialisers typed once: pydantic-core then need not work out each value's type. The output
# is `to_json`'s, byte for byte.
_artifacts_json = TypeAdapter(list[StorageArtifact]).serializer.to_json
_lead_json = TypeAdapter(tuple[str, str]).serializer.to_json
_tail_json = TypeAdapter(tuple[dict[str, Any], datetime]).serializer.to_json


def surfaces(event: EventFields) -> bool:
    """Only public queued/stage/succeeded/failed events may become `latest_event`."""
    return event["visibility"] == "public" and event["kind"] in SURFACING_KINDS


def artifacts_json(event: EventFields) -> str:
    """An event's artifacts as a JSON list."""
    artifacts = event["artifacts"]
    return _artifacts_json(artifacts).decode() if artifacts else NO_ARTIFACTS


def manifest_json(event: EventFields) -> str:
    """The head's manifest: a succeeded event's artifacts as a JSON list, else `[]`."""
    return artifacts_json(event) if event["kind"] == "succeeded" else NO_ARTIFACTS


def iso_text(moment: datetime) -> str:
    """ISO 8601 as pydantic-core writes it; the api renders it in UTC (`utc_text`)."""
    text: str = to_jsonable_python(moment)  # the JSON string's text, without its quotes
    return text


def event_lead(event: EventFields) -> str:
    """`[kind,message,`: the stored event's JSON array up to its artifacts."""
    return _lead_json((event["kind"], event["message"]))[:-1].decode() + ","


def event_tail(event: EventFields) -> str:
    """`,payload,created_at]`: the stored event's JSON array after its artifacts."""
    return "," + _tail_json((event["payload"], event["occurred_at"]))[1:].decode()


def stored_event_json(event: EventFields) -> str:
    """The public event as `latest_event` keeps it: a `StoredEvent` as a JSON array, written
    in the parts that the stored value keeps apart (`contracts.job_state.event_parts`)."""
    return event_lead(event) + artifacts_json(event) + event_tail(event)


def head_of(event: EventFields) -> Head:
    return Head(
        event["seq"], event["event_id"], STATUS_BY_KIND[event["kind"]], manifest_json(event)
    )


def origin_of(event: EventFields) -> Origin:
    created_at = iso_text(event["job_created_at"])
    return Origin(event["seq"], event["event_id"], event["job_type"], created_at)


def public_of(event: EventFields) -> Public:
    return Public(event["seq"], event["event_id"], stored_event_json(event))


def state_of(event: EventFields | JobEvent) -> JobState:
    fields = fields_of(event) if isinstance(event, JobEvent) else event
    public = public_of(fields) if surfaces(fields) else None
    return JobState(head_of(fields), origin_of(fields), public)


def _winner(a: G | None, b: G | None, rank: Any) -> G | None:
    if a is None or b is None:
        return a if b is None else b
    return a if rank(a) >= rank(b) else b


def merge(a: JobState, b: JobState) -> JobState:
    return JobState(
        head=_winner(a.head, b.head, head_rank),
        origin=_winner(a.origin, b.origin, origin_rank),
        public=_winner(a.public, b.public, head_rank),
    )


def fold(events: Iterable[EventFields | JobEvent], start: JobState | None = None) -> JobState:
    state = start or JobState()
    for event in events:
        state = merge(state, state_of(event))
    return state


# --- the same fold over a batch, encoding only the winners ----------------------------------


def _ranks_above(
    event: EventFields, other: EventFields, least_seq_wins: bool, group_of: Any, rank: Any
) -> bool:
    """Whether `event`'s group ranks above `other`'s, as `rank(group_of(...))` says: the
    leading (seq, event_id) of the rank is read off the events, and only twins - the same
    (seq, event_id), different events - have their groups encoded and ranked."""
    seq, other_seq = event["seq"], other["seq"]
    if seq != other_seq:
        return seq < other_seq if least_seq_wins else seq > other_seq
    if event["event_id"] != other["event_id"]:
        return event["event_id"] > other["event_id"]
    return event is not other and bool(rank(group_of(event)) > rank(group_of(other)))


def packed_delta(head: EventFields, origin: EventFields, public: EventFields | None) -> Delta:
    """`pack_delta(JobState(head_of(head), origin_of(origin), public_of(public)))`, written
    straight from the winning events."""
    manifest = manifest_json(head)
    return (
        head_value(head["seq"], head["event_id"], STATUS_BY_KIND[head["kind"]], manifest),
        origin_value(
            origin["seq"],
            origin["event_id"],
            origin["job_type"],
            iso_text(origin["job_created_at"]),
        ),
        "" if public is None else _public_value(public, head, manifest),
    )


def _public_value(public: EventFields, head: EventFields, manifest: str) -> str:
    """The stored public value of `public` under the head `head` whose manifest is given."""
    seq, event_id = public["seq"], public["event_id"]
    # A succeeded event that is its job's head: its artifacts are the manifest, serialised.
    artifacts = manifest if public is head and manifest != NO_ARTIFACTS else artifacts_json(public)
    shared = shares_artifacts(seq, event_id, artifacts, head["seq"], head["event_id"], manifest)
    lead, tail = event_lead(public), event_tail(public)
    return public_value_of_parts(seq, event_id, lead, artifacts, tail, shared)


class _Winners:
    """A job's winning events per group within one batch (two or more events seen)."""

    __slots__ = ("events", "head", "origin", "public")

    def __init__(self, first: EventFields) -> None:
        self.head = self.origin = first
        self.public: EventFields | None = first if surfaces(first) else None
        self.events = 1  # seen in this batch, duplicates included

    def add(self, event: EventFields) -> None:
        self.events += 1
        if _ranks_above(event, self.head, False, head_of, head_rank):
            self.head = event
        if _ranks_above(event, self.origin, True, origin_of, origin_rank):
            self.origin = event
        public = self.public
        if surfaces(event) and (
            public is None or _ranks_above(event, public, False, public_of, head_rank)
        ):
            self.public = event

    def packed(self) -> Delta:
        return packed_delta(self.head, self.origin, self.public)


class BatchFold:
    """Folds one batch's events into one delta per job; equal to `fold` per job.

    A job seen once in the batch (the common case under live traffic, where a batch holds one
    event of each of thousands of jobs) keeps its event as it is; its `_Winners` are made only
    when a second event of the job arrives."""

    __slots__ = ("_jobs",)

    def __init__(self) -> None:
        self._jobs: dict[JobRef, EventFields | _Winners] = {}

    def add(self, event: EventFields) -> None:
        ref = (event["tenant_id"], event["job_id"])
        seen = self._jobs.get(ref)
        if seen is None:
            self._jobs[ref] = event
        elif isinstance(seen, _Winners):
            seen.add(event)
        else:
            winners = self._jobs[ref] = _Winners(seen)
            winners.add(event)

    def __len__(self) -> int:
        return len(self._jobs)

    def jobs(self) -> list[JobRef]:
        return list(self._jobs)

    def deltas(self) -> dict[JobRef, JobState]:
        """Each job's delta as a state."""
        return {ref: unpack_delta(_packed(seen)) for ref, seen in self._jobs.items()}

    def events_per_job(self) -> dict[int, int]:
        """Events seen per job, by the job's index in `jobs()`, for the jobs seen more than
        once (every other job was seen once): a job's events count as one outcome."""
        return {
            index: seen.events
            for index, seen in enumerate(self._jobs.values())
            if isinstance(seen, _Winners)
        }

    def occurred_at_sample(self, size: int) -> list[datetime]:
        """`occurred_at` of the latest event of up to `size` jobs, spread over the batch:
        enough to follow the event-to-visible latency without a clock read per event."""
        seen = list(self._jobs.values())
        step = max(1, len(seen) // size)
        return [
            (one.head if isinstance(one, _Winners) else one)["occurred_at"]
            for one in seen[::step][:size]
        ]

    def packed(self) -> tuple[list[JobRef], list[str]]:
        """The jobs and their deltas, as `pack_delta(fold(events))` per job, flat: three
        values per job, in the order of the jobs (as the merge takes them)."""
        return self.jobs(), _flat(self._jobs.values())

    def expire_at(self, retention_seconds: int) -> list[str]:
        """Per job, in the order of `jobs()`: the unix time its key expires at when its head
        (the winning event) is final - `occurred_at` + the retention - else ''
        (JOB_RETENTION_SECONDS; the merge applies it only when this head wins)."""
        expiries = []
        for seen in self._jobs.values():
            head = seen.head if isinstance(seen, _Winners) else seen
            final = head["kind"] in FINAL_KINDS
            at = int(head["occurred_at"].timestamp()) + retention_seconds if final else None
            expiries.append("" if at is None else str(at))
        return expiries

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
    if isinstance(seen, _Winners):
        return seen.packed()
    return packed_delta(seen, seen, seen if surfaces(seen) else None)
