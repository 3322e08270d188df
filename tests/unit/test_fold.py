"""The fold against CONTRACT §2, property-based: a job is a function of the set of its events.

The reference below is written plainly from CONTRACT §2 and shares no code with
`projector/fold.py`: keep the distinct events, let only the greatest `event_id` count at a
seq, sort by seq, read the fields off the first/last events. The fold is compared to it
through what a reader sees (status, manifest, type, created_at, latest_event), for random
deliveries in any order and with any duplication.
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.events import JobEvent, StorageArtifact
from contracts.job_state import (
    Head,
    JobState,
    Origin,
    Public,
    decode_state,
    encode_state,
    pack_delta,
    utc_text,
)
from projector.event_fields import fields_of
from projector.fold import BatchFold, fold, merge
from tests.strategies import (
    artifact,
    event_from_document,
    event_sets,
    job_event_documents,
    jobs_batches,
    make_event,
)

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    database=None,  # no .hypothesis/ directory in the repository
    suppress_health_check=[HealthCheck.too_slow],
)

# --- the reference: CONTRACT §2, written plainly ------------------------------------------

STATUS_OF_KIND = {
    "created": "NOT_STARTED",
    "queued": "QUEUED",
    "stage": "RUNNING",
    "succeeded": "SUCCEEDED",
    "failed": "FAILED",
}
KINDS_THAT_SURFACE = {"queued", "stage", "succeeded", "failed"}


@dataclass(frozen=True)
class View:
    """What a reader can see of a job; `None` everywhere for a job without events."""

    status: str | None
    manifest: list[dict[str, Any]] | None
    job_type: str | None
    created_at: datetime | None
    latest_event: dict[str, Any] | None


def counted_events(events: Iterable[JobEvent]) -> list[JobEvent]:
    """The distinct events, only the greatest event_id at each seq, sorted by seq."""
    distinct = {(event.seq, event.event_id): event for event in events}
    winner_at: dict[int, JobEvent] = {}
    for event in distinct.values():
        if event.seq not in winner_at or event.event_id > winner_at[event.seq].event_id:
            winner_at[event.seq] = event
    return [winner_at[seq] for seq in sorted(winner_at)]


def artifacts_as_stored(event: JobEvent) -> list[dict[str, Any]]:
    return [a.model_dump(mode="json") for a in event.artifacts]


def reference(events: Iterable[JobEvent]) -> View:
    counted = counted_events(events)
    if not counted:
        return View(None, None, None, None, None)
    first, last = counted[0], counted[-1]
    status = STATUS_OF_KIND[last.kind]
    manifest: list[dict[str, Any]] = []
    if status == "SUCCEEDED":
        highest_succeeded = [e for e in counted if e.kind == "succeeded"][-1]
        manifest = artifacts_as_stored(highest_succeeded)
    # latest_event follows DESIGN's public group: the greatest (seq, event_id) among the public
    # surfacing events. It differs from "only the seq winner counts" in one case only, a public
    # event whose same-seq twin with a greater event_id does not surface (see the test below).
    distinct = {(e.seq, e.event_id): e for e in events}.values()
    public = sorted(
        (e for e in distinct if e.visibility == "public" and e.kind in KINDS_THAT_SURFACE),
        key=lambda e: (e.seq, e.event_id),
    )
    latest_event = None
    if public:
        latest = public[-1]
        latest_event = {
            "seq": latest.seq,
            "kind": latest.kind,
            "message": latest.message,
            "artifacts": artifacts_as_stored(latest),
            "payload": latest.payload,
            "created_at": latest.occurred_at,
        }
    return View(status, manifest, first.job_type, first.job_created_at, latest_event)


RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


def parse_utc(stored: str) -> datetime:
    """A stored timestamp as rendered: RFC 3339 in UTC ending in `Z`, a fraction only when
    there is one."""
    text = utc_text(stored)
    assert RFC3339_UTC.fullmatch(text), text
    moment = datetime.fromisoformat(text)
    assert ("." in text) == (moment.microsecond != 0), text
    return moment


def view(state: JobState) -> View:
    """Decode a folded state the way a reader would."""
    head, origin, public = state.head, state.origin, state.public
    latest_event = None
    if public is not None:
        kind, message, artifacts, payload, created_at = json.loads(public.event_json)
        latest_event = {
            "seq": public.seq,
            "kind": kind,
            "message": message,
            "artifacts": artifacts,
            "payload": payload,
            "created_at": parse_utc(created_at),
        }
    return View(
        status=None if head is None else head.status,
        manifest=None if head is None else json.loads(head.manifest_json),
        job_type=None if origin is None else origin.job_type,
        created_at=None if origin is None else parse_utc(origin.created_at),
        latest_event=latest_event,
    )


# --- 1. the fold equals the reference ------------------------------------------------------


@PROPERTY
@given(event_sets())
def test_status_and_manifest_come_from_the_highest_seq_event(events: list[JobEvent]) -> None:
    expected, actual = reference(events), view(fold(events))
    assert (actual.status, actual.manifest) == (expected.status, expected.manifest)


@PROPERTY
@given(event_sets())
def test_type_and_created_at_come_from_the_lowest_seq_event(events: list[JobEvent]) -> None:
    expected, actual = reference(events), view(fold(events))
    assert (actual.job_type, actual.created_at) == (expected.job_type, expected.created_at)


@PROPERTY
@given(event_sets())
def test_latest_event_is_the_highest_seq_public_surfacing_event(events: list[JobEvent]) -> None:
    assert view(fold(events)).latest_event == reference(events).latest_event


@PROPERTY
@given(event_sets(conflicts=False))
def test_without_same_seq_conflicts_the_fold_equals_the_reference(
    events: list[JobEvent],
) -> None:
    assert view(fold(events)) == reference(events)


@PROPERTY
@given(event_sets())
def test_the_head_and_origin_are_tagged_by_the_event_that_set_them(events: list[JobEvent]) -> None:
    state = fold(events)
    counted = counted_events(events)
    if not counted:
        assert state == JobState()
        return
    assert state.head is not None
    assert state.origin is not None
    assert (state.head.seq, state.head.event_id) == (counted[-1].seq, counted[-1].event_id)
    assert (state.origin.seq, state.origin.event_id) == (counted[0].seq, counted[0].event_id)


@PROPERTY
@given(event_sets(twins=True), st.randoms(use_true_random=False), st.data())
def test_the_fold_depends_neither_on_delivery_order_nor_on_duplicates(
    events: list[JobEvent], rnd: random.Random, data: st.DataObject
) -> None:
    redelivered = list(events)
    if events:
        redelivered += data.draw(st.lists(st.sampled_from(events), max_size=6))
    rnd.shuffle(redelivered)
    assert fold(redelivered) == fold(events)
    assert fold(reversed(redelivered)) == fold(events)


# --- 2. merge is a semilattice; fold is merge over singletons -------------------------------


@st.composite
def split_deliveries(draw: st.DrawFn) -> list[list[JobEvent]]:
    """Three overlapping deliveries drawn from one job's events, twins among them."""
    events = draw(event_sets(twins=True))
    memberships = draw(
        st.lists(st.sets(st.integers(0, 2), max_size=3), min_size=len(events), max_size=len(events))
    )
    return [
        [event for event, member_of in zip(events, memberships, strict=True) if part in member_of]
        for part in range(3)
    ]


