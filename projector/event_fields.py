"""The projector's view of an event: `JobEvent`'s fields in a plain dict, under the same rules.

The projector validates every record it consumes, and a model instance costs more to build
than a dict of the same fields: pydantic-core also makes the instance and the set of fields
given. Measured on this traffic: 4.5 against 5.2 us per event to validate, and +12 % events/s
for the live projector (less to build and to free, dict lookups in the fold). So the hot
path validates with a validator made from `JobEvent`'s own core schema: the same schema for
every field (patterns, limits, the RFC 3339 and size checks, the artifacts' model), gathered
in a typed dict that ignores unknown fields as the model does. It accepts and rejects the
same bytes with the same errors (`tests/unit/test_hostile_values.py` checks both on every
hostile value); `JobEvent` stays the contract and what the publisher and the tools use.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict, cast

from pydantic_core import CoreSchema, SchemaValidator, core_schema

from contracts.events import EventKind, JobEvent, StorageArtifact, Visibility


class EventFields(TypedDict):
    """A valid event's fields, as `JobEvent` has them."""

    schema_version: int
    event_id: str
    tenant_id: str
    job_id: str
    job_type: str
    job_created_at: datetime
    seq: int
    kind: EventKind
    visibility: Visibility
    message: str
    artifacts: list[StorageArtifact]
    payload: dict[str, Any]
    occurred_at: datetime


def _fields_schema(model_schema: CoreSchema) -> CoreSchema:
    """The model's fields, each with its own schema, as a typed dict (extra fields ignored;
    a field with a default is optional and takes its default, as in the model)."""
    schema: Any = model_schema
    definitions = None
    if schema["type"] == "definitions":  # nested models kept apart by reference
        definitions, schema = schema["definitions"], schema["schema"]
    assert schema["type"] == "model", schema["type"]
    fields = {
        name: core_schema.typed_dict_field(
            field["schema"], required=field["schema"]["type"] != "default"
        )
        for name, field in schema["schema"]["fields"].items()
    }
    fields_schema = core_schema.typed_dict_schema(
        fields, extra_behavior="ignore", config=schema.get("config")
    )
    if definitions is None:
        return fields_schema
    return core_schema.definitions_schema(fields_schema, definitions)


_validator = SchemaValidator(_fields_schema(JobEvent.__pydantic_core_schema__))

# `JobEvent.model_validate_json` without the model: raises pydantic's ValidationError.
validate_event_fields_json = _validator.validate_json


def fields_of(event: JobEvent) -> EventFields:
    """A `JobEvent`'s fields as the projector's hot path has them."""
    return cast(EventFields, dict(event))
