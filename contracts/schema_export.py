"""The contract's machine-readable documents, for producers and consumers in other languages.

`python -m contracts.schema_export` (`make schema`) rewrites, under `contracts/schema/`:
- `job_event.v1.json`: JSON Schema of the event envelope v1;
- `asyncapi.json`: AsyncAPI 3 document of `jobs.events` and its dead-letter topic (key,
  headers, payload, the `dlq.*` headers).
The api's `openapi.json` is written beside them by `python -m api.openapi_export`. Unit tests
fail when a committed file differs from what the code generates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contracts.events import ULID_PATTERN, JobEvent

SCHEMA_DIR = Path(__file__).parent / "schema"
SCHEMA_PATH = SCHEMA_DIR / "job_event.v1.json"
ASYNCAPI_PATH = SCHEMA_DIR / "asyncapi.json"


def job_event_schema() -> dict[str, Any]:
    schema = JobEvent.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "job_event.v1.json"
    return schema


def _string(description: str, **rules: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **rules}


def asyncapi_document() -> dict[str, Any]:
    """AsyncAPI 3.0 of the topic workers publish to and the topic poison goes to."""
    schemas = JobEvent.model_json_schema(
        mode="validation", ref_template="#/components/schemas/{model}"
    )
    definitions = schemas.pop("$defs", {})
    key = _string("The job id: a job's events share a partition, in order.", pattern=ULID_PATTERN)
    event_headers = {
        "type": "object",
        "description": "Optional and informative: the projector reads the value alone.",
        "properties": {
            "kind": _string("The event's kind."),
            "tenant_id": _string("The event's tenant."),
            "traceparent": _string("W3C trace context: the projector's span links to it."),
        },
    }
    dead_letter_headers = {
        "type": "object",
        "description": "The poison record's own headers, and these.",
        "required": ["dlq.reason", "dlq.topic", "dlq.partition", "dlq.offset"],
        "properties": {
            "dlq.reason": _string("Why the record is poison: one human-readable line."),
            "dlq.topic": _string("The topic it was read from."),
            "dlq.partition": _string("Its partition, in decimal."),
            "dlq.offset": _string("Its offset, in decimal."),
            "dlq.value_dropped": _string(
                "Present when the value was too large to dead-letter: its size."
            ),
        },
    }
    kafka_key = {"kafka": {"key": key, "bindingVersion": "0.5.0"}}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Job lifecycle events",
            "version": "1.0.0",
            "description": (
                "Worker services publish a job's lifecycle events to jobs.events, keyed by the "
                "job id with Kafka's default (murmur2) partitioner; the read model folds them "
                "into jobs. A record that breaks the contract goes to jobs.events.dlq with the "
                "reason, and the stream goes on (CONTRACT §1)."
            ),
        },
        "defaultContentType": "application/json",
        "channels": {
            "jobEvents": {
                "address": "jobs.events",
                "description": "Setting KAFKA_TOPIC. The source of truth: kept forever "
                "(retention.ms=-1), read from offset 0 by a rebuild.",
                "messages": {"jobEvent": {"$ref": "#/components/messages/JobEvent"}},
                "bindings": {"kafka": {"topicConfiguration": {"retention.ms": -1}}},
            },
            "deadLetters": {
                "address": "jobs.events.dlq",
                "description": "Poison records of jobs.events, key and value as written.",
                "messages": {"deadLetter": {"$ref": "#/components/messages/DeadLetter"}},
            },
        },
        "operations": {
            "publishJobEvent": {
                "action": "send",
                "channel": {"$ref": "#/channels/jobEvents"},
                "summary": "A worker service publishes an event of a job.",
                "messages": [{"$ref": "#/channels/jobEvents/messages/jobEvent"}],
            },
            "projectJobEvents": {
                "action": "receive",
                "channel": {"$ref": "#/channels/jobEvents"},
                "summary": "The projector folds events into jobs.",
                "messages": [{"$ref": "#/channels/jobEvents/messages/jobEvent"}],
            },
            "deadLetterPoison": {
                "action": "send",
                "channel": {"$ref": "#/channels/deadLetters"},
                "summary": "The projector sends a record that breaks the contract, with why.",
                "messages": [{"$ref": "#/channels/deadLetters/messages/deadLetter"}],
            },
        },
        "components": {
            "messages": {
                "JobEvent": {
                    "name": "JobEvent",
                    "title": "Job lifecycle event, envelope v1",
                    "contentType": "application/json",
                    "headers": event_headers,
                    "payload": {"$ref": "#/components/schemas/JobEvent"},
                    "bindings": kafka_key,
                },
                "DeadLetter": {
                    "name": "DeadLetter",
                    "title": "A poison record of jobs.events",
                    "contentType": "application/octet-stream",
                    "headers": dead_letter_headers,
                    "payload": {"description": "The record's value as it was written (any bytes)."},
                    "bindings": kafka_key,
                },
            },
            "schemas": {"JobEvent": schemas, **definitions},
        },
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def render_schema() -> str:
    return render(job_event_schema())


def render_asyncapi() -> str:
    return render(asyncapi_document())


if __name__ == "__main__":
    for path, text in ((SCHEMA_PATH, render_schema()), (ASYNCAPI_PATH, render_asyncapi())):
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
