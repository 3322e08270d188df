"""The committed AsyncAPI and OpenAPI documents: up to date, and saying what the code does.

Teams in other languages generate clients from `contracts/schema/asyncapi.json` and
`contracts/schema/openapi.json`; a stale document would mislead them silently.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema  # type: ignore[import-untyped]

from api.openapi_export import OPENAPI_PATH, render_openapi
from contracts.schema_export import ASYNCAPI_PATH, render_asyncapi
from projector.dead_letter import dead_letter_headers
from tests.unit.test_schema import envelope

REGENERATE = "Regenerate with `make schema` and commit it."


def load(path: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def test_committed_asyncapi_is_what_the_code_generates() -> None:
    assert ASYNCAPI_PATH.read_text(encoding="utf-8") == render_asyncapi(), (
        f"{ASYNCAPI_PATH} is stale. {REGENERATE}"
    )


def test_committed_openapi_is_what_the_app_serves() -> None:
    assert OPENAPI_PATH.read_text(encoding="utf-8") == render_openapi(), (
        f"{OPENAPI_PATH} is stale. {REGENERATE}"
    )


def test_asyncapi_payload_schema_accepts_an_event_and_refuses_a_broken_one() -> None:
    document = load(ASYNCAPI_PATH)
    # The payload's $refs point into components/schemas: validate against the whole document.
    validator = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/JobEvent", **document}
    )

    assert list(validator.iter_errors(envelope())) == []
    assert list(validator.iter_errors(envelope(kind="exploded"))) != []
    assert list(validator.iter_errors(envelope(seq=0))) != []


def test_asyncapi_names_every_dead_letter_header_the_projector_writes() -> None:
    document = load(ASYNCAPI_PATH)
    documented = document["components"]["messages"]["DeadLetter"]["headers"]
    written = {name for name, _ in dead_letter_headers("reason", "jobs.events", 0, 7)}

    assert written == set(documented["required"])
    assert written | {"dlq.value_dropped"} == set(documented["properties"])
    assert document["channels"]["jobEvents"]["address"] == "jobs.events"
    assert document["channels"]["deadLetters"]["address"] == "jobs.events.dlq"


def test_openapi_documents_headers_and_timestamps() -> None:
    document = load(OPENAPI_PATH)
    responses = document["paths"]["/v1/jobs/{id}"]["get"]["responses"]
    schemas = document["components"]["schemas"]

    assert {"ETag", "Cache-Control"} <= set(responses["200"]["headers"])
    assert "ETag" in responses["304"]["headers"]
    assert "WWW-Authenticate" in responses["401"]["headers"]
    assert "Retry-After" in responses["429"]["headers"]
    assert "Retry-After" in responses["503"]["headers"]
    assert schemas["JobResponse"]["properties"]["created_at"]["format"] == "date-time"
    assert schemas["PublicEvent"]["properties"]["created_at"]["format"] == "date-time"