@PROPERTY
@given(split_deliveries())
def test_merge_is_associative(parts: list[list[JobEvent]]) -> None:
    a, b, c = (fold(part) for part in parts)
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@PROPERTY
@given(split_deliveries())
def test_merge_is_commutative(parts: list[list[JobEvent]]) -> None:
    a, b, _ = (fold(part) for part in parts)
    assert merge(a, b) == merge(b, a)


@PROPERTY
@given(split_deliveries())
def test_merge_is_idempotent_and_the_empty_state_is_neutral(parts: list[list[JobEvent]]) -> None:
    a = fold(parts[0])
    assert merge(a, a) == a
    assert merge(a, JobState()) == a
    assert merge(JobState(), a) == a


@PROPERTY
@given(split_deliveries())
def test_fold_of_a_concatenation_is_the_merge_of_the_folds(parts: list[list[JobEvent]]) -> None:
    first, second, _ = parts
    assert fold(first + second) == merge(fold(first), fold(second))
    assert fold(second, start=fold(first)) == fold(first + second)


# --- 3. BatchFold -----------------------------------------------------------------------------


def fold_per_job(events: Sequence[JobEvent]) -> dict[tuple[str, str], JobState]:
    per_job: dict[tuple[str, str], list[JobEvent]] = defaultdict(list)
    for event in events:
        per_job[(event.tenant_id, event.job_id.upper())].append(event)
    return {ref: fold(job_events) for ref, job_events in per_job.items()}


