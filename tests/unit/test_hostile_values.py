"""Hostile raw Kafka values: the projector sorts every one into an event or a dead letter.

Whatever bytes arrive - random bytes, truncated or mistyped envelopes, megabyte strings,
100k-item arrays, nesting 10,000 levels deep, broken UTF-8 and surrogate escapes, numbers
beyond 2^53 or a double, duplicate keys, another schema version - `validate` returns a
`JobEvent` or a one-line reason and never raises; `prepare` (and the cooperative variant the
consumer runs) dead-letters exactly the rejected records and folds the rest; and every accepted
event packs into a delta that is valid UTF-8 and reads back as its fold. An exception in any
of these would rewind the batch forever: the stream would stall on one record.

The generators are plain functions over a `Choices` source, so the same values come either
from hypothesis (here) or from a seeded `random.Random` (`seeded_hostile_values`, also used by
`tests/integration/test_hostile_stream.py`).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic_core import to_json

from contracts.events import MAX_ARTIFACTS, MAX_MESSAGE_CHARS, MAX_METADATA_BYTES, JobEvent
from contracts.job_state import UNIT, Delta, JobState, unpack_delta
from contracts.publisher import encode_event
from projector.batch import prepare, prepare_cooperatively
from projector.dead_letter import (
    MAX_REASON_CHARS,
    KafkaDeadLetters,
    dead_letter_headers,
    one_line,
)
from projector.event_fields import fields_of
from projector.fold import BatchFold, JobRef, fold, manifest_json, stored_event_json
from projector.intake import (
    TOMBSTONE_REASON,
    Poison,
    Record,
    parse,
    poison_reason,
    validate_fields,
)
from projector.pipeline import Backoff, Pipeline
from tests.strategies import ANY_STORAGE, crockford_ulid, jobs_batches

T = TypeVar("T")
Outcome = Literal["dead", "event", "either"]

# --- where the choices come from ----------------------------------------------------------------


class Choices(Protocol):
    def integer(self, low: int, high: int) -> int: ...

    def pick(self, options: Sequence[T]) -> T: ...

    def binary(self, size: int) -> bytes: ...


class DrawnChoices:
    """Choices drawn by hypothesis (so they shrink)."""

    def __init__(self, draw: st.DrawFn) -> None:
        self._draw = draw

    def integer(self, low: int, high: int) -> int:
        return self._draw(st.integers(low, high))

    def pick(self, options: Sequence[T]) -> T:
        return self._draw(st.sampled_from(options))

    def binary(self, size: int) -> bytes:
        return self._draw(st.binary(min_size=size, max_size=size))


class SeededChoices:
    """The same choices from a seeded `random.Random`: a reproducible list, no hypothesis."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def integer(self, low: int, high: int) -> int:
        return self._rng.randint(low, high)

    def pick(self, options: Sequence[T]) -> T:
        return self._rng.choice(options)

    def binary(self, size: int) -> bytes:
        return self._rng.randbytes(size)


# --- writing JSON by hand -----------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A JSON value written as these bytes exactly (NaN, -0, 1e400, broken escapes...)."""

    text: bytes


Pairs = list[tuple[str, Any]]


def json_bytes(pairs: Iterable[tuple[str, Any]], *, ascii_only: bool = False) -> bytes:
    """A JSON object of these (key, value) pairs, in order, duplicates kept."""
    members = [
        json.dumps(key, ensure_ascii=ascii_only).encode() + b":" + _json_value(value, ascii_only)
        for key, value in pairs
    ]
    return b"{" + b",".join(members) + b"}"


def _json_value(value: Any, ascii_only: bool) -> bytes:
    if isinstance(value, Raw):
        return value.text
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=False).encode()


def replaced(document: dict[str, Any], field: str, value: Any) -> Pairs:
    return [(k, value if k == field else v) for k, v in document.items()]


# --- valid envelopes to break -------------------------------------------------------------------

TENANTS = ("acme", "globex")
JOB_IDS = ("01JDQ8Z3M4W8K2V7T6R5N4P3Q2", "01JDQ8Z3M4W8K2V7T6R5N4P3R3", "7ZZZZZZZZZZZZZZZZZZZZZZZZZ")
KINDS = ("created", "queued", "stage", "succeeded", "failed")
REQUIRED = tuple(name for name, field in JobEvent.model_fields.items() if field.is_required())


