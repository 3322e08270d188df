"""Hypothesis strategies for job lifecycle events (CONTRACT §1), reusable by any test.

Events are built the way a consumer sees them: a JSON document, validated by
`JobEvent.model_validate_json`. The documents exercise the contract's corners on purpose:

- seqs come from a small range (1..12 by default), so two different events often share a
  seq (a contract breach the projection must still resolve: the greater `event_id` wins);
- ids (`event_id`, `job_id`) are valid ULIDs, sometimes written partly in lower case (the
  contract accepts any case and stores upper case);
- `job_type` and `job_created_at` vary between events of one job, so it is visible which
  event the origin was taken from;
- every kind, both visibilities, artifacts of both roles with unicode keys, small payloads,
  aware datetimes in several offsets, with and without a fraction of a second.

`job_events(...)` draws single events of one job, `event_sets(...)` whole deliveries of one
job (duplicates, same-seq conflicts, any order), `jobs_batches(...)` the interleaved events of
several jobs and tenants, `make_event(...)` builds one event from explicit fields.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st
from ulid import ULID

from contracts.events import JobEvent
from contracts.storage import StorageRules

DEFAULT_TENANT_ID = "acme"
DEFAULT_JOB_ID = "01JDQ8Z3M4W8K2V7T6R5N4P3Q2"

KINDS = ("created", "queued", "stage", "succeeded", "failed")
VISIBILITIES = ("public", "internal")
JOB_TYPES = ("ON_MODEL_RENDER", "CATALOG_IMAGE", "X", "A1_B2")
ARTIFACT_KINDS = ("on_model_render", "catalog_image", "thumbnail", "x1_y2")
BUCKETS = ("renders", "catalog.images-eu", "a1b")
TENANTS = ("acme", "globex", "t0", "a_b-c")

OFFSETS = (
    UTC,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=-8)),
    timezone(timedelta(hours=14)),
)

_MIN_MOMENT = datetime(2000, 1, 1)  # naive bounds: the timezone is drawn
_MAX_MOMENT = datetime(2100, 1, 1)

# Text without lone surrogates (not UTF-8 encodable), with plenty of non-ASCII.
_text_chars = st.characters(codec="utf-8")
short_texts = st.text(_text_chars, max_size=12)


def ulids(*, mixed_case: bool = False) -> st.SearchStrategy[str]:
    """Valid ULIDs: 26 Crockford base32 characters, the first 0-7.

    With `mixed_case`, some letters come out in lower case (the contract accepts any case).
    """
    return _MIXED_CASE_ULIDS if mixed_case else _UPPER_ULIDS


def _recase(text: str, mask: int) -> str:
    """`text` with the letters whose bit is set in `mask` in lower case."""
    return "".join(c.lower() if mask >> i & 1 else c for i, c in enumerate(text))


def crockford_ulid(value: int) -> str:
    """The 26-character ULID text of a 128-bit integer."""
    return str(ULID.from_int(value))


# One choice per id (not 26), values small and huge, so ids share long prefixes at times.
_UPPER_ULIDS = st.one_of(st.integers(0, 2**128 - 1), st.integers(0, 2**12)).map(crockford_ulid)
_CASE_MASKS = st.one_of(st.just(0), st.integers(0, 2**26 - 1))
_MIXED_CASE_ULIDS = st.builds(_recase, _UPPER_ULIDS, _CASE_MASKS)


def rfc3339_texts() -> st.SearchStrategy[str]:
    """Aware datetimes as RFC 3339 text with an offset (`Z` or `±hh:mm`)."""
    moments = st.datetimes(
        min_value=_MIN_MOMENT, max_value=_MAX_MOMENT, timezones=st.sampled_from(OFFSETS)
    )
    whole_seconds = moments.map(lambda m: m.replace(microsecond=0))
    return st.tuples(st.one_of(moments, whole_seconds), st.booleans()).map(
        lambda pair: _iso(pair[0], zulu=pair[1])
    )


def _iso(moment: datetime, *, zulu: bool) -> str:
    text = moment.isoformat()
    return text.removesuffix("+00:00") + "Z" if zulu and text.endswith("+00:00") else text


def json_values(max_leaves: int = 3) -> st.SearchStrategy[Any]:
    """Small plain-JSON values (no NaN/Infinity), unicode keys and strings."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**53), 2**53),
        st.floats(allow_nan=False, allow_infinity=False),
        short_texts,
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(short_texts, inner, max_size=3)
        ),
        max_leaves=max_leaves,
    )