@PROPERTY
@given(jobs_batches(twins=True))
def test_batch_fold_gives_each_job_the_fold_of_its_own_events(events: list[JobEvent]) -> None:
    batch = BatchFold()
    for event in events:
        batch.add(fields_of(event))
    expected = fold_per_job(events)
    assert batch.deltas() == expected
    assert len(batch) == len(expected)


def test_an_empty_batch_has_no_deltas() -> None:
    batch = BatchFold()
    assert len(batch) == 0
    assert batch.deltas() == {}


# --- 4. examples ------------------------------------------------------------------------------

JOB = "01JDQ8Z3M4W8K2V7T6R5N4P3Q2"


def test_the_same_job_id_under_two_tenants_is_two_jobs() -> None:
    acme = make_event(1, "succeeded", tenant_id="acme", job_id=JOB, artifacts=[artifact("a")])
    globex = make_event(2, "failed", tenant_id="globex", job_id=JOB.lower())
    batch = BatchFold()
    batch.add(fields_of(acme))
    batch.add(fields_of(globex))
    deltas = batch.deltas()
    assert set(deltas) == {("acme", JOB), ("globex", JOB)}
    assert deltas[("acme", JOB)] == fold([acme])
    assert deltas[("globex", JOB)] == fold([globex])
    assert view(deltas[("acme", JOB)]).status == "SUCCEEDED"
    assert view(deltas[("globex", JOB)]).status == "FAILED"


def test_a_job_id_in_another_case_is_the_same_job() -> None:
    batch = BatchFold()
    batch.add(fields_of(make_event(1, "queued", job_id=JOB)))
    batch.add(fields_of(make_event(2, "stage", job_id=JOB.lower())))
    assert list(batch.deltas()) == [("acme", JOB)]


def test_a_second_delivery_of_an_event_changes_nothing() -> None:
    events = [
        make_event(1, "created"),
        make_event(2, "queued", message="queued"),
        make_event(3, "succeeded", artifacts=[artifact("out.png")]),
    ]
    once = fold(events)
    again = [*events, events[1], events[0], events[2], events[1]]
    assert fold(again) == once
    assert fold(reversed(again)) == once
    for event in events:
        assert merge(once, fold([event])) == once


def test_twins_resolve_to_the_same_job_in_every_delivery_order() -> None:
    """The same seq and event_id, different content: the stored group that is greater wins,
    group by group (SUCCEEDED over FAILED for the head), whatever arrived first."""
    twin_id = "01JDQ9A7R5N4P3Q2W8K2V7T6M4"
    succeeded = make_event(5, "succeeded", event_id=twin_id, artifacts=[artifact("a.png")])
    failed = make_event(5, "failed", event_id=twin_id, message="boom")
    one_way, other_way = fold([succeeded, failed]), fold([failed, succeeded])
    assert one_way == other_way
    assert view(one_way).status == "SUCCEEDED"
    for order in ([succeeded, failed], [failed, succeeded]):
        batch = BatchFold()
        for event in order:
            batch.add(fields_of(event))
        assert batch.deltas() == {("acme", JOB): one_way}