def artifact(n: int, key: str | None = None) -> dict[str, Any]:
    return {
        "bucket": "renders",
        "key": key if key is not None else f"renders/{n}/look {n}.png",
        "kind": "on_model_render",
        "role": "final" if n % 2 else "intermediate",
        "metadata": {"n": n},
    }


def artifacts_with_metadata(metadata: bytes) -> Raw:
    """`artifacts`: one artifact whose metadata is these raw JSON bytes."""
    fields = [(k, v) for k, v in artifact(0).items() if k != "metadata"]
    return Raw(b"[" + json_bytes([*fields, ("metadata", Raw(metadata))]) + b"]")


def valid_document(c: Choices, tenant_id: str, job_id: str, seq: int) -> dict[str, Any]:
    """A valid envelope v1 of one job, with a fresh event id."""
    return {
        "schema_version": 1,
        "event_id": crockford_ulid(c.integer(0, 2**128 - 1)),
        "tenant_id": tenant_id,
        "job_id": job_id,
        "job_type": c.pick(("ON_MODEL_RENDER", "CATALOG_IMAGE")),
        "job_created_at": c.pick(("2026-11-29T12:00:00Z", "2026-11-29T17:30:00.5+05:30")),
        "seq": seq,
        "kind": c.pick(KINDS),
        "visibility": c.pick(("public", "internal")),
        "message": c.pick(("", "render started", 'ünïcode ✓ "quoted"')),
        "artifacts": [artifact(n) for n in range(c.integer(0, 2))],
        "payload": c.pick(({}, {"cost": {"credits": 3}}, {"stage": "upscale", "progress": 0.5})),
        "occurred_at": c.pick(("2026-11-29T12:03:10Z", "2026-11-29T04:03:10.123456-08:00")),
    }


def base_document(c: Choices) -> dict[str, Any]:
    return valid_document(c, c.pick(TENANTS), c.pick(JOB_IDS), c.integer(1, 40))


