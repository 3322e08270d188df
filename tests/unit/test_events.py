"""The event envelope v1 (CONTRACT §1), rule by rule, through the projector's own entry point.

Every case is parsed with `JobEvent.model_validate_json(raw_bytes)`, exactly as the projector
parses a Kafka record value. A valid envelope is built by `valid_envelope()` and each case
mutates one field of it, so a rejection can only come from the rule under test; the error's
`loc` is checked so that a dead-letter reason names the offending field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from contracts.events import (
    MAX_ARTIFACTS,
    MAX_MESSAGE_CHARS,
    MAX_METADATA_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_SEQ,
    JobEvent,
    StorageArtifact,
    rfc3339_utc,
)
from contracts.publisher import encode_event, event_headers

EVENT_ID = "01JDQ8Z3M4W8K2V7T6R5N4P3Q2"
JOB_ID = "01JDQ8Z3M4W8K2V7T6R5N4P3Q3"
CREATED_AT = "2026-11-29T12:00:00Z"
OCCURRED_AT = "2026-11-29T12:03:10.250Z"

REQUIRED_FIELDS = (
    "schema_version",
    "event_id",
    "tenant_id",
    "job_id",
    "job_type",
    "job_created_at",
    "seq",
    "kind",
    "visibility",
    "message",
    "occurred_at",
)
REQUIRED_ARTIFACT_FIELDS = ("bucket", "key", "kind", "role")
TIMESTAMP_FIELDS = ("job_created_at", "occurred_at")

# Two bytes in UTF-8, one code point; four bytes in UTF-8, one code point.
E_ACUTE = "\u00e9"
EMOJI = "\U0001f600"


@dataclass(frozen=True)
class Raw:
    """A JSON token written verbatim into the envelope (`NaN`, `5.0`, `1e0`...)."""

    text: str


def valid_envelope(**overrides: Any) -> dict[str, Any]:
    """A minimal valid envelope v1, with `overrides` applied on top."""
    envelope: dict[str, Any] = {
        "schema_version": 1,
        "event_id": EVENT_ID,
        "tenant_id": "acme",
        "job_id": JOB_ID,
        "job_type": "ON_MODEL_RENDER",
        "job_created_at": CREATED_AT,
        "seq": 1,
        "kind": "created",
        "visibility": "public",
        "message": "Job created",
        "occurred_at": OCCURRED_AT,
    }
    envelope.update(overrides)
    return envelope


def valid_artifact(**overrides: Any) -> dict[str, Any]:
    """A valid storage artifact, with `overrides` applied on top."""
    artifact: dict[str, Any] = {
        "bucket": "renders-eu",
        "key": "tenants/acme/jobs/01JDQ8Z3M4W8K2V7T6R5N4P3Q3/final.png",
        "kind": "on_model_render",
        "role": "final",
    }
    artifact.update(overrides)
    return artifact


def without(envelope: dict[str, Any], field: str) -> dict[str, Any]:
    return {name: value for name, value in envelope.items() if name != field}


def to_json(value: Any, *, ensure_ascii: bool = False) -> bytes:
    """UTF-8 JSON bytes of `value`; `Raw` tokens are written verbatim."""
    raws: list[str] = []

    def placeholder(obj: object) -> object:
        if isinstance(obj, Raw):
            raws.append(obj.text)
            return f"__raw_token_{len(raws) - 1}__"
        raise TypeError(f"cannot encode {obj!r}")

    text = json.dumps(value, ensure_ascii=ensure_ascii, default=placeholder)
    for index, raw in enumerate(raws):
        text = text.replace(f'"__raw_token_{index}__"', raw)
    return text.encode()


def parse(envelope: dict[str, Any]) -> JobEvent:
    return JobEvent.model_validate_json(to_json(envelope))


def rejection(raw: bytes) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        JobEvent.model_validate_json(raw)
    return caught.value


def assert_rejected_at(envelope: dict[str, Any], loc: tuple[str | int, ...]) -> None:
    error = rejection(to_json(envelope))
    locations = [entry["loc"] for entry in error.errors()]
    assert error.errors()[0]["loc"] == loc, f"expected the error at {loc}, got {locations}"


def compact_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def object_of_size(size: int, *, filler: str = "x") -> dict[str, str]:
    """A JSON object `{"p": "..."}` whose compact UTF-8 form is exactly `size` bytes."""
    overhead = compact_size({"p": ""})
    per_char = len(filler.encode())
    count, remainder = divmod(size - overhead, per_char)
    value = {"p": filler * count + "x" * remainder}
    assert compact_size(value) == size
    return value


def ulid_with(char: str, at: int) -> str:
    return EVENT_ID[:at] + char + EVENT_ID[at + 1 :]


# --------------------------------------------------------------------------------------------
# The baseline


def test_accepts_a_minimal_valid_envelope() -> None:
    event = parse(valid_envelope())

    assert event.schema_version == 1
    assert event.event_id == EVENT_ID
    assert event.tenant_id == "acme"
    assert event.job_id == JOB_ID
    assert event.job_type == "ON_MODEL_RENDER"
    assert event.job_created_at == datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    assert event.seq == 1
    assert event.kind == "created"
    assert event.visibility == "public"
    assert event.message == "Job created"
    assert event.occurred_at == datetime(2026, 11, 29, 12, 3, 10, 250000, tzinfo=UTC)


def test_accepts_a_full_envelope_with_artifacts_and_payload() -> None:
    envelope = valid_envelope(
        kind="succeeded",
        seq=7,
        artifacts=[valid_artifact(metadata={"width": 2048, "height": 3072})],
        payload={"cost": {"credits": 3}},
    )

    event = parse(envelope)

    assert event.artifacts == (
        [
            StorageArtifact(
                bucket="renders-eu",
                key="tenants/acme/jobs/01JDQ8Z3M4W8K2V7T6R5N4P3Q3/final.png",
                kind="on_model_render",
                role="final",
                metadata={"width": 2048, "height": 3072},
            )
        ]
    )
    assert event.payload == {"cost": {"credits": 3}}


# --------------------------------------------------------------------------------------------
# schema_version


def test_accepts_schema_version_one() -> None:
    assert parse(valid_envelope(schema_version=1)).schema_version == 1


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(2, id="two"),
        pytest.param(0, id="zero"),
        pytest.param("1", id="string"),
        pytest.param(Raw("1.0"), id="float-1.0"),
        pytest.param(True, id="true"),
        pytest.param(None, id="null"),
    ],
)
def test_rejects_schema_version_other_than_the_integer_one(value: Any) -> None:
    assert_rejected_at(valid_envelope(schema_version=value), ("schema_version",))


# --------------------------------------------------------------------------------------------
# event_id and job_id: ULIDs


@pytest.mark.parametrize("field", ["event_id", "job_id"])
@pytest.mark.parametrize(
    ("value", "stored"),
    [
        pytest.param(EVENT_ID, EVENT_ID, id="upper-case"),
        pytest.param(EVENT_ID.lower(), EVENT_ID, id="lower-case"),
        pytest.param("01jdq8Z3m4W8k2V7t6R5n4P3q2", EVENT_ID, id="mixed-case"),
        pytest.param("0" * 26, "0" * 26, id="smallest"),
        pytest.param("7" + "Z" * 25, "7" + "Z" * 25, id="largest"),
        pytest.param("7" + "z" * 25, "7" + "Z" * 25, id="largest-lower-case"),
    ],
)
def test_accepts_ulid_in_any_case_and_stores_it_upper_case(
    field: str, value: str, stored: str
) -> None:
    event = parse(valid_envelope(**{field: value}))

    assert getattr(event, field) == stored


@pytest.mark.parametrize("field", ["event_id", "job_id"])
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(EVENT_ID[:-1], id="25-chars"),
        pytest.param(EVENT_ID + "0", id="27-chars"),
        pytest.param("", id="empty"),
        pytest.param(ulid_with("I", 5), id="contains-I"),
        pytest.param(ulid_with("L", 5), id="contains-L"),
        pytest.param(ulid_with("O", 5), id="contains-O"),
        pytest.param(ulid_with("U", 5), id="contains-U"),
        pytest.param(ulid_with("i", 5), id="contains-lower-i"),
        pytest.param(ulid_with("l", 5), id="contains-lower-l"),
        pytest.param(ulid_with("o", 5), id="contains-lower-o"),
        pytest.param(ulid_with("u", 5), id="contains-lower-u"),
        pytest.param(ulid_with("8", 0), id="first-char-8"),
        pytest.param(ulid_with("9", 0), id="first-char-9"),
        pytest.param(ulid_with("Z", 0), id="first-char-Z"),
        pytest.param(ulid_with("-", 5), id="contains-hyphen"),
        pytest.param(" " + EVENT_ID[1:], id="leading-space"),
        pytest.param(EVENT_ID[:-1] + "\n", id="trailing-newline"),
        pytest.param("01JDQ8Z3M4-W8K2-V7T6-R5N4P3Q2", id="uuid-like"),
        pytest.param(1234, id="number"),
        pytest.param(None, id="null"),
    ],
)
def test_rejects_invalid_ulid(field: str, value: Any) -> None:
    assert_rejected_at(valid_envelope(**{field: value}), (field,))


# --------------------------------------------------------------------------------------------
# tenant_id


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("a", id="one-letter"),
        pytest.param("7", id="one-digit"),
        pytest.param("acme", id="word"),
        pytest.param("acme_corp-eu1", id="underscore-hyphen-digit"),
        pytest.param("a-", id="trailing-hyphen"),
        pytest.param("a_", id="trailing-underscore"),
        pytest.param("a" * 63, id="63-chars"),
    ],
)
def test_accepts_valid_tenant_id(value: str) -> None:
    assert parse(valid_envelope(tenant_id=value)).tenant_id == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("a" * 64, id="64-chars"),
        pytest.param("", id="empty"),
        pytest.param("Acme", id="upper-case"),
        pytest.param("-acme", id="leading-hyphen"),
        pytest.param("_acme", id="leading-underscore"),
        pytest.param("acme corp", id="space"),
        pytest.param("acme.corp", id="dot"),
        pytest.param("acme\n", id="trailing-newline"),
        pytest.param("acm" + E_ACUTE, id="non-ascii-letter"),
        pytest.param(42, id="number"),
        pytest.param(None, id="null"),
    ],
)
def test_rejects_invalid_tenant_id(value: Any) -> None:
    assert_rejected_at(valid_envelope(tenant_id=value), ("tenant_id",))


# --------------------------------------------------------------------------------------------
# job_type


@pytest.mark.parametrize(
    "value",
    ["ON_MODEL_RENDER", "X1", "A", "A_1", "A1_B2_C3", "CATALOG_IMAGE"],
)
def test_accepts_upper_snake_job_type(value: str) -> None:
    assert parse(valid_envelope(job_type=value)).job_type == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("on_model", id="lower-case"),
        pytest.param("On_Model", id="mixed-case"),
        pytest.param("A__B", id="double-underscore"),
        pytest.param("_A", id="leading-underscore"),
        pytest.param("A_", id="trailing-underscore"),
        pytest.param("1A", id="leading-digit"),
        pytest.param("A-B", id="hyphen"),
        pytest.param("A B", id="space"),
        pytest.param("", id="empty"),
        pytest.param(None, id="null"),
    ],
)
def test_rejects_job_type_that_is_not_upper_snake(value: Any) -> None:
    assert_rejected_at(valid_envelope(job_type=value), ("job_type",))


# --------------------------------------------------------------------------------------------
# job_created_at and occurred_at: RFC 3339 with an offset


@pytest.mark.parametrize("field", TIMESTAMP_FIELDS)
@pytest.mark.parametrize(
    ("value", "instant"),
    [
        pytest.param("2026-11-29T12:00:00Z", datetime(2026, 11, 29, 12, tzinfo=UTC), id="Z"),
        pytest.param(
            "2026-11-29T14:00:00+02:00", datetime(2026, 11, 29, 12, tzinfo=UTC), id="plus-02:00"
        ),
        pytest.param(
            "2026-11-29T06:30:00-05:30", datetime(2026, 11, 29, 12, tzinfo=UTC), id="minus-05:30"
        ),
        pytest.param(
            "2026-11-29T12:00:00+00:00", datetime(2026, 11, 29, 12, tzinfo=UTC), id="plus-00:00"
        ),
        pytest.param(
            "2026-11-29T12:00:00-00:00", datetime(2026, 11, 29, 12, tzinfo=UTC), id="minus-00:00"
        ),
        pytest.param(
            "2026-11-29T12:00:00.5Z",
            datetime(2026, 11, 29, 12, 0, 0, 500000, tzinfo=UTC),
            id="one-digit-fraction",
        ),
        pytest.param(
            "2026-11-29T12:00:00.123456Z",
            datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC),
            id="microsecond-fraction",
        ),
        pytest.param(
            "2026-11-29T14:00:00.250+02:00",
            datetime(2026, 11, 29, 12, 0, 0, 250000, tzinfo=UTC),
            id="fraction-and-offset",
        ),
        pytest.param(
            "2026-11-29t12:00:00z", datetime(2026, 11, 29, 12, tzinfo=UTC), id="lower-case-t-z"
        ),
    ],
)
def test_accepts_rfc3339_timestamp_with_offset(field: str, value: str, instant: datetime) -> None:
    parsed = getattr(parse(valid_envelope(**{field: value})), field)

    assert parsed == instant
    assert parsed.utcoffset() is not None


@pytest.mark.parametrize("field", TIMESTAMP_FIELDS)
def test_keeps_the_instant_and_offset_of_a_timestamp(field: str) -> None:
    parsed = getattr(parse(valid_envelope(**{field: "2026-11-29T14:00:00+02:00"})), field)

    assert parsed.utcoffset() == timedelta(hours=2)
    assert parsed == datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("field", TIMESTAMP_FIELDS)
@pytest.mark.parametrize("value", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_rejects_a_timestamp_outside_the_utc_range(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse(valid_envelope(**{field: value}))
    assert caught.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize("field", TIMESTAMP_FIELDS)
@pytest.mark.parametrize(
    "value",
    [
        pytest.param("2026-11-29T12:00:00", id="no-offset"),
        pytest.param("2026-11-29T12:00:00.5", id="fraction-no-offset"),
        pytest.param("2026-11-29", id="date-only"),
        pytest.param("12:00:00Z", id="time-only"),
        pytest.param(Raw("1795953600"), id="unix-seconds-number"),
        pytest.param(Raw("1795953600.5"), id="unix-seconds-float"),
        pytest.param("1795953600", id="unix-seconds-in-a-string"),
        pytest.param("2026-11-29T12:00Z", id="no-seconds"),
        pytest.param("2026-11-29T12:00:00+0200", id="offset-without-colon"),
        pytest.param("2026-11-29T12:00:00+02", id="offset-hours-only"),
        pytest.param("2026-11-29T12:00:00,5Z", id="comma-fraction"),
        pytest.param("2026-11-29T12:00:00.Z", id="empty-fraction"),
        pytest.param("20261129T120000Z", id="basic-format"),
        pytest.param("2026-02-30T12:00:00Z", id="no-such-day"),
        pytest.param("2026-11-29T24:00:01Z", id="hour-out-of-range"),
        pytest.param("2026-11-29T12:00:00+24:00", id="offset-out-of-range"),
        pytest.param("Sun, 29 Nov 2026 12:00:00 GMT", id="http-date"),
        pytest.param("", id="empty"),
        pytest.param(None, id="null"),
    ],
)
def test_rejects_timestamp_that_is_not_rfc3339_with_offset(field: str, value: Any) -> None:
    assert_rejected_at(valid_envelope(**{field: value}), (field,))


# --------------------------------------------------------------------------------------------
# seq


@pytest.mark.parametrize("value", [1, 2, 7, MAX_SEQ])
def test_accepts_seq_from_one_to_two_to_the_53_minus_one(value: int) -> None:
    assert parse(valid_envelope(seq=value)).seq == value


def test_max_seq_is_two_to_the_53_minus_one() -> None:
    assert MAX_SEQ == 2**53 - 1


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(0, id="zero"),
        pytest.param(-1, id="negative"),
        pytest.param(2**53, id="two-to-the-53"),
        pytest.param(2**64, id="two-to-the-64"),
    ],
)
def test_rejects_seq_out_of_range(value: int) -> None:
    assert_rejected_at(valid_envelope(seq=value), ("seq",))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(Raw("5.0"), id="5.0"),
        pytest.param(Raw("5.5"), id="5.5"),
        pytest.param(Raw("5e0"), id="5e0"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param("5", id="string"),
        pytest.param(None, id="null"),
        pytest.param([5], id="array"),
    ],
)
def test_rejects_seq_that_is_not_a_json_integer(value: Any) -> None:
    assert_rejected_at(valid_envelope(seq=value), ("seq",))


# --------------------------------------------------------------------------------------------
# kind and visibility


@pytest.mark.parametrize("value", ["created", "queued", "stage", "succeeded", "failed"])
def test_accepts_each_event_kind(value: str) -> None:
    assert parse(valid_envelope(kind=value)).kind == value


@pytest.mark.parametrize(
    "value", ["Created", "CREATED", "running", "cancelled", "success", "", " queued", 1, None]
)
def test_rejects_unknown_event_kind(value: Any) -> None:
    assert_rejected_at(valid_envelope(kind=value), ("kind",))


@pytest.mark.parametrize("value", ["public", "internal"])
def test_accepts_each_visibility(value: str) -> None:
    assert parse(valid_envelope(visibility=value)).visibility == value


@pytest.mark.parametrize("value", ["Public", "private", "hidden", "", True, None])
def test_rejects_unknown_visibility(value: Any) -> None:
    assert_rejected_at(valid_envelope(visibility=value), ("visibility",))


# --------------------------------------------------------------------------------------------
# message: at most 2000 code points


def test_max_message_is_2000_code_points() -> None:
    assert MAX_MESSAGE_CHARS == 2000


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("a" * 2000, id="2000-ascii"),
        pytest.param(EMOJI * 2000, id="2000-emoji-8000-bytes"),
        pytest.param(E_ACUTE * 2000, id="2000-two-byte-chars"),
        pytest.param("Render finished \u2014 \u2713 \u6e32\u67d3\u5b8c\u6210", id="unicode"),
    ],
)
def test_accepts_message_of_at_most_2000_code_points(value: str) -> None:
    assert parse(valid_envelope(message=value)).message == value


def test_counts_an_escaped_surrogate_pair_in_message_as_one_code_point() -> None:
    escaped = to_json(valid_envelope(message=EMOJI * 2000), ensure_ascii=True)
    assert b"\\ud83d\\ude00" in escaped

    assert JobEvent.model_validate_json(escaped).message == EMOJI * 2000


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("a" * 2001, id="2001-ascii"),
        pytest.param(EMOJI * 2001, id="2001-emoji"),
        pytest.param(E_ACUTE * 2001, id="2001-two-byte-chars"),
        pytest.param(42, id="number"),
        pytest.param(None, id="null"),
    ],
)
def test_rejects_message_longer_than_2000_code_points_or_not_a_string(value: Any) -> None:
    assert_rejected_at(valid_envelope(message=value), ("message",))


def test_rejects_message_with_an_unpaired_surrogate_escape() -> None:
    raw = to_json(valid_envelope(message=Raw('"broken \\ud800 text"')))

    error = rejection(raw)

    assert error.errors()[0]["type"] == "json_invalid"


# --------------------------------------------------------------------------------------------
# artifacts: the list


def test_defaults_artifacts_to_empty_list_when_absent() -> None:
    assert parse(without(valid_envelope(), "artifacts")).artifacts == []


def test_accepts_empty_artifacts_list() -> None:
    assert parse(valid_envelope(artifacts=[])).artifacts == []


def test_accepts_100_artifacts_in_producer_order() -> None:
    assert MAX_ARTIFACTS == 100
    artifacts = [valid_artifact(key=f"part-{index:03d}") for index in range(100)]

    event = parse(valid_envelope(artifacts=artifacts))

    assert [artifact.key for artifact in event.artifacts] == [f"part-{i:03d}" for i in range(100)]


def test_rejects_101_artifacts() -> None:
    artifacts = [valid_artifact(key=f"part-{index:03d}") for index in range(101)]

    assert_rejected_at(valid_envelope(artifacts=artifacts), ("artifacts",))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({}, id="object"),
        pytest.param(valid_artifact(), id="single-artifact-not-in-list"),
        pytest.param("renders-eu/final.png", id="string"),
        pytest.param(None, id="null"),
    ],
)
def test_rejects_artifacts_that_is_not_an_array(value: Any) -> None:
    assert_rejected_at(valid_envelope(artifacts=value), ("artifacts",))


def test_rejects_artifact_that_is_not_an_object() -> None:
    assert_rejected_at(valid_envelope(artifacts=["s3://renders-eu/x.png"]), ("artifacts", 0))


def test_names_the_index_of_the_broken_artifact() -> None:
    artifacts = [valid_artifact(), valid_artifact(), valid_artifact(bucket="ab")]

    assert_rejected_at(valid_envelope(artifacts=artifacts), ("artifacts", 2, "bucket"))


@pytest.mark.parametrize("field", REQUIRED_ARTIFACT_FIELDS)
def test_rejects_artifact_missing_a_required_field(field: str) -> None:
    envelope = valid_envelope(artifacts=[without(valid_artifact(), field)])

    error = rejection(to_json(envelope))

    assert error.errors()[0]["loc"] == ("artifacts", 0, field)
    assert error.errors()[0]["type"] == "missing"


# --------------------------------------------------------------------------------------------
# artifact bucket: S3 bucket name rules


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("abc", id="3-chars"),
        pytest.param("a" * 63, id="63-chars"),
        pytest.param("renders-eu", id="hyphen"),
        pytest.param("renders.eu.example", id="dots"),
        pytest.param("1renders9", id="digits-at-both-ends"),
        pytest.param("123", id="all-digits"),
    ],
)
def test_accepts_valid_bucket_name(value: str) -> None:
    event = parse(valid_envelope(artifacts=[valid_artifact(bucket=value)]))

    assert event.artifacts[0].bucket == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("ab", id="2-chars"),
        pytest.param("a" * 64, id="64-chars"),
        pytest.param("", id="empty"),
        pytest.param("Renders", id="upper-case"),
        pytest.param("renders_eu", id="underscore"),
        pytest.param("renders eu", id="space"),
        pytest.param("-renders", id="leading-hyphen"),
        pytest.param("renders-", id="trailing-hyphen"),
        pytest.param(".renders", id="leading-dot"),
        pytest.param("renders.", id="trailing-dot"),
        pytest.param("renders/eu", id="slash"),
        pytest.param(42, id="number"),
    ],
)
def test_rejects_invalid_bucket_name(value: Any) -> None:
    envelope = valid_envelope(artifacts=[valid_artifact(bucket=value)])

    assert_rejected_at(envelope, ("artifacts", 0, "bucket"))


# --------------------------------------------------------------------------------------------
# artifact key: 1..1024 bytes of UTF-8


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("k", id="1-byte"),
        pytest.param("a" * 1024, id="1024-ascii"),
        pytest.param(E_ACUTE * 512, id="512-two-byte-chars-1024-bytes"),
        pytest.param(EMOJI * 256, id="256-emoji-1024-bytes"),
        pytest.param("a/b c/" + E_ACUTE + "/" + EMOJI + ".png", id="path-with-unicode"),
    ],
)
def test_accepts_key_of_1_to_1024_utf8_bytes(value: str) -> None:
    event = parse(valid_envelope(artifacts=[valid_artifact(key=value)]))

    assert event.artifacts[0].key == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("a" * 1025, id="1025-ascii"),
        pytest.param(E_ACUTE * 513, id="513-two-byte-chars-1026-bytes"),
        pytest.param(EMOJI * 257, id="257-emoji-1028-bytes"),
        pytest.param("a" * 1023 + E_ACUTE, id="1023-ascii-plus-two-byte-char"),
        pytest.param(42, id="number"),
        pytest.param(None, id="null"),
    ],
)
def test_rejects_key_outside_1_to_1024_utf8_bytes(value: Any) -> None:
    envelope = valid_envelope(artifacts=[valid_artifact(key=value)])

    assert_rejected_at(envelope, ("artifacts", 0, "key"))


# --------------------------------------------------------------------------------------------
# artifact kind and role


@pytest.mark.parametrize("value", ["on_model_render", "catalog_image", "x", "image2", "a_1"])
def test_accepts_snake_case_artifact_kind(value: str) -> None:
    event = parse(valid_envelope(artifacts=[valid_artifact(kind=value)]))

    assert event.artifacts[0].kind == value


@pytest.mark.parametrize(
    "value",
    ["Bad-Kind", "bad-kind", "BadKind", "ON_MODEL_RENDER", "_x", "x_", "a__b", "1x", "", None],
)
def test_rejects_artifact_kind_that_is_not_snake_case(value: Any) -> None:
    envelope = valid_envelope(artifacts=[valid_artifact(kind=value)])

    assert_rejected_at(envelope, ("artifacts", 0, "kind"))


@pytest.mark.parametrize("value", ["intermediate", "final"])
def test_accepts_each_artifact_role(value: str) -> None:
    event = parse(valid_envelope(artifacts=[valid_artifact(role=value)]))

    assert event.artifacts[0].role == value


@pytest.mark.parametrize("value", ["Final", "draft", "preview", "", None])
def test_rejects_unknown_artifact_role(value: Any) -> None:
    envelope = valid_envelope(artifacts=[valid_artifact(role=value)])

    assert_rejected_at(envelope, ("artifacts", 0, "role"))


# --------------------------------------------------------------------------------------------
# artifact metadata: object, default {}, at most 4 KiB as compact UTF-8 JSON


def test_defaults_artifact_metadata_to_empty_object_when_absent() -> None:
    event = parse(valid_envelope(artifacts=[valid_artifact()]))

    assert event.artifacts[0].metadata == {}


def test_accepts_metadata_of_exactly_4096_bytes_compact() -> None:
    assert MAX_METADATA_BYTES == 4096
    metadata = object_of_size(4096)

    event = parse(valid_envelope(artifacts=[valid_artifact(metadata=metadata)]))

    assert event.artifacts[0].metadata == metadata


def test_rejects_metadata_of_4097_bytes_compact() -> None:
    envelope = valid_envelope(artifacts=[valid_artifact(metadata=object_of_size(4097))])

    assert_rejected_at(envelope, ("artifacts", 0, "metadata"))


def test_measures_metadata_in_utf8_bytes_not_characters() -> None:
    metadata = object_of_size(4097, filler=E_ACUTE)
    assert len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)) < 4096

    envelope = valid_envelope(artifacts=[valid_artifact(metadata=metadata)])

    assert_rejected_at(envelope, ("artifacts", 0, "metadata"))


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_rejects_non_finite_number_in_metadata(token: str) -> None:
    metadata = Raw('{"width": ' + token + "}")
    envelope = valid_envelope(artifacts=[valid_artifact(metadata=metadata)])

    assert_rejected_at(envelope, ("artifacts", 0, "metadata"))


@pytest.mark.parametrize("value", [[], "x", 1, None])
def test_rejects_metadata_that_is_not_an_object(value: Any) -> None:
    envelope = valid_envelope(artifacts=[valid_artifact(metadata=value)])

    assert_rejected_at(envelope, ("artifacts", 0, "metadata"))


# --------------------------------------------------------------------------------------------
# payload: object, default {}, at most 16 KiB as compact UTF-8 JSON


def test_defaults_payload_to_empty_object_when_absent() -> None:
    assert parse(without(valid_envelope(), "payload")).payload == {}


def test_keeps_nested_payload_values() -> None:
    payload = {
        "cost": {"credits": 3, "currency": None},
        "progress": 0.5,
        "stages": ["a", "b"],
        "retry": False,
        "note": "r\u00e9sum\u00e9 " + EMOJI,
    }

    assert parse(valid_envelope(payload=payload)).payload == payload


def test_accepts_payload_of_exactly_16384_bytes_compact() -> None:
    assert MAX_PAYLOAD_BYTES == 16384
    payload = object_of_size(16384)

    assert parse(valid_envelope(payload=payload)).payload == payload


def test_rejects_payload_of_16385_bytes_compact() -> None:
    assert_rejected_at(valid_envelope(payload=object_of_size(16385)), ("payload",))


def test_payload_size_error_states_the_size_and_the_limit() -> None:
    error = rejection(to_json(valid_envelope(payload=object_of_size(16385))))

    message = error.errors()[0]["msg"]
    assert "16385" in message
    assert "16384" in message


def test_measures_payload_in_utf8_bytes_not_characters() -> None:
    payload = object_of_size(16386, filler=E_ACUTE)

    assert_rejected_at(valid_envelope(payload=payload), ("payload",))


def test_measures_payload_on_compact_json_not_on_the_wire_whitespace() -> None:
    payload = object_of_size(16384)
    raw = to_json(valid_envelope(payload=payload))
    assert b'{"p": "' in raw  # the wire form has whitespace: 16385 bytes for this object

    assert JobEvent.model_validate_json(raw).payload == payload


def test_measures_payload_on_utf8_not_on_the_wire_escapes() -> None:
    payload = object_of_size(16384, filler=E_ACUTE)
    raw = to_json(valid_envelope(payload=payload), ensure_ascii=True)
    assert len(raw) > 3 * 16384  # each \u00e9 is six bytes on the wire, two in UTF-8

    assert JobEvent.model_validate_json(raw).payload == payload


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("NaN", id="NaN"),
        pytest.param("Infinity", id="Infinity"),
        pytest.param("-Infinity", id="minus-Infinity"),
        pytest.param('{"inner": [1, NaN]}', id="nested-NaN"),
    ],
)
def test_rejects_non_finite_number_in_payload(token: str) -> None:
    envelope = valid_envelope(payload=Raw('{"progress": ' + token + "}"))

    assert_rejected_at(envelope, ("payload",))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param([], id="array"),
        pytest.param([{"cost": 3}], id="array-of-objects"),
        pytest.param("cost=3", id="string"),
        pytest.param(3, id="number"),
        pytest.param(True, id="true"),
        pytest.param(None, id="null"),
    ],
)
def test_rejects_payload_that_is_not_an_object(value: Any) -> None:
    assert_rejected_at(valid_envelope(payload=value), ("payload",))


# --------------------------------------------------------------------------------------------
# Tolerant reader: unknown fields are ignored


def test_ignores_unknown_top_level_fields() -> None:
    envelope = valid_envelope(
        schema_minor=3, trace={"id": "abc"}, producer="render-worker", seq_hint=None
    )

    event = parse(envelope)

    assert event == parse(valid_envelope())
    assert "producer" not in event.model_dump()


def test_ignores_unknown_fields_inside_an_artifact() -> None:
    artifact = valid_artifact(etag='"abc"', size_bytes=123, storage_class="GLACIER")

    event = parse(valid_envelope(artifacts=[artifact]))

    assert event.artifacts[0] == parse(valid_envelope(artifacts=[valid_artifact()])).artifacts[0]
    assert "etag" not in event.artifacts[0].model_dump()


# --------------------------------------------------------------------------------------------
# Not an envelope at all


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty-bytes"),
        pytest.param(b"   ", id="whitespace-only"),
        pytest.param(b"not json", id="text"),
        pytest.param(b"{", id="unterminated-object"),
        pytest.param(to_json(valid_envelope())[:-1], id="truncated-envelope"),
        pytest.param(to_json(valid_envelope()) + b" x", id="trailing-garbage"),
        pytest.param(to_json(valid_envelope()) * 2, id="two-envelopes"),
        pytest.param(b"{'schema_version': 1}", id="single-quotes"),
        pytest.param(b"\xff\xfe\x00{", id="invalid-utf8"),
        pytest.param(
            to_json(valid_envelope(message="caf" + E_ACUTE)).replace(b"\xc3\xa9", b"\xe9"),
            id="latin1-byte-in-a-string",
        ),
        pytest.param(to_json(valid_envelope()).decode().encode("utf-16"), id="utf-16"),
    ],
)
def test_rejects_bytes_that_are_not_a_json_text(raw: bytes) -> None:
    error = rejection(raw)

    assert error.errors()[0]["type"] == "json_invalid"
    assert error.errors()[0]["loc"] == ()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[]", id="empty-array"),
        pytest.param(b"[" + to_json(valid_envelope()) + b"]", id="envelope-in-array"),
        pytest.param(b'"an envelope"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"true", id="true"),
        pytest.param(b"null", id="null"),
    ],
)
def test_rejects_json_that_is_not_an_object(raw: bytes) -> None:
    error = rejection(raw)

    assert error.errors()[0]["loc"] == ()
    assert error.errors()[0]["type"] == "model_type"


def test_rejects_an_empty_object_naming_every_required_field() -> None:
    error = rejection(b"{}")

    missing = {entry["loc"][0] for entry in error.errors() if entry["type"] == "missing"}
    assert missing == set(REQUIRED_FIELDS)


# --------------------------------------------------------------------------------------------
# Required fields


def test_required_fields_are_exactly_those_of_the_contract() -> None:
    required = {name for name, field in JobEvent.model_fields.items() if field.is_required()}

    assert required == set(REQUIRED_FIELDS)


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_rejects_envelope_missing_a_required_field(field: str) -> None:
    error = rejection(to_json(without(valid_envelope(), field)))

    assert len(error.errors()) == 1
    assert error.errors()[0]["loc"] == (field,)
    assert error.errors()[0]["type"] == "missing"


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_rejects_required_field_given_as_null(field: str) -> None:
    assert_rejected_at(valid_envelope(**{field: None}), (field,))


# --------------------------------------------------------------------------------------------
# Error messages name the field


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"seq": 0}, "seq", id="seq"),
        pytest.param({"tenant_id": "Acme"}, "tenant_id", id="tenant_id"),
        pytest.param({"kind": "running"}, "kind", id="kind"),
        pytest.param({"payload": []}, "payload", id="payload"),
    ],
)
def test_error_text_names_the_offending_field(overrides: dict[str, Any], field: str) -> None:
    error = rejection(to_json(valid_envelope(**overrides)))

    assert error.error_count() == 1
    assert field in str(error)


def test_reports_every_broken_field_at_once() -> None:
    envelope = valid_envelope(seq=0, kind="running", tenant_id="Acme")

    error = rejection(to_json(envelope))

    assert {entry["loc"] for entry in error.errors()} == {("seq",), ("kind",), ("tenant_id",)}


def test_parsed_event_is_immutable() -> None:
    event = parse(valid_envelope())

    with pytest.raises(ValidationError):
        event.seq = 2  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# rfc3339_utc


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        pytest.param(datetime(2026, 11, 29, 12, 0, tzinfo=UTC), "2026-11-29T12:00:00Z", id="UTC"),
        pytest.param(
            datetime(2026, 11, 29, 12, 0, 0, 500000, tzinfo=UTC),
            "2026-11-29T12:00:00.5Z",
            id="half-second-trimmed",
        ),
        pytest.param(
            datetime(2026, 11, 29, 12, 0, 0, 120000, tzinfo=UTC),
            "2026-11-29T12:00:00.12Z",
            id="trailing-zeros-trimmed",
        ),
        pytest.param(
            datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC),
            "2026-11-29T12:00:00.123456Z",
            id="microseconds",
        ),
        pytest.param(
            datetime(2026, 11, 29, 12, 0, 0, 1, tzinfo=UTC),
            "2026-11-29T12:00:00.000001Z",
            id="one-microsecond-keeps-leading-zeros",
        ),
        pytest.param(
            datetime(2026, 11, 29, 14, 0, tzinfo=timezone(timedelta(hours=2))),
            "2026-11-29T12:00:00Z",
            id="plus-02:00-converted",
        ),
        pytest.param(
            datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))),
            "2025-12-31T22:30:00Z",
            id="offset-crossing-the-year",
        ),
        pytest.param(
            datetime(2026, 11, 29, 20, 0, 0, 250000, tzinfo=timezone(timedelta(hours=-5))),
            "2026-11-30T01:00:00.25Z",
            id="negative-offset-crossing-the-day",
        ),
        pytest.param(
            datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),
            "0999-01-02T03:04:05Z",
            id="four-digit-year-below-1000",
        ),
    ],
)
def test_formats_rfc3339_utc(moment: datetime, text: str) -> None:
    assert rfc3339_utc(moment) == text


@pytest.mark.parametrize(
    ("wire", "text"),
    [
        pytest.param("2026-11-29T12:00:00Z", "2026-11-29T12:00:00Z", id="Z"),
        pytest.param("2026-11-29T14:00:00+02:00", "2026-11-29T12:00:00Z", id="offset"),
        pytest.param("2026-11-29T12:00:00.100Z", "2026-11-29T12:00:00.1Z", id="fraction"),
        pytest.param("2026-11-29T12:00:00.000Z", "2026-11-29T12:00:00Z", id="zero-fraction"),
    ],
)
def test_formats_a_parsed_timestamp_as_rfc3339_utc(wire: str, text: str) -> None:
    event = parse(valid_envelope(occurred_at=wire))

    assert rfc3339_utc(event.occurred_at) == text


# --------------------------------------------------------------------------------------------
# encode_event and event_headers


ROUND_TRIP_ENVELOPES = [
    pytest.param(valid_envelope(), id="minimal"),
    pytest.param(
        valid_envelope(
            event_id=EVENT_ID.lower(),
            job_id=JOB_ID.lower(),
            kind="succeeded",
            seq=MAX_SEQ,
            visibility="internal",
            message="Render finished " + EMOJI + " " + E_ACUTE * 1980,
            job_created_at="2026-11-29T14:00:00+02:00",
            occurred_at="2026-11-29T12:03:10.123456Z",
            artifacts=[
                valid_artifact(metadata={"width": 2048, "height": 3072}),
                valid_artifact(role="intermediate", key=E_ACUTE * 512, bucket="a.b-c"),
            ],
            payload={"cost": {"credits": 3}, "progress": 0.25, "tags": ["x", None, True]},
        ),
        id="full",
    ),
    pytest.param(
        valid_envelope(payload=object_of_size(16384), message=EMOJI * 2000), id="at-the-limits"
    ),
]


@pytest.mark.parametrize("envelope", ROUND_TRIP_ENVELOPES)
def test_encode_event_round_trips_through_validate_json(envelope: dict[str, Any]) -> None:
    event = parse(envelope)

    raw = encode_event(event)

    assert isinstance(raw, bytes)
    assert JobEvent.model_validate_json(raw) == event


def test_encode_event_writes_a_utf8_json_object() -> None:
    event = parse(valid_envelope(message="caf" + E_ACUTE))

    decoded = json.loads(encode_event(event).decode("utf-8"))

    assert decoded["message"] == "caf" + E_ACUTE
    assert decoded["schema_version"] == 1
    assert decoded["seq"] == 1
    assert decoded["job_id"] == JOB_ID


def test_encode_event_refuses_an_event_that_breaks_the_contract() -> None:
    broken = JobEvent.model_construct(**{**parse(valid_envelope()).model_dump(), "seq": 0})

    with pytest.raises(ValidationError) as caught:
        encode_event(broken)

    assert caught.value.errors()[0]["loc"] == ("seq",)


@pytest.mark.parametrize("kind", ["created", "queued", "stage", "succeeded", "failed"])
def test_event_headers_carry_kind_and_tenant(kind: str) -> None:
    event = parse(valid_envelope(kind=kind, tenant_id="acme_eu-1"))

    assert event_headers(event) == [("kind", kind.encode()), ("tenant_id", b"acme_eu-1")]


def test_event_headers_add_traceparent_when_given() -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    event = parse(valid_envelope())

    headers = event_headers(event, traceparent)

    assert headers == [
        ("kind", b"created"),
        ("tenant_id", b"acme"),
        ("traceparent", traceparent.encode()),
    ]


@pytest.mark.parametrize("traceparent", [None, ""])
def test_event_headers_omit_traceparent_when_absent(traceparent: str | None) -> None:
    headers = event_headers(parse(valid_envelope()), traceparent)

    assert [name for name, _ in headers] == ["kind", "tenant_id"]


@pytest.mark.parametrize("field", TIMESTAMP_FIELDS)
@pytest.mark.parametrize("year", ["0002", "1999", "9989", "9995", "9998"])
def test_accepts_years_from_0002_to_9998(field: str, year: str) -> None:
    assert getattr(parse(valid_envelope(**{field: f"{year}-06-01T12:00:00Z"})), field).year == int(
        year
    )