def test_a_same_seq_conflict_resolves_to_the_greater_event_id_for_every_field() -> None:
    lesser = make_event(
        1,
        "queued",
        event_id="01AAAAAAAAAAAAAAAAAAAAAAAA",
        job_type="LOSER",
        job_created_at="2020-01-01T00:00:00Z",
        message="lesser",
        artifacts=[artifact("lesser.png")],
    )
    greater = make_event(
        1,
        "succeeded",
        event_id="01BBBBBBBBBBBBBBBBBBBBBBBB",
        job_type="WINNER",
        job_created_at="2021-06-01T08:00:00.5+02:00",
        message="greater",
        artifacts=[artifact("greater.png")],
    )
    for events in ([lesser, greater], [greater, lesser], [greater, lesser, greater]):
        seen = view(fold(events))
        assert seen.status == "SUCCEEDED"
        assert seen.manifest == artifacts_as_stored(greater)
        assert seen.job_type == "WINNER"
        assert seen.created_at == greater.job_created_at
        assert seen.latest_event is not None
        assert seen.latest_event["message"] == "greater"


def test_event_ids_compare_in_upper_case_whatever_case_they_were_sent_in() -> None:
    # Sent as "0a…" (greater than "0B…" byte-wise), it is "0A…" (less) once stored upper-case.
    sent_lower = make_event(4, "failed", event_id="0" + "a" * 25, message="lower")
    sent_upper = make_event(4, "stage", event_id="0B" + "0" * 24, message="upper")
    for events in ([sent_lower, sent_upper], [sent_upper, sent_lower]):
        seen = view(fold(events))
        assert seen.status == "RUNNING"
        assert seen.latest_event is not None
        assert seen.latest_event["message"] == "upper"


def test_a_public_event_shadowed_by_an_internal_same_seq_twin_still_surfaces() -> None:
    # A known, documented limit (README "Fold rules"): with two events of one seq - a
    # contract break by the producer - the internal twin with the greater event_id wins
    # status and the other head fields, but latest_event stays the public twin. Honouring
    # "only the seq winner counts" here would need every public candidate kept per job,
    # an unbounded state; the public group keeps one. Order still never matters.
    queued = make_event(1, "queued", message="queued")
    loser = make_event(2, "stage", event_id="01AAAAAAAAAAAAAAAAAAAAAAAA", message="public twin")
    winner = make_event(
        2, "stage", event_id="01BBBBBBBBBBBBBBBBBBBBBBBB", visibility="internal", message="winner"
    )
    for order in ([queued, loser, winner], [winner, queued, loser], [loser, winner, queued]):
        latest_event = view(fold(order)).latest_event
        assert latest_event is not None
        assert latest_event["message"] == "public twin"


@pytest.mark.parametrize("kind", ["created", "queued", "stage", "succeeded", "failed"])
def test_internal_events_never_become_latest_event(kind: str) -> None:
    state = fold([make_event(1, "queued"), make_event(2, kind, visibility="internal")])
    latest_event = view(state).latest_event
    assert latest_event is not None
    assert latest_event["seq"] == 1
    assert view(fold([make_event(1, kind, visibility="internal")])).latest_event is None


def test_created_events_never_become_latest_event() -> None:
    assert view(fold([make_event(1, "created")])).latest_event is None
    state = fold([make_event(1, "stage", message="stage"), make_event(2, "created")])
    latest_event = view(state).latest_event
    assert latest_event is not None
    assert latest_event["message"] == "stage"
    assert view(state).status == "NOT_STARTED"