# --- hostile values -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    """A raw value and what the contract makes of it.

    `outcome` "either" marks values the contract allows but a parser may refuse (nesting
    deeper than the JSON parser's recursion limit). A dead letter's reason starts with
    `names`: the broken field, or `value` when the bytes are not a JSON object at all.
    """

    category: str
    value: bytes | None
    outcome: Outcome
    names: str = ""

    def __repr__(self) -> str:  # hypothesis prints failing examples: keep megabytes out
        shown = self.value if self.value is None or len(self.value) < 300 else self.value[:300]
        size = 0 if self.value is None else len(self.value)
        return f"Hostile({self.category!r}, {shown!r} ({size} bytes), {self.outcome!r})"


def random_bytes(c: Choices, base: dict[str, Any]) -> Hostile:
    prefix = c.pick((b"", b'{"schema_version":1,', b"\xef\xbb\xbf{", b"["))
    return Hostile("random bytes", prefix + c.binary(c.integer(0, 64)), "dead", "value")


def truncated(c: Choices, base: dict[str, Any]) -> Hostile:
    whole = json_bytes(base.items(), ascii_only=c.pick((True, False)))
    return Hostile("truncated envelope", whole[: c.integer(0, len(whole) - 1)], "dead", "value")


WRONG_TYPES: dict[str, tuple[Any, ...]] = {
    "schema_version": ("1", Raw(b"1.0"), True, None, [1], {}, 0, 2),
    "event_id": (1, None, [], {}, True, "", "not-a-ulid", "8" + "0" * 25, "0" * 27),
    "tenant_id": (1, None, [], "ACME", "", "a" * 64, "a b", "acme\n", "\uff41cme"),
    "job_id": (1, None, ["01JDQ8Z3M4W8K2V7T6R5N4P3Q2"], "01JDQ8Z3M4W8K2V7T6R5N4P3QI", "0" * 25),
    "job_type": (1, None, "on_model_render", "A__B", "", "ÄB"),
    "job_created_at": (0, 1764417600, "1764417600", "2026-11-29", "2026-11-29T12:00:00", None),
    "seq": ("5", Raw(b"5.0"), Raw(b"1e0"), True, None, [5], 0, -1, Raw(b"-0"), 2**53, 10**30),
    "kind": (1, None, "CREATED", "exploded", ""),
    "visibility": (True, None, "PUBLIC", "private"),
    "message": (1, None, [], {}, True),
    "artifacts": ({}, "x", 1, None, [1], [{}], [None], [artifact(0) | {"bucket": 1}]),
    "payload": ([], "x", 1, None, True, Raw(b'{"a": 1')),
    "occurred_at": ("2026-13-01T00:00:00Z", "2026-11-29T24:00:00Z", "2016-12-31T23:59:60Z"),
}


def wrong_type(c: Choices, base: dict[str, Any]) -> Hostile:
    field = c.pick(sorted(WRONG_TYPES))
    value = c.pick(WRONG_TYPES[field])
    names = "value" if isinstance(value, Raw) and value.text == b'{"a": 1' else field
    return Hostile("wrong type", json_bytes(replaced(base, field, value)), "dead", names)


def missing_field(c: Choices, base: dict[str, Any]) -> Hostile:
    field = c.pick((*REQUIRED, "artifacts", "payload"))
    pairs = [(k, v) for k, v in base.items() if k != field]
    if field in ("artifacts", "payload"):  # both have defaults
        return Hostile("missing field", json_bytes(pairs), "event")
    return Hostile("missing field", json_bytes(pairs), "dead", field)


def huge_string(c: Choices, base: dict[str, Any]) -> Hostile:
    """Megabyte strings where the contract bounds them, and where it does not (unknown
    fields are ignored); the 2,000-code-point message limit is hit exactly too."""
    char = c.pick(("x", "é", "😀", "\u0000", "\u2028"))
    size = c.pick((2_001, 100_000, 1_000_000))
    where = c.pick(("message", "message at the limit", "tenant_id", "artifact key", "unknown"))
    if where == "message":
        return Hostile(
            "huge string", json_bytes(replaced(base, "message", char * size)), "dead", where
        )
    if where == "message at the limit":
        pairs = replaced(base, "message", char * MAX_MESSAGE_CHARS)
        return Hostile("huge string", json_bytes(pairs), "event")
    if where == "tenant_id":
        pairs = replaced(base, "tenant_id", "a" * size)
        return Hostile("huge string", json_bytes(pairs), "dead", "tenant_id")
    if where == "artifact key":
        pairs = replaced(base, "artifacts", [artifact(0, key=char * size)])
        return Hostile("huge string", json_bytes(pairs), "dead", "artifacts.0.key")
    pairs = [*base.items(), ("unknown", char * size)]
    return Hostile("huge string", json_bytes(pairs, ascii_only=c.pick((True, False))), "event")


def huge_array(c: Choices, base: dict[str, Any]) -> Hostile:
    where = c.pick(("artifacts", "artifacts at the limit", "payload", "metadata", "unknown"))
    if where == "artifacts":
        items = [artifact(n) for n in range(c.pick((MAX_ARTIFACTS + 1, 150, 1_000)))]
        return Hostile("huge array", json_bytes(replaced(base, "artifacts", items)), "dead", where)
    if where == "artifacts at the limit":
        items = [artifact(n) for n in range(MAX_ARTIFACTS)]
        return Hostile("huge array", json_bytes(replaced(base, "artifacts", items)), "event")
    items_100k = Raw(b"[" + b",".join([b"0"] * 100_000) + b"]")
    if where == "payload":
        pairs = replaced(base, "payload", Raw(b'{"items":' + items_100k.text + b"}"))
        return Hostile("huge array", json_bytes(pairs), "dead", "payload")
    if where == "metadata":
        pairs = replaced(
            base, "artifacts", artifacts_with_metadata(b'{"i":' + items_100k.text + b"}")
        )
        return Hostile("huge array", json_bytes(pairs), "dead", "artifacts.0.metadata")
    return Hostile("huge array", json_bytes([*base.items(), ("unknown", items_100k)]), "event")


def deep_nesting(c: Choices, base: dict[str, Any]) -> Hostile:
    """10..10,000 levels of arrays or objects. The contract sets no depth; the JSON parser
    refuses very deep documents (a recursion limit): either outcome, never a crash."""
    depth = c.pick((10, 100, 199, 200, 201, 1_000, 10_000, c.integer(10, 10_000)))
    opener, closer = c.pick(((b"[", b"]"), (b'{"a":', b"}")))
    deep = Raw(opener * depth + b"0" + closer * depth)
    where = c.pick(("payload", "metadata", "unknown"))
    if where == "payload":
        pairs = replaced(base, "payload", Raw(b'{"deep":' + deep.text + b"}"))
    elif where == "metadata":
        pairs = replaced(base, "artifacts", artifacts_with_metadata(b'{"deep":' + deep.text + b"}"))
    else:
        pairs = [*base.items(), ("unknown", deep)]
    return Hostile("deep nesting", json_bytes(pairs), "either")


# Valid text however it is written: NUL, noncharacters, BOM, line/paragraph separators, the
# packed delta's own separators (US, RS), the last code point, a pair, a combining mark.
ODD_TEXT = ("\u0000", "\uffff", "\ufeff", "\u2028", "\u2029", "\u001f", "\u001e", "\u0085",
            "\x7f", "\U0010ffff", "😀", "e\u0301", "\u202e", "")  # fmt: skip


def unicode_edges(c: Choices, base: dict[str, Any]) -> Hostile:
    # Public and succeeded: the text reaches every stored group (manifest, latest event).
    base = base | {"kind": "succeeded", "visibility": "public"}
    text = c.pick(ODD_TEXT) * c.integer(1, 3)
    where = c.pick(("message", "payload key", "payload value", "artifact key", "metadata"))
    if where == "message":
        pairs = replaced(base, "message", text)
    elif where in ("payload key", "payload value"):
        payload = {text: 1} if where == "payload key" else {"note": text}
        pairs = replaced(base, "payload", payload)
    elif where == "artifact key":
        pairs = replaced(base, "artifacts", [artifact(0, key=text or "k")])
    else:
        pairs = replaced(base, "artifacts", [artifact(0) | {"metadata": {text: text}}])
    return Hostile("unicode edges", json_bytes(pairs, ascii_only=c.pick((True, False))), "event")


BROKEN_STRINGS = (
    b'"\\ud800"',  # lone high surrogate escape
    b'"\\udfff"',  # lone low surrogate escape
    b'"a\\ud800b"',
    b'"\\ude00\\ud83d"',  # a pair in the wrong order
    b'"\xc0\xaf"',  # overlong '/'
    b'"\xe0\x80\xaf"',  # overlong, three bytes
    b'"\xed\xa0\x80"',  # a surrogate encoded as UTF-8 (CESU-8)
    b'"\xf4\x90\x80\x80"',  # beyond U+10FFFF
    b'"\xff\xfe"',
    b'"\x80"',  # a lone continuation byte
    b'"\xe2\x82"',  # a truncated sequence
    b'"a\x00b"',  # a raw control character
    b'"line\nbreak"',
    b'"\\u12"',  # a short escape
    b'"\\x41"',
)


def broken_unicode(c: Choices, base: dict[str, Any]) -> Hostile:
    how = c.pick(("in message", "in payload", "in tenant_id", "BOM", "UTF-16"))
    if how == "BOM":
        return Hostile(
            "broken unicode", b"\xef\xbb\xbf" + json_bytes(base.items()), "dead", "value"
        )
    if how == "UTF-16":
        text = json_bytes(base.items()).decode()
        return Hostile(
            "broken unicode", text.encode(c.pick(("utf-16", "utf-16-be"))), "dead", "value"
        )
    broken = Raw(c.pick(BROKEN_STRINGS))
    if how == "in message":
        pairs = replaced(base, "message", broken)
    elif how == "in payload":
        pairs = replaced(base, "payload", Raw(b'{"note":' + broken.text + b"}"))
    else:
        pairs = replaced(base, "tenant_id", broken)
    return Hostile("broken unicode", json_bytes(pairs), "dead", "value")


GOOD_NUMBERS = (b"9007199254740993", b"18446744073709551616", b"-" + b"9" * 300, b"9" * 4300,
                b"-0", b"-0.0", b"1e308", b"1.7976931348623157e308", b"5e-324", b"1e-400",
                b"0.1e1", b"1E+2", b"0." + b"1" * 5_000)  # fmt: skip
NON_FINITE = (b"1e400", b"-1e400", b"2e308", b"NaN", b"Infinity", b"-Infinity")
NOT_NUMBERS = (b"01", b"+1", b".5", b"1.", b"1e", b"-", b"0x10", b"-NaN", b"infinity",
               b"1" + b"0" * 4300)  # fmt: skip


def numbers(c: Choices, base: dict[str, Any]) -> Hostile:
    kind = c.pick(("good", "non-finite", "not a number"))
    token = c.pick(
        {"good": GOOD_NUMBERS, "non-finite": NON_FINITE, "not a number": NOT_NUMBERS}[kind]
    )
    where = c.pick(("payload", "metadata"))
    number = b'{"n":' + token + b"}"
    if where == "payload":
        pairs, field = replaced(base, "payload", Raw(number)), "payload"
    else:
        pairs, field = (
            replaced(base, "artifacts", artifacts_with_metadata(number)),
            "artifacts.0.metadata",
        )
    value = json_bytes(pairs)
    compact = json.dumps(json.loads(number), separators=(",", ":")) if kind == "good" else ""
    if where == "metadata" and len(compact) > MAX_METADATA_BYTES:
        return Hostile("numbers", value, "dead", field)  # a good number, too long for metadata
    if kind == "good":
        return Hostile("numbers", value, "event")
    return Hostile("numbers", value, "dead", field if kind == "non-finite" else "value")


GOOD_SEQS = (b"1", b"9007199254740991")
BAD_SEQS = (b"9007199254740992", b"18446744073709551616", b"1" + b"0" * 400, b"1e400", b"NaN",
            b"-Infinity", b"1.5", b"9007199254740991.0")  # fmt: skip


def seq_numbers(c: Choices, base: dict[str, Any]) -> Hostile:
    """seq at and beyond 2^53 - 1, and numbers that are not JSON integers."""
    if c.pick((True, False)):
        value = json_bytes(replaced(base, "seq", Raw(c.pick(GOOD_SEQS))))
        return Hostile("seq numbers", value, "event")
    value = json_bytes(replaced(base, "seq", Raw(c.pick(BAD_SEQS))))
    return Hostile("seq numbers", value, "dead", "seq")


def duplicate_keys(c: Choices, base: dict[str, Any]) -> Hostile:
    """The last of duplicate keys counts (as for Python's json and the projector's parser)."""
    field = c.pick(("seq", "kind", "payload", "job_id"))
    bad: Any = {"seq": 0, "kind": "exploded", "payload": [], "job_id": "nope"}[field]
    good = base[field]
    last_good = c.pick((True, False))
    pairs: Pairs = [
        (field, bad if last_good else good),
        *base.items(),
        (field, good if last_good else bad),
    ]
    if last_good:
        return Hostile("duplicate keys", json_bytes(pairs), "event")
    return Hostile("duplicate keys", json_bytes(pairs), "dead", field)


OTHER_SCHEMA_VERSIONS = (2, 0, -1, 2**64, "1", "v1", Raw(b"1.0"), Raw(b"1e0"), True, None, [1])


def schema_version(c: Choices, base: dict[str, Any]) -> Hostile:
    value = json_bytes(replaced(base, "schema_version", c.pick(OTHER_SCHEMA_VERSIONS)))
    return Hostile("schema version", value, "dead", "schema_version")


def not_an_envelope(c: Choices, base: dict[str, Any]) -> Hostile:
    whole = json_bytes(base.items())
    as_string = b'"' + whole.replace(b'"', b'\\"') + b'"'
    not_objects = (b"", b" ", b"null", b"true", b"1", b'"x"', b"[]", b"[" + whole + b"]", as_string)
    value = c.pick((*not_objects, whole + b" x", whole + whole, b"{}"))
    names = "schema_version: Field required" if value == b"{}" else "value"
    return Hostile("not an envelope", value, "dead", names)


def tombstone(c: Choices, base: dict[str, Any]) -> Hostile:
    return Hostile("tombstone", None, "dead", "value")


UNKNOWN_FIELDS = (
    ("__proto__", {"admin": True}),
    ("constructor", None),
    ("$type", "X"),
    ("schema_version2", 2),
    ("", ""),
)


def tolerated(c: Choices, base: dict[str, Any]) -> Hostile:
    """Valid envelopes in unusual clothes: unknown fields (prototype-pollution names too),
    whitespace around, ids in lower case, fractions of a second beyond microseconds."""
    document = base | dict([c.pick(UNKNOWN_FIELDS)])
    if c.pick((True, False)):
        document["job_id"] = base["job_id"].lower()
    if c.pick((True, False)):
        document["occurred_at"] = "2026-11-29T12:03:10." + "1" * 1_000 + "Z"
    value = c.pick((b"", b" \t\r\n")) + json_bytes(document.items()) + c.pick((b"", b"\n "))
    return Hostile("tolerated", value, "event")


Builder = Callable[[Choices, dict[str, Any]], Hostile]
BUILDERS: tuple[Builder, ...] = (
    random_bytes,
    truncated,
    wrong_type,
    missing_field,
    huge_string,
    huge_array,
    deep_nesting,
    unicode_edges,
    broken_unicode,
    numbers,
    seq_numbers,
    duplicate_keys,
    schema_version,
    not_an_envelope,
    tombstone,
    tolerated,
)


def hostile_value(c: Choices, base: dict[str, Any] | None = None) -> Hostile:
    return c.pick(BUILDERS)(c, base if base is not None else base_document(c))


@st.composite
def hostile_values(draw: st.DrawFn) -> Hostile:
    return hostile_value(DrawnChoices(draw))


def seeded_hostile_values(
    seed: int, count: int, bases: Callable[[Choices], dict[str, Any]] = base_document
) -> list[Hostile]:
    """`count` hostile values, the same for the same seed, every builder used in turn."""
    c = SeededChoices(random.Random(seed))
    return [BUILDERS[n % len(BUILDERS)](c, bases(c)) for n in range(count)]


# --- checks -------------------------------------------------------------------------------------


def record(value: bytes | None, offset: int = 0, key: bytes | None = b"k") -> Record:
    size = -1 if value is None else len(value)
    return ConsumerRecord("jobs.events", 0, offset, 0, 0, key, value, None, 1, size, [])


def assert_one_line_reason(reason: str) -> None:
    assert reason, "a reason is never empty"
    assert len(reason) <= MAX_REASON_CHARS, len(reason)
    assert reason.splitlines() == [reason], f"one line: {reason!r}"
    assert reason == reason.strip()
    dead_letter_headers(reason, "jobs.events", 0, 0)  # UTF-8 for the header: no surrogates


def unpack(delta: Delta) -> JobState:
    """A job's delta read back the way the server-side merge and the api read its values."""
    head, origin, public = delta
    assert head.count(UNIT) == 3, "no separator inside a value"
    assert origin.count(UNIT) == 3, "no separator inside a value"
    assert public == "" or public.count(UNIT) == 4, "no separator inside a value"
    return unpack_delta(delta)


def assert_packs_into_its_fold(event: JobEvent) -> None:
    batch = BatchFold()
    batch.add(fields_of(event))
    jobs, packed = batch.packed()
    assert jobs == [(event.tenant_id, event.job_id)]
    assert len(packed) == 3, "three values per job"
    for value in packed:
        value.encode()  # Redis takes UTF-8: a lone surrogate here would fail every retry
    assert unpack((packed[0], packed[1], packed[2])) == fold([event])
    # The typed serialisers write what pydantic-core's type inference writes.
    stored = (event.kind, event.message, event.artifacts, event.payload, event.occurred_at)
    assert stored_event_json(fields_of(event)) == to_json(stored).decode()
    assert manifest_json(fields_of(event)) == (
        to_json(event.artifacts).decode() if event.kind == "succeeded" else "[]"
    )


def assert_agrees_with_the_document(event: JobEvent, value: bytes) -> None:
    """The event says what the bytes say, as another JSON parser reads them."""
    document = json.loads(value)
    assert event.seq == document["seq"]
    assert event.job_id == document["job_id"].upper()
    assert (event.tenant_id, event.kind, event.message) == (
        document["tenant_id"],
        document["kind"],
        document["message"],
    )
    assert event.payload == document.get("payload", {})
    assert [a.key for a in event.artifacts] == [a["key"] for a in document.get("artifacts", [])]
    assert [a.metadata for a in event.artifacts] == [
        a.get("metadata", {}) for a in document.get("artifacts", [])
    ]


def validate(record: Record) -> JobEvent | str:
    """The contract's verdict on a record: the model's event, or the reason it is refused."""
    if record.value is None:
        return TOMBSTONE_REASON
    try:
        return JobEvent.model_validate_json(record.value)
    except ValidationError as error:
        return poison_reason(error)


def assert_fields_agree_with_the_model(value: bytes | None, outcome: JobEvent | str) -> None:
    """`parse` (`JobEvent`'s field schemas, no model) decides as the model does, on its own,
    and gives the same fields or the same reason."""
    parsed = parse(record(value), ANY_STORAGE)
    assert parsed == (Poison(outcome) if isinstance(outcome, str) else fields_of(outcome))
    if value is not None:
        try:
            validate_fields(value)
        except ValidationError:
            assert isinstance(outcome, str), "accepted by the model, refused without it"
        else:
            assert not isinstance(outcome, str), "refused by the model, accepted without it"


def check_outcome(hostile: Hostile) -> JobEvent | str:
    outcome = validate(record(hostile.value))
    assert_fields_agree_with_the_model(hostile.value, outcome)
    if isinstance(outcome, str):
        assert_one_line_reason(outcome)
        assert hostile.outcome != "event", f"{hostile!r} dead-lettered: {outcome}"
        assert outcome.startswith(hostile.names), f"{outcome!r} should name {hostile.names!r}"
    else:
        assert isinstance(outcome, JobEvent), type(outcome)
        assert hostile.outcome != "dead", f"{hostile!r} accepted"
        assert hostile.value is not None
        assert_agrees_with_the_document(outcome, hostile.value)
        assert_packs_into_its_fold(outcome)
    return outcome


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """On a loop of its own: the session's loop (pytest-asyncio) is left alone."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


# --- tests --------------------------------------------------------------------------------------

LARGE = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(LARGE, max_examples=500)
@given(hostile_values())
def test_validate_turns_every_hostile_value_into_an_event_or_a_one_line_reason(
    hostile: Hostile,
) -> None:
    outcome = check_outcome(hostile)
    event(f"{hostile.category}: {'dead letter' if isinstance(outcome, str) else 'event'}")


@pytest.mark.parametrize("builder", BUILDERS, ids=[b.__name__ for b in BUILDERS])
def test_each_kind_of_hostile_value_gets_the_outcome_the_contract_gives_it(
    builder: Builder,
) -> None:
    c = SeededChoices(random.Random(builder.__name__))
    for _ in range(25):
        check_outcome(builder(c, base_document(c)))


def test_the_seeded_values_are_the_same_for_the_same_seed_and_cover_every_kind() -> None:
    first, again = seeded_hostile_values(7, 40), seeded_hostile_values(7, 40)
    assert [h.value for h in first] == [h.value for h in again]
    assert len({h.category for h in first}) == len(BUILDERS)


@settings(LARGE, max_examples=100)
@given(
    valid=jobs_batches(), hostile=st.lists(hostile_values(), min_size=1, max_size=6), data=st.data()
)
def test_a_batch_dead_letters_exactly_the_rejected_records_and_folds_the_others(
    valid: list[JobEvent], hostile: list[Hostile], data: st.DataObject
) -> None:
    values = [encode_event(e) for e in valid] + [h.value for h in hostile]
    expected = ["event"] * len(valid) + [h.outcome for h in hostile]
    order = data.draw(st.permutations(range(len(values))))
    records = [record(values[n], offset) for offset, n in enumerate(order)]
    outcomes = {r.offset: validate(r) for r in records}

    # "either": the contract allows the value, the parser may refuse it; prepare must agree
    # with validate then.
    refused = {r.offset for r in records if isinstance(outcomes[r.offset], str)}
    should_die = [
        r
        for r, n in zip(records, order, strict=True)
        if expected[n] == "dead" or (expected[n] == "either" and r.offset in refused)
    ]
    by_job: dict[JobRef, list[JobEvent]] = defaultdict(list)
    for outcome in outcomes.values():
        if isinstance(outcome, JobEvent):
            by_job[(outcome.tenant_id, outcome.job_id)].append(outcome)

    for prepared in (
        prepare(records, ANY_STORAGE),
        run(prepare_cooperatively(records, ANY_STORAGE)),
    ):
        assert [(r.offset, poison.reason) for r, poison in prepared.dead] == [
            (r.offset, outcomes[r.offset]) for r in should_die
        ]
        assert 3 * len(prepared.jobs) == len(prepared.packed) == 3 * len(by_job)
        stored = prepared.packed
        deltas = [(stored[i], stored[i + 1], stored[i + 2]) for i in range(0, len(stored), 3)]
        for ref, delta in zip(prepared.jobs, deltas, strict=True):
            "".join(delta).encode()
            assert unpack(delta) == fold(by_job[ref]), f"job {ref}"


def test_the_heaviest_values_are_sorted_without_stalling_the_batch() -> None:
    """The largest inputs the generators make, and larger, each in well under a second of
    CPU here (the bound is loose: shared machines)."""
    c = SeededChoices(random.Random(1))
    base = base_document(c)
    whole = json_bytes(base.items())
    heaviest = [
        json_bytes(replaced(base, "message", "é" * 4_000_000)),
        json_bytes(replaced(base, "artifacts", [artifact(n) for n in range(100_000)])),
        json_bytes(
            replaced(base, "payload", Raw(b'{"a":[' + b",".join([b"1"] * 1_000_000) + b"]}"))
        ),
        json_bytes(replaced(base, "payload", {f"k{n}": n for n in range(200_000)})),
        whole[:-1] + b"," + b",".join([b'"seq":1'] * 500_000) + b"}",
        json_bytes([*base.items(), ("unknown", Raw(b"[" * 1_000_000 + b"]" * 1_000_000))]),
        b"[" * 5_000_000,
        b"\xff" * 5_000_000,
    ]
    records = [record(value, n) for n, value in enumerate(heaviest)]
    started = time.process_time()
    prepared = prepare(records, ANY_STORAGE)
    assert time.process_time() - started < 10.0
    assert [r.offset for r, _ in prepared.dead] == [0, 1, 2, 3, 5, 6, 7]
    assert len(prepared.jobs) == 1, "duplicate keys: the last seq counts"


def test_a_reason_stays_one_short_line_however_many_fields_are_broken() -> None:
    broken = {"artifacts": [{"bucket": "B" * 100, "key": "", "kind": 1, "role": "x"}] * 100}
    with pytest.raises(ValidationError) as raised:
        JobEvent.model_validate_json(json.dumps(broken | {"seq": "1", "payload": []}))
    reason = poison_reason(raised.value)
    assert_one_line_reason(reason)
    assert reason.endswith(f"and {raised.value.error_count() - 3} more")


@given(st.text())
def test_one_line_makes_any_text_one_line_of_at_most_500_characters(text: str) -> None:
    line = one_line(text)
    assert len(line) <= MAX_REASON_CHARS
    assert len(line.splitlines()) <= 1
    assert line == line.strip()


@pytest.mark.parametrize(
    ("value", "names"),
    [
        (b"\n".join([b'{"seq": "x"'] * 100), "value: Invalid JSON"),
        (b"{" + b",".join(b'"f%d": 1' % n for n in range(10_000)) + b"}", "schema_version"),
    ],
    ids=["a multi-line document", "ten thousand unknown fields"],
)
def test_reasons_for_large_multi_line_documents_are_one_line(value: bytes, names: str) -> None:
    reason = validate(record(value))
    assert isinstance(reason, str)
    assert_one_line_reason(reason)
    assert reason.startswith(names)


# --- a dead letter that cannot be re-sent whole -------------------------------------------------


class AiokafkaLikeProducer:
    """The two checks `AIOKafkaProducer.send` makes before any I/O (aiokafka 0.14)."""

    def __init__(self, max_request_size: int = 1_048_576) -> None:
        self.max_request_size = max_request_size
        self.sent: list[tuple[bytes | None, bytes | None]] = []

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[None]:
        assert not (value is None and key is None), "Need at least one: key or value"
        if value is not None and len(value) > self.max_request_size:
            raise MessageSizeTooLargeError()
        self.sent.append((key, value))
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered


class Offsets:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        pass

    def pause(self, *partitions: TopicPartition) -> None:
        pass

    def resume(self, *partitions: TopicPartition) -> None:
        pass


async def merged(jobs: list[JobRef], packed: list[str]) -> list[int]:
    return [1] * len(jobs)


@pytest.mark.parametrize(
    "key",
    [
        b"01JDQ8Z3M4W8K2V7T6R5N4P3Q2",
        None,
    ],
    ids=["with a key", "without a key"],
)
async def test_a_poison_record_too_large_to_dead_letter_whole_is_still_committed(
    key: bytes | None,
) -> None:
    producer, offsets = AiokafkaLikeProducer(), Offsets()
    sink = KafkaDeadLetters(producer, "jobs.events.dlq")
    worker = Pipeline(ANY_STORAGE, merged, sink, Backoff(base=0.001, cap=0.002))
    poison = record(b"[" + b"0," * 1_000_000 + b"0]", offset=7, key=key)
    await worker.handle([poison], offsets)
    assert await worker.settle(), "the batch was written, not rewound"
    assert offsets.commits == [{TopicPartition("jobs.events", 0): 8}]
    ((sent_key, sent_value),) = producer.sent
    assert sent_key == key
    assert not sent_value, "sent without the value (marked dlq.value_dropped)"