def json_objects(max_size: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(short_texts, json_values(), max_size=max_size)


def artifact_documents() -> st.SearchStrategy[dict[str, Any]]:
    """A storage artifact as on the wire; `metadata` sometimes left to its default."""
    keys = st.one_of(
        st.text(_text_chars, min_size=1, max_size=24),
        st.sampled_from(["renders/a.png", "é/日本/🖼.jpg", " ", "a" * 300]),
    )
    return st.fixed_dictionaries(
        {
            "bucket": st.sampled_from(BUCKETS),
            "key": keys,
            "kind": st.sampled_from(ARTIFACT_KINDS),
            "role": st.sampled_from(["intermediate", "final"]),
        },
        optional={"metadata": json_objects()},
    )


def _bodies(
    kinds: st.SearchStrategy[str], visibilities: st.SearchStrategy[str]
) -> st.SearchStrategy[dict[str, Any]]:
    """Everything of an event document but its identity (event_id, tenant, job, seq)."""
    moments = rfc3339_texts()
    return st.fixed_dictionaries(
        {
            "job_type": st.sampled_from(JOB_TYPES),
            "job_created_at": moments,
            "kind": kinds,
            "visibility": visibilities,
            "message": st.text(_text_chars, max_size=8),
            "occurred_at": moments,
        },
        optional={
            "artifacts": st.lists(artifact_documents(), max_size=3),
            "payload": json_objects(),
            "unknown_extra_field": json_values(max_leaves=2),  # tolerant reader
        },
    )


# Built once: constructing strategies per draw dominates the run time otherwise.
_DEFAULT_BODIES = _bodies(st.sampled_from(KINDS), st.sampled_from(VISIBILITIES))
_DEFAULT_SEQS = st.integers(1, 12)


def _document(
    body: dict[str, Any], event_id: str, tenant_id: str, job_id: str, seq: int
) -> dict[str, Any]:
    identity = {"schema_version": 1, "event_id": event_id, "tenant_id": tenant_id}
    return identity | {"job_id": job_id, "seq": seq} | body


def job_event_documents(
    *,
    tenant_id: str = DEFAULT_TENANT_ID,
    job_id: str = DEFAULT_JOB_ID,
    event_ids: st.SearchStrategy[str] | None = None,
    seqs: st.SearchStrategy[int] | None = None,
    kinds: st.SearchStrategy[str] | None = None,
    visibilities: st.SearchStrategy[str] | None = None,
    mixed_case: bool = True,
) -> st.SearchStrategy[dict[str, Any]]:
    """Valid event envelopes v1 of one job, as JSON documents (what a producer sends).

    `job_id` is written in a random case per event when `mixed_case` (same job either way).
    """
    bodies = (
        _DEFAULT_BODIES
        if kinds is None and visibilities is None
        else _bodies(
            kinds if kinds is not None else st.sampled_from(KINDS),
            visibilities if visibilities is not None else st.sampled_from(VISIBILITIES),
        )
    )
    return st.builds(
        _document,
        bodies,
        event_ids if event_ids is not None else ulids(mixed_case=mixed_case),
        st.just(tenant_id),
        _case_variants(job_id) if mixed_case else st.just(job_id),
        seqs if seqs is not None else _DEFAULT_SEQS,
    )


def _case_variants(ulid: str) -> st.SearchStrategy[str]:
    return st.builds(_recase, st.just(ulid.upper()), _CASE_MASKS)


def event_from_document(document: dict[str, Any]) -> JobEvent:
    """Parse a document exactly as the consumer parses a Kafka value: from JSON bytes."""
    return JobEvent.model_validate_json(json.dumps(document, ensure_ascii=False).encode())


def job_events(
    *,
    tenant_id: str = DEFAULT_TENANT_ID,
    job_id: str = DEFAULT_JOB_ID,
    event_ids: st.SearchStrategy[str] | None = None,
    seqs: st.SearchStrategy[int] | None = None,
    kinds: st.SearchStrategy[str] | None = None,
    visibilities: st.SearchStrategy[str] | None = None,
    mixed_case: bool = True,
) -> st.SearchStrategy[JobEvent]:
    """Valid `JobEvent`s of ONE job `(tenant_id, job_id)`."""
    return job_event_documents(
        tenant_id=tenant_id,
        job_id=job_id,
        event_ids=event_ids,
        seqs=seqs,
        kinds=kinds,
        visibilities=visibilities,
        mixed_case=mixed_case,
    ).map(event_from_document)


@st.composite
def event_documents_sets(
    draw: st.DrawFn,
    *,
    tenant_id: str = DEFAULT_TENANT_ID,
    job_id: str = DEFAULT_JOB_ID,
    min_size: int = 0,
    max_size: int = 10,
    max_seq: int = 12,
    conflicts: bool = True,
    duplicates: bool = True,
    mixed_case: bool = True,
    twins: bool = False,
) -> list[dict[str, Any]]:
    """`event_sets`, as the JSON documents a producer sends (e.g. to publish to Kafka)."""
    count = draw(st.integers(min_size, max_size))
    ids = draw(
        st.lists(ulids(mixed_case=mixed_case), min_size=count, max_size=count, unique_by=str.upper)
    )
    if conflicts:
        seqs = draw(st.lists(st.integers(1, max_seq), min_size=count, max_size=count))
        # Force a few same-seq conflicts: an event put at the seq of an earlier one.
        for later in draw(st.lists(st.integers(1, max(count - 1, 1)), max_size=3)):
            if later < count:
                seqs[later] = seqs[draw(st.integers(0, later - 1))]
    else:
        seqs = draw(
            st.lists(
                st.integers(1, max(max_seq, count)), min_size=count, max_size=count, unique=True
            )
        )
    job_ids = _case_variants(job_id) if mixed_case else st.just(job_id)
    documents = [
        _document(draw(_DEFAULT_BODIES), event_id, tenant_id, draw(job_ids), seq)
        for event_id, seq in zip(ids, seqs, strict=True)
    ]
    if twins and documents:
        # Twins: another event with the seq and the event_id of one already there.
        for original in draw(st.lists(st.sampled_from(documents), min_size=1, max_size=3)):
            body = draw(_DEFAULT_BODIES)
            twin = _document(body, original["event_id"], tenant_id, draw(job_ids), original["seq"])
            documents.append(twin)
    if duplicates and documents:
        documents += draw(st.lists(st.sampled_from(documents), max_size=4))
    return draw(st.permutations(documents))


def event_sets(
    *,
    tenant_id: str = DEFAULT_TENANT_ID,
    job_id: str = DEFAULT_JOB_ID,
    min_size: int = 0,
    max_size: int = 10,
    max_seq: int = 12,
    conflicts: bool = True,
    duplicates: bool = True,
    mixed_case: bool = True,
    twins: bool = False,
) -> st.SearchStrategy[list[JobEvent]]:
    """A delivery of one job's events, in any order.

    The distinct events have distinct event ids. With `conflicts`, seqs are drawn from
    1..`max_seq` with repetition and up to three events are put at the seq of another one
    (same-seq conflicts); without, every seq is unique. With `duplicates`, some events are delivered
    again (re-parsed from the same document: an equal, separate object). With `twins`, up to
    three events get a twin: another event with the same seq and event_id (a contract
    breach the projection resolves by a fixed order, whatever the delivery order).
    """
    return event_documents_sets(
        tenant_id=tenant_id,
        job_id=job_id,
        min_size=min_size,
        max_size=max_size,
        max_seq=max_seq,
        conflicts=conflicts,
        duplicates=duplicates,
        mixed_case=mixed_case,
        twins=twins,
    ).map(lambda documents: [event_from_document(d) for d in documents])


@st.composite
def jobs_batches(
    draw: st.DrawFn,
    *,
    max_jobs: int = 4,
    max_events_per_job: int = 6,
    twins: bool = False,
) -> list[JobEvent]:
    """The interleaved events of several jobs and tenants, as one consumer batch sees them.

    The same job id is often used under two tenants (two different jobs).
    """
    job_ids = draw(st.lists(ulids(), min_size=1, max_size=2, unique=True))
    refs = draw(
        st.lists(
            st.tuples(st.sampled_from(TENANTS), st.sampled_from(job_ids)),
            min_size=1,
            max_size=max_jobs,
            unique=True,
        )
    )
    events: list[JobEvent] = []
    for tenant_id, job_id in refs:
        events += draw(
            event_sets(
                tenant_id=tenant_id,
                job_id=job_id,
                min_size=1,
                max_size=max_events_per_job,
                twins=twins,
            )
        )
    return draw(st.permutations(events))


_counter = iter(range(1, 2**40))


def make_event(
    seq: int,
    kind: str,
    *,
    event_id: str | None = None,
    visibility: str = "public",
    tenant_id: str = DEFAULT_TENANT_ID,
    job_id: str = DEFAULT_JOB_ID,
    job_type: str = "ON_MODEL_RENDER",
    job_created_at: str = "2026-11-29T12:00:00Z",
    message: str = "",
    artifacts: Sequence[dict[str, Any]] = (),
    payload: dict[str, Any] | None = None,
    occurred_at: str = "2026-11-29T12:03:10Z",
) -> JobEvent:
    """One valid event from explicit fields; `event_id` defaults to a fresh increasing ULID."""
    if event_id is None:
        event_id = f"{next(_counter):026d}"
    return event_from_document(
        {
            "schema_version": 1,
            "event_id": event_id,
            "tenant_id": tenant_id,
            "job_id": job_id,
            "job_type": job_type,
            "job_created_at": job_created_at,
            "seq": seq,
            "kind": kind,
            "visibility": visibility,
            "message": message,
            "artifacts": list(artifacts),
            "payload": payload if payload is not None else {},
            "occurred_at": occurred_at,
        }
    )


def artifact(
    key: str,
    *,
    role: str = "final",
    bucket: str = "renders",
    kind: str = "on_model_render",
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An artifact document for `make_event`."""
    return {
        "bucket": bucket,
        "key": key,
        "kind": kind,
        "role": role,
        "metadata": metadata if metadata is not None else {},
    }


class AnyStorage(StorageRules):
    """Storage rules that refuse nothing: for tests of the envelope's own rules, whose events
    name any bucket the contract's pattern allows (the storage rules have tests of their own)."""

    def refusal(self, tenant_id: str, bucket: str, key: str) -> str | None:
        return None


ANY_STORAGE = AnyStorage(frozenset({"any"}))