def test_latest_event_carries_the_stored_event_with_occurred_at_in_utc() -> None:
    event = make_event(
        7,
        "succeeded",
        message="Render finished",
        artifacts=[artifact("r/1.png", metadata={"width": 2048, "height": 3072})],
        payload={"cost": {"credits": 3}, "ünï": ["c", 0.5, None]},
        occurred_at="2026-11-29T14:03:10.250+02:00",
    )
    state = fold([event])
    assert state.public is not None
    kind, message, artifacts, payload, created_at = json.loads(state.public.event_json)
    assert {
        "seq": state.public.seq,
        "kind": kind,
        "message": message,
        "artifacts": artifacts,
        "payload": payload,
        "created_at": utc_text(created_at),
    } == {
        "seq": 7,
        "kind": "succeeded",
        "message": "Render finished",
        "artifacts": [
            {
                "bucket": "renders",
                "key": "r/1.png",
                "kind": "on_model_render",
                "role": "final",
                "metadata": {"width": 2048, "height": 3072},
            }
        ],
        "payload": {"cost": {"credits": 3}, "ünï": ["c", 0.5, None]},
        "created_at": "2026-11-29T12:03:10.25Z",
    }


def test_created_at_is_utc_with_z_and_no_fraction_when_there_is_none() -> None:
    state = fold([make_event(1, "created", job_created_at="2026-11-29T13:00:00+01:00")])
    assert state.origin is not None
    assert utc_text(state.origin.created_at) == "2026-11-29T12:00:00Z"


def test_the_manifest_is_empty_when_a_later_failed_event_follows_succeeded() -> None:
    succeeded = make_event(1, "succeeded", artifacts=[artifact("out.png")])
    failed = make_event(2, "failed", message="boom")
    for events in ([succeeded, failed], [failed, succeeded]):
        seen = view(fold(events))
        assert seen.status == "FAILED"
        assert seen.manifest == []
        assert seen.latest_event is not None
        assert seen.latest_event["kind"] == "failed"


def test_the_manifest_is_empty_when_any_later_event_follows_succeeded() -> None:
    succeeded = make_event(1, "succeeded", artifacts=[artifact("out.png")])
    later = make_event(2, "stage", visibility="internal")
    seen = view(fold([later, succeeded]))
    assert (seen.status, seen.manifest) == ("RUNNING", [])


def test_the_manifest_comes_only_from_the_succeeded_event() -> None:
    stage = make_event(1, "stage", artifacts=[artifact("preview.png", role="intermediate")])
    succeeded = make_event(2, "succeeded")
    assert view(fold([stage, succeeded])).manifest == []
    assert view(fold([stage])).manifest == []


def test_an_internal_succeeded_event_still_sets_status_and_manifest() -> None:
    succeeded = make_event(2, "succeeded", visibility="internal", artifacts=[artifact("x")])
    seen = view(fold([make_event(1, "queued"), succeeded]))
    assert seen.status == "SUCCEEDED"
    assert seen.manifest == artifacts_as_stored(succeeded)
    assert seen.latest_event is not None
    assert seen.latest_event["kind"] == "queued"


def test_the_manifest_keeps_the_producers_artifact_order_and_every_role() -> None:
    artifacts = [
        artifact("z/last-name-first.png", role="final"),
        artifact("a/intermediate.png", role="intermediate", kind="catalog_image"),
        artifact("日本/画像.png", role="final", metadata={"w": 1}),
        artifact("b/intermediate-2.png", role="intermediate", bucket="catalog.images-eu"),
    ]
    state = fold([make_event(3, "succeeded", artifacts=artifacts)])
    seen = view(state)
    assert seen.manifest == artifacts
    assert state.head is not None
    assert [a.key for a in _stored_artifacts(state.head.manifest_json)] == [
        a["key"] for a in artifacts
    ]


def _stored_artifacts(manifest_json: str) -> list[StorageArtifact]:
    return [StorageArtifact.model_validate(item) for item in json.loads(manifest_json)]


def test_no_events_is_the_empty_state() -> None:
    assert fold([]) == JobState()
    assert view(fold([])) == reference([])


