"""The stored public value: a succeeded event's artifacts are stored once, as the head's
manifest, and every reader (the codec's decoding, the api's byte reading) gives the event
whole; public values of the earlier layout (the event whole) read the same."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings

from api.render import render_job
from contracts.events import JobEvent
from contracts.job_state import (
    F_HEAD,
    F_PUBLIC,
    UNIT,
    JobState,
    decode_state,
    encode_state,
    event_parts,
    stored_public,
)
from devstack.data import event
from projector.fold import fold
from tests.strategies import event_sets

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ART = {"bucket": "renders", "key": "t/look.png", "kind": "on_model_render", "role": "final"}
CREATED = event(seq=1)
SUCCEEDED = event(seq=2, kind="succeeded", artifacts=[ART], message="done")


def as_bytes(fields: dict[str, str]) -> dict[bytes, bytes]:
    return {name.encode(): value.encode() for name, value in fields.items()}


def earlier_layout(state: JobState) -> dict[str, str]:
    """The hash as written before artifacts were shared: the public event whole."""
    fields = encode_state(state)
    if state.public is not None:
        seq, event_id, event_json = state.public
        fields[F_PUBLIC] = f"{seq}{UNIT}{event_id}{UNIT}{event_json}"
    return fields


def sign(bucket: str, key: str) -> str:
    return f"https://signed/{bucket}/{key}"


def test_a_succeeded_public_event_stores_its_artifacts_once() -> None:
    fields = encode_state(fold([CREATED, SUCCEEDED]))
    assert ART["key"] in fields[F_HEAD]
    assert ART["key"] not in fields[F_PUBLIC]
    assert decode_state(fields) == fold([CREATED, SUCCEEDED])


def test_artifacts_are_kept_in_the_public_value_when_the_head_is_another_event() -> None:
    internal = event(seq=3, kind="stage", visibility="internal")
    fields = encode_state(fold([CREATED, SUCCEEDED, internal]))
    assert ART["key"] in fields[F_PUBLIC]
    failed = event(seq=3, kind="failed", artifacts=[ART])  # its manifest is empty
    assert ART["key"] in encode_state(fold([CREATED, failed]))[F_PUBLIC]


def test_an_empty_list_of_artifacts_is_never_shared() -> None:
    fields = encode_state(fold([CREATED, event(seq=2, kind="stage")]))
    assert f"{UNIT}[]{UNIT}" in fields[F_PUBLIC]


@PROPERTY
@given(event_sets(twins=True))
def test_every_reader_gives_the_public_event_whole(events: list[JobEvent]) -> None:
    state = fold(events)
    if state.public is None:
        return
    for fields in (encode_state(state), earlier_layout(state)):
        assert decode_state(fields) == state
        raw = as_bytes(fields)
        seq, event_json = stored_public(raw[b"p"], raw.get(b"h"))
        assert (seq, event_json.decode()) == (state.public.seq, state.public.event_json)


@PROPERTY
@given(event_sets(twins=True))
def test_a_stored_event_is_cut_around_its_artifacts(events: list[JobEvent]) -> None:
    public = fold(events).public
    if public is None:
        return
    lead, artifacts, tail = event_parts(public.event_json)
    assert lead + artifacts + tail == public.event_json
    kind, message, stored_artifacts, payload, created_at = json.loads(public.event_json)
    assert json.loads(lead + "0]") == [kind, message, 0]
    assert json.loads(artifacts) == stored_artifacts
    assert json.loads("[0" + tail) == [0, payload, created_at]


def test_a_job_of_the_earlier_layout_renders_to_the_same_bytes() -> None:
    state = fold([CREATED, SUCCEEDED])
    rendered = render_job("J", as_bytes(encode_state(state)), sign)
    assert render_job("J", as_bytes(earlier_layout(state)), sign) == rendered
    assert json.loads(rendered)["latest_event"]["artifacts"][0]["image_url"].endswith("look.png")


def test_shared_artifacts_resolve_only_against_the_head_of_the_same_event() -> None:
    """A merge never leaves a public value sharing with another event's head; were it to,
    the event reads without artifacts rather than with another event's."""
    shared = encode_state(fold([CREATED, SUCCEEDED]))
    other_head = encode_state(fold([CREATED, event(seq=3, kind="succeeded", artifacts=[ART])]))
    fields = {F_HEAD: other_head[F_HEAD], "o": shared["o"], F_PUBLIC: shared[F_PUBLIC]}
    public = decode_state(fields).public
    assert public is not None
    assert json.loads(public.event_json)[2] == []
    _, event_json = stored_public(fields[F_PUBLIC].encode(), fields[F_HEAD].encode())
    assert json.loads(event_json)[2] == []
    _, event_json = stored_public(fields[F_PUBLIC].encode(), None)
    assert json.loads(event_json)[2] == []
