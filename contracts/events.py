"""The job lifecycle event envelope v1 (CONTRACT §1), validated straight from the raw bytes.

Every rule of the contract is enforced here and nowhere else. The model is strict (no `"5"` for
5, no `5.0` or `true` for an integer) and tolerant of unknown fields. Parse with
`JobEvent.model_validate_json(raw)`: one pass over the bytes, no intermediate dict.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticSerializationError, core_schema, to_json

MAX_SEQ = 2**53 - 1
MAX_PAYLOAD_BYTES = 16 * 1024
MAX_METADATA_BYTES = 4 * 1024
MAX_ARTIFACTS = 100
MAX_MESSAGE_CHARS = 2000

# Crockford base32 without I L O U, first character 0-7 (a ULID fits in 128 bits).
ULID_PATTERN = r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$"
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
JOB_TYPE_PATTERN = r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$"
SNAKE_CASE_PATTERN = r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$"
# S3 bucket naming: 3-63 characters of lower-case letters, digits, '.' and '-', starting and
# ending with a letter or a digit.
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"

EventKind = Literal["created", "queued", "stage", "succeeded", "failed"]
Visibility = Literal["public", "internal"]
ArtifactRole = Literal["intermediate", "final"]

Ulid = Annotated[str, StringConstraints(pattern=ULID_PATTERN, to_upper=True)]

# RFC 3339 date-time with an offset. Pydantic's own datetime parsing also takes unix seconds
# in a string, a missing seconds field, `+0200` and `,5`; the contract does not. Years are
# 0002-9998 so that every accepted instant also exists in UTC. Checked in pydantic-core (a
# pattern, then the datetime), without a Python call: this runs for every event.
RFC3339_PATTERN = (
    r"^(?:000[2-9]|00[1-9]\d|0[1-9]\d\d|[1-8]\d{3}|9[0-8]\d\d|99[0-8]\d|999[0-8])"
    r"-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


class _Rfc3339:
    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        text = core_schema.custom_error_schema(
            core_schema.str_schema(pattern=RFC3339_PATTERN),
            custom_error_type="rfc3339",
            custom_error_message=(
                "must be an RFC 3339 date-time with an offset, e.g. 2026-11-29T12:00:00Z"
            ),
        )
        from_text = core_schema.chain_schema(
            [text, core_schema.datetime_schema(tz_constraint="aware", strict=False)]
        )
        return core_schema.json_or_python_schema(
            json_schema=from_text,
            # In Python, an aware datetime as well (the publisher's callers have those).
            python_schema=core_schema.union_schema(
                [core_schema.datetime_schema(tz_constraint="aware"), from_text],
                mode="left_to_right",
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}


Rfc3339 = Annotated[datetime, _Rfc3339]


class _SchemaVersion1:
    """`1`, a JSON integer; checked in pydantic-core, with a message that says why."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.custom_error_schema(
            core_schema.int_schema(strict=True, ge=1, le=1),
            custom_error_type="schema_version",
            custom_error_message="schema_version must be the integer 1 (this is envelope v1)",
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "integer", "const": 1, "title": "Schema Version"}


class _KeyBytes:
    """1-1024 bytes of UTF-8, counted in pydantic-core: the string is checked as its UTF-8
    bytes, then taken back as text."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        as_bytes = core_schema.bytes_schema(min_length=1, max_length=1024, strict=False)
        return core_schema.chain_schema([as_bytes, core_schema.str_schema(strict=False)])

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "minLength": 1, "maxLength": 1024}


def _json_object_within(limit: int, name: str) -> AfterValidator:
    def check(value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            return value
        try:
            text = to_json(value)  # compact UTF-8 JSON, as Python's json module would write it
        except PydanticSerializationError as exc:
            raise ValueError(f"{name} must be plain JSON ({exc})") from None
        # Rare: decide exactly. (`find` rather than `in`: half the cost here, and this runs for
        # every event with a payload.)
        if text.find(b"NaN") >= 0 or text.find(b"Infinity") >= 0:
            try:
                json.dumps(value, allow_nan=False)
            except ValueError:
                raise ValueError(
                    f"{name} must be plain JSON (NaN, Infinity or a number beyond a double are not)"
                ) from None
        if len(text) > limit:
            raise ValueError(
                f"{name} is {len(text)} bytes as compact JSON, at most {limit} allowed"
            )
        return value

    return AfterValidator(check)


class StorageArtifact(BaseModel):
    """An object in S3 produced by a job. Lives on the wire and in Redis, never on HTTP."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    bucket: Annotated[str, StringConstraints(pattern=BUCKET_PATTERN)]
    key: Annotated[str, _KeyBytes]
    kind: Annotated[str, StringConstraints(pattern=SNAKE_CASE_PATTERN)]
    role: ArtifactRole
    metadata: Annotated[dict[str, Any], _json_object_within(MAX_METADATA_BYTES, "metadata")] = (
        Field(default_factory=dict)
    )


class JobEvent(BaseModel):
    """One job lifecycle event: the envelope v1 every worker service publishes."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    schema_version: Annotated[int, _SchemaVersion1]
    event_id: Ulid
    tenant_id: Annotated[str, StringConstraints(pattern=TENANT_PATTERN)]
    job_id: Ulid
    job_type: Annotated[str, StringConstraints(pattern=JOB_TYPE_PATTERN)]
    job_created_at: Rfc3339
    seq: Annotated[int, Field(ge=1, le=MAX_SEQ)]
    kind: EventKind
    visibility: Visibility
    message: Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]
    artifacts: Annotated[list[StorageArtifact], Field(max_length=MAX_ARTIFACTS)] = Field(
        default_factory=list
    )
    payload: Annotated[dict[str, Any], _json_object_within(MAX_PAYLOAD_BYTES, "payload")] = Field(
        default_factory=dict
    )
    occurred_at: Rfc3339


def rfc3339_utc(moment: datetime) -> str:
    """UTC, ending in `Z`; a fraction of a second only when there is one (CONTRACT §3)."""
    offset = moment.utcoffset()
    if offset:  # years 0002-9998 (validation): the shift cannot leave datetime's range
        moment -= offset
    # %-formatting of the fields: cheaper than isoformat() with pydantic's TzInfo, on a hot path.
    text = "%04d-%02d-%02dT%02d:%02d:%02d" % (  # noqa: UP031
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
    )
    if moment.microsecond:
        text += (".%06d" % moment.microsecond).rstrip("0")  # noqa: UP031
    return text + "Z"