# --- 5. encoding a state as a Redis hash ------------------------------------------------------


@st.composite
def partial_states(draw: st.DrawFn) -> JobState:
    """Folded states with any of their groups possibly absent."""
    state = fold(draw(event_sets()))
    keep = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    return JobState(
        state.head if keep[0] else None,
        state.origin if keep[1] else None,
        state.public if keep[2] else None,
    )


@PROPERTY
@given(partial_states())
def test_decode_state_inverts_encode_state(state: JobState) -> None:
    fields = encode_state(state)
    assert all(isinstance(value, str) for value in fields.values())
    assert decode_state(fields) == state
    assert encode_state(decode_state(fields)) == fields


@PROPERTY
@given(partial_states())
def test_a_packed_delta_carries_every_group_and_blanks_absent_ones(state: JobState) -> None:
    groups = pack_delta(state)
    assert len(groups) == 3
    assert (groups[0] == "") == (state.head is None)
    assert (groups[1] == "") == (state.origin is None)
    assert (groups[2] == "") == (state.public is None)


def test_the_empty_state_encodes_to_no_fields() -> None:
    assert encode_state(JobState()) == {}
    assert decode_state({}) == JobState()


def test_a_full_state_round_trips_through_its_hash_fields() -> None:
    state = JobState(
        Head(7, "01BBBBBBBBBBBBBBBBBBBBBBBB", "SUCCEEDED", '[{"key":"é"}]'),
        Origin(1, "01AAAAAAAAAAAAAAAAAAAAAAAA", "ON_MODEL_RENDER", "2026-11-29T12:00:00Z"),
        Public(7, "01BBBBBBBBBBBBBBBBBBBBBBBB", '["succeeded","x",[{"key":"é"}],{},"t"]'),
    )
    assert decode_state(encode_state(state)) == state


# --- the strategies themselves ----------------------------------------------------------------


@settings(max_examples=50, deadline=None, database=None)
@given(job_event_documents())
def test_generated_documents_are_valid_events_of_the_one_job(document: dict[str, Any]) -> None:
    event = event_from_document(document)
    assert event.job_id == "01JDQ8Z3M4W8K2V7T6R5N4P3Q2"
    assert event.tenant_id == "acme"
    assert event.event_id == document["event_id"].upper()


@PROPERTY
@given(jobs_batches())
def test_packed_deltas_equal_the_packed_fold_per_job(events: list[JobEvent]) -> None:
    fold_ = BatchFold()
    for e in events:
        fold_.add(fields_of(e))
    jobs, packed = fold_.packed()
    expected = fold_per_job(events)
    assert jobs == list(expected)
    assert packed == [value for state in expected.values() for value in pack_delta(state)]


@pytest.mark.parametrize(
    ("sent", "stored_then_rendered"),
    [
        ("2026-11-29T12:00:00Z", "2026-11-29T12:00:00Z"),
        ("2026-11-29T12:00:00.500Z", "2026-11-29T12:00:00.5Z"),
        ("2026-11-29T12:00:00.000001+00:00", "2026-11-29T12:00:00.000001Z"),
        ("2026-11-29t13:30:00.25+01:30", "2026-11-29T12:00:00.25Z"),
        ("2026-11-29 00:30:00-02:00", "2026-11-29T02:30:00Z"),
        ("0002-01-01T00:30:00+01:00", "0001-12-31T23:30:00Z"),
        ("9998-12-31T23:30:00-01:00", "9999-01-01T00:30:00Z"),
    ],
)
def test_stored_timestamps_render_in_utc_whatever_offset_was_sent(
    sent: str, stored_then_rendered: str
) -> None:
    state = fold([make_event(2, "stage", job_created_at=sent, occurred_at=sent)])
    assert state.origin is not None
    assert state.public is not None
    assert utc_text(state.origin.created_at) == stored_then_rendered
    assert utc_text(json.loads(state.public.event_json)[4]) == stored_then_rendered
