"""The exported JSON Schema of the envelope v1: up to date, and in agreement with the model.

Producers in other languages validate against `contracts/schema/job_event.v1.json`; the
projector validates with `JobEvent`. Where JSON Schema can express a rule, both must give the
same verdict. Rules it cannot express (sizes in UTF-8 bytes, `5.0` as a non-integer, NaN) are
covered by `test_events.py` only.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from pydantic import ValidationError

from contracts.events import JobEvent
from contracts.schema_export import SCHEMA_PATH, render_schema

ULID = "01JDQ8Z3M4W8K2V7T6R5N4P3Q2"


def envelope(**overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "schema_version": 1,
        "event_id": ULID,
        "tenant_id": "acme",
        "job_id": "01JDQ8Z3M4W8K2V7T6R5N4P3Q3",
        "job_type": "ON_MODEL_RENDER",
        "job_created_at": "2026-11-29T12:00:00Z",
        "seq": 1,
        "kind": "created",
        "visibility": "public",
        "message": "Job created",
        "occurred_at": "2026-11-29T12:03:10.25+02:00",
    }
    value.update(overrides)
    return value


def artifact(**overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "bucket": "renders-eu",
        "key": "acme/final.png",
        "kind": "on_model_render",
        "role": "final",
        "metadata": {"width": 2048},
    }
    value.update(overrides)
    return value


def without(value: dict[str, Any], field: str) -> dict[str, Any]:
    return {name: item for name, item in value.items() if name != field}


def test_committed_schema_matches_the_models() -> None:
    committed = SCHEMA_PATH.read_text(encoding="utf-8")

    assert committed == render_schema(), (
        f"{SCHEMA_PATH} is stale: the models changed. "
        "Regenerate it with `uv run python -m contracts.schema_export` and commit it."
    )


def test_committed_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))

    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "job_event.v1.json"


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def model_accepts(sample: dict[str, Any]) -> bool:
    try:
        JobEvent.model_validate_json(json.dumps(sample).encode())
    except ValidationError:
        return False
    return True


VALID_SAMPLES = [
    pytest.param(envelope(), id="minimal"),
    pytest.param(
        envelope(
            kind="succeeded",
            seq=2**53 - 1,
            visibility="internal",
            message="\U0001f600" * 2000,
            artifacts=[artifact(), artifact(role="intermediate", bucket="a.b-c")],
            payload={"cost": {"credits": 3}},
        ),
        id="full",
    ),
    pytest.param(envelope(event_id=ULID.lower(), job_id=ULID.lower()), id="lower-case-ulids"),
    pytest.param(envelope(tenant_id="a" * 63, job_type="X1"), id="longest-tenant"),
    pytest.param(envelope(artifacts=[artifact(bucket="a" * 63)]), id="longest-bucket"),
    pytest.param(envelope(artifacts=[artifact()] * 100), id="100-artifacts"),
    pytest.param(
        envelope(producer="render-worker", artifacts=[artifact(etag="abc")]),
        id="unknown-fields",
    ),
]

INVALID_SAMPLES = [
    pytest.param(envelope(schema_version=2), id="schema-version-2"),
    pytest.param(envelope(schema_version="1"), id="schema-version-string"),
    pytest.param(envelope(event_id=ULID[:-1]), id="event-id-25-chars"),
    pytest.param(envelope(job_id="8" + ULID[1:]), id="job-id-first-char-8"),
    pytest.param(envelope(job_id=ULID[:-1] + "U"), id="job-id-with-U"),
    pytest.param(envelope(tenant_id="a" * 64), id="tenant-64-chars"),
    pytest.param(envelope(tenant_id="Acme"), id="tenant-upper-case"),
    pytest.param(envelope(tenant_id="-acme"), id="tenant-leading-hyphen"),
    pytest.param(envelope(job_type="A__B"), id="job-type-double-underscore"),
    pytest.param(envelope(job_created_at="2026-11-29T12:00:00"), id="timestamp-no-offset"),
    pytest.param(envelope(occurred_at="2026-11-29"), id="timestamp-date-only"),
    pytest.param(envelope(occurred_at=1795953600), id="timestamp-unix-number"),
    pytest.param(envelope(seq=0), id="seq-0"),
    pytest.param(envelope(seq=2**53), id="seq-2-to-the-53"),
    pytest.param(envelope(seq="5"), id="seq-string"),
    pytest.param(envelope(seq=True), id="seq-true"),
    pytest.param(envelope(kind="running"), id="unknown-kind"),
    pytest.param(envelope(visibility="private"), id="unknown-visibility"),
    pytest.param(envelope(message="a" * 2001), id="message-2001-chars"),
    pytest.param(envelope(artifacts=[artifact()] * 101), id="101-artifacts"),
    pytest.param(envelope(artifacts=[artifact(bucket="ab")]), id="bucket-2-chars"),
    pytest.param(envelope(artifacts=[artifact(bucket="a" * 64)]), id="bucket-64-chars"),
    pytest.param(envelope(artifacts=[artifact(bucket="Renders")]), id="bucket-upper-case"),
    pytest.param(envelope(artifacts=[artifact(kind="Bad-Kind")]), id="artifact-kind-not-snake"),
    pytest.param(envelope(artifacts=[artifact(role="draft")]), id="unknown-role"),
    pytest.param(envelope(artifacts=[artifact(metadata=[])]), id="metadata-not-object"),
    pytest.param(envelope(payload=[]), id="payload-not-object"),
    pytest.param(envelope(payload="cost=3"), id="payload-string"),
    *(
        pytest.param(without(envelope(), field), id=f"missing-{field}")
        for field in JobEvent.model_json_schema()["required"]
    ),
    *(
        pytest.param(envelope(artifacts=[without(artifact(), field)]), id=f"artifact-no-{field}")
        for field in ("bucket", "key", "kind", "role")
    ),
]


@pytest.mark.parametrize("sample", VALID_SAMPLES)
def test_schema_and_model_both_accept_valid_envelope(
    validator: Any, sample: dict[str, Any]
) -> None:
    errors = [error.message for error in validator.iter_errors(sample)]

    assert errors == []
    assert model_accepts(sample)


@pytest.mark.parametrize("sample", INVALID_SAMPLES)
def test_schema_and_model_both_reject_invalid_envelope(
    validator: Any, sample: dict[str, Any]
) -> None:
    assert not validator.is_valid(sample), "the JSON Schema accepts it"
    assert not model_accepts(sample), "the model accepts it"
