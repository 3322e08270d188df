"""The one entrance of a record: `parse(record, storage)` gives its event's fields, or `Poison`.

Every consumer of the topic - the live projector, `replay build`, `replay job` - parses here,
so a record gets the same verdict and, when refused, the same reason everywhere (STYLE rule 2).

`JobEvent` is the contract. Parsing validates the record's bytes with a validator made from
`JobEvent`'s own field schemas (patterns, limits, the RFC 3339 and size checks, the artifacts'
model) that gathers them in a typed dict instead of a model instance: the projector parses
every record it consumes, and a dict is cheaper to build, to read in the fold and to free.
It accepts and rejects the same bytes as the model (`tests/unit/test_hostile_values.py`
holds both to every hostile value). A refused record is worded by the model itself, whose
messages name the event rather than a dict. A valid event whose artifacts name storage the
tenant may not use (`contracts.storage`) is poison too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from aiokafka import ConsumerRecord
from pydantic import ValidationError
from pydantic_core import CoreSchema, SchemaValidator, core_schema

from contracts.events import JobEvent
from contracts.storage import StorageRules
from projector.dead_letter import one_line
from projector.event_fields import EventFields, fields_of
from projector.kafka.records import UndecodableRecord

Record: TypeAlias = ConsumerRecord[Any, Any]

TOMBSTONE_REASON = "value: no value (a tombstone is not an event)"


@dataclass(frozen=True, slots=True)
class Poison:
    """A record that breaks the contract, and why (one line, for `dlq.reason`)."""

    reason: str


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


# The fast path behind `parse`: `JobEvent.model_validate_json` without the model (raises
# pydantic's ValidationError). Public only for the tests that hold it to the model.
validate_fields = SchemaValidator(_fields_schema(JobEvent.__pydantic_core_schema__)).validate_json
_validate_model = JobEvent.__pydantic_validator__.validate_json


def parse(record: Record, storage: StorageRules) -> EventFields | Poison:
    """The record's event as its fields, or why it is poison. Never raises."""
    value = record.value
    if value is None or type(record) is UndecodableRecord:
        return _refused(record, storage)
    try:
        fields: EventFields = validate_fields(value)
    except ValidationError:
        return _refused(record, storage)
    if fields["artifacts"]:
        return _outside_storage(fields, storage) or fields
    return fields


def _outside_storage(event: EventFields, storage: StorageRules) -> Poison | None:
    tenant = event["tenant_id"]
    for index, artifact in enumerate(event["artifacts"]):
        refusal = storage.refusal(tenant, artifact.bucket, artifact.key)
        if refusal is not None:
            return Poison(one_line(f"artifacts.{index}: {refusal}"))
    return None


def _refused(record: Record, storage: StorageRules) -> EventFields | Poison:
    if type(record) is UndecodableRecord:  # its headers broke the protocol, not its value
        return Poison(record.reason)
    if record.value is None:
        return Poison(TOMBSTONE_REASON)
    try:
        event: JobEvent = _validate_model(record.value)
    except ValidationError as error:
        return Poison(poison_reason(error))
    # The two validators agree (tested): this is a safety net.
    fields = fields_of(event)
    return _outside_storage(fields, storage) or fields


def poison_reason(error: ValidationError) -> str:
    """One human-readable line naming the broken fields, e.g. `seq: Input should be ...`."""
    parts = []
    for item in error.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "value"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - 3
    if more > 0:
        parts.append(f"and {more} more")
    return one_line("; ".join(parts))
