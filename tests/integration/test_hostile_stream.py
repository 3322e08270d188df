"""A hostile stream through the real broker, projector and Redis: nothing stalls or crashes.

A few hundred hostile values (the generators of `tests/unit/test_hostile_values.py`, from a
fixed seed) are interleaved with the valid events of some jobs, together with records larger
than the broker's default record size, tombstones, records without a key and odd headers. The
real `python -m projector run` must catch up (commit the end of every partition), project the
accepted events exactly as the fold does, and dead-letter exactly the rejected records: the
original key, value and headers, plus `dlq.*` headers naming the reason and the source record.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from redis.asyncio import Redis

from contracts.events import JobEvent
from contracts.publisher import encode_event
from devstack.data import STORAGE, event
from devstack.processes import LocalProcess
from projector.dead_letter import MAX_REASON_CHARS
from projector.intake import Poison, Record, parse
from tests.integration.projection import (
    assert_projection_equals_fold,
    job_events,
    projector_env,
    spawn,
    wait_until_caught_up,
)
from tests.integration.support import consume_all
from tests.unit.test_hostile_values import (
    BUILDERS,
    Choices,
    Hostile,
    SeededChoices,
    json_bytes,
    replaced,
    seeded_hostile_values,
    valid_document,
)

pytestmark = pytest.mark.integration

SEED = 20261129
HOSTILE_RECORDS = 240
# aiokafka's default `max_request_size`, which the projector's dead-letter producer keeps: a
# dead letter larger than this goes out without its value (`dlq.value_dropped`).
DEFAULT_MAX_REQUEST = 1_048_576
OVERSIZED = 1_500_000  # bytes of text: a record beyond the default, sent by a larger limit
ODD_HEADERS: list[tuple[str, bytes | None]] = [
    ("traceparent", b"\xff\xfe not utf-8"),
    ("kind", None),
    ("", b""),
    ("dlq.reason", b"forged by the producer"),
]

Headers = list[tuple[str, bytes | None]]


@dataclass(frozen=True)
class Sent:
    """One record as produced, and where the broker put it."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    hostile: Hostile | None  # None: a valid event
    partition: int = -1
    offset: int = -1

    def as_record(self, topic: str) -> Record:
        return ConsumerRecord(
            topic, self.partition, self.offset, 0, 0, self.key, self.value, None, 0, 0, []
        )


def hostile_stream(valid: list[JobEvent]) -> list[Sent]:
    """The valid events and the hostile records, interleaved; the same list for the seed."""
    rng = random.Random(SEED)
    jobs = sorted({(e.tenant_id, e.job_id) for e in valid})

    def base_of_a_valid_job(c: Choices) -> dict[str, object]:
        tenant_id, job_id = c.pick(jobs)
        return valid_document(c, tenant_id, job_id, c.integer(1, 12))

    records = [Sent(e.job_id.encode(), encode_event(e), [], None) for e in valid]
    for n, hostile in enumerate(seeded_hostile_values(SEED, HOSTILE_RECORDS, base_of_a_valid_job)):
        key: bytes | None = rng.choice(jobs)[1].encode()  # any job's: keys are not trusted
        if n % 23 == 0 and hostile.value is not None:  # a record needs a key or a value
            key = None
        elif n % 29 == 0:
            key = b"\xff\x00 not a job id"
        headers = [ODD_HEADERS[n % len(ODD_HEADERS)]] if n % 7 == 0 else []
        records.append(Sent(key, hostile.value, headers, hostile))
    records += extra_records(rng, jobs)
    rng.shuffle(records)
    return records


def extra_records(rng: random.Random, jobs: list[tuple[str, str]]) -> list[Sent]:
    """Tombstones, records without a key, and records past the default record size."""
    c = SeededChoices(rng)
    tenant_id, job_id = jobs[0]
    document = valid_document(c, tenant_id, job_id, 20)
    big_poison = json_bytes(replaced(document, "message", "x" * OVERSIZED))
    big_valid = json_bytes([*document.items(), ("padding", "é" * (OVERSIZED // 2))])
    no_key = json_bytes(valid_document(c, tenant_id, job_id, 21).items())
    return [
        Sent(job_id.encode(), big_poison, [], Hostile("oversized", big_poison, "dead", "message")),
        Sent(job_id.encode(), big_valid, [], Hostile("oversized", big_valid, "event")),
        Sent(job_id.encode(), None, list(ODD_HEADERS), Hostile("tombstone", None, "dead", "value")),
        Sent(None, no_key, [], Hostile("no key", no_key, "event")),
    ]


async def produce_all(bootstrap: str, topic: str, records: list[Sent]) -> list[Sent]:
    """Send in this order; the records with the partition and offset the broker gave them."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, max_request_size=16 * DEFAULT_MAX_REQUEST, linger_ms=5
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, r.value, key=r.key, headers=r.headers) for r in records
        ]
        placed = [await future for future in futures]
    finally:
        await producer.stop()
    return [
        Sent(r.key, r.value, r.headers, r.hostile, meta.partition, meta.offset)
        for r, meta in zip(records, placed, strict=True)
    ]


def is_dead(sent: Sent, topic: str) -> bool:
    """What the contract says of the record; for "either" (nesting deeper than the parser
    takes), what the projector's own validation decides."""
    if sent.hostile is None or sent.hostile.outcome == "event":
        return False
    if sent.hostile.outcome == "dead":
        return True
    return isinstance(parse(sent.as_record(topic), STORAGE), Poison)


async def test_a_hostile_stream_is_applied_or_dead_lettered_record_by_record(
    kafka_bootstrap: str,
    topic: str,
    redis_url: str,
    redis: Redis,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    valid = job_events(jobs=30)
    sent = await produce_all(kafka_bootstrap, topic, hostile_stream(valid))
    dead = [s for s in sent if is_dead(s, topic)]
    applied = [s for s in sent if not is_dead(s, topic)]
    assert len(dead) > 100, "most hostile values are poison"
    assert any(s.hostile is not None for s in applied), "some hostile values are valid events"

    processes.append(spawn(projector_env(kafka_bootstrap, topic, redis_url, version), tmp_path))
    await wait_until_caught_up(kafka_bootstrap, topic, version, len(sent), timeout=60)

    events = [JobEvent.model_validate_json(s.value) for s in applied if s.value is not None]
    await assert_projection_equals_fold(redis, version, events)

    # One more than expected: the read waits a little for any letter beyond the rejected.
    letters = await consume_all(kafka_bootstrap, f"{topic}.dlq", len(dead) + 1, timeout=5)
    assert len(letters) == len(dead), "each rejected record is dead-lettered once, nothing else"
    by_source = {(s.partition, s.offset): s for s in dead}
    for letter in letters:
        assert_dead_letter_of(letter, by_source, topic)
    assert {dlq_source(letter) for letter in letters} == set(by_source)

    assert processes[0].process.poll() is None, "the projector is still running"
    log = processes[0].log_path.read_text()
    assert "not prepared" not in log, "no batch failed while being prepared"
    assert "not projected" not in log, "no batch was rewound"


def dlq_source(letter: ConsumerRecord[bytes, bytes]) -> tuple[int, int]:
    # The dead letter's own headers come last: they win over forged ones.
    headers = {name: value or b"" for name, value in letter.headers}
    return int(headers["dlq.partition"]), int(headers["dlq.offset"])


def assert_dead_letter_of(
    letter: ConsumerRecord[bytes, bytes], by_source: dict[tuple[int, int], Sent], topic: str
) -> None:
    where = dlq_source(letter)
    assert where in by_source, f"a dead letter for {where}, which is no rejected record"
    source = by_source[where]
    assert source.hostile is not None
    name = f"{source.hostile.category} at {source.partition}/{source.offset}"
    assert letter.key == source.key, name
    # The original headers first (a forged `dlq.reason` among them), then the dead letter's.
    original = len(source.headers)
    assert list(letter.headers[:original]) == source.headers, name
    added = dict(letter.headers[original:])
    assert added["dlq.topic"] == topic.encode(), name
    assert int(added["dlq.partition"]) == source.partition, name
    assert int(added["dlq.offset"]) == source.offset, name
    reason = (added["dlq.reason"] or b"").decode()
    assert 0 < len(reason) <= MAX_REASON_CHARS, name
    assert reason.splitlines() == [reason], name
    assert reason.startswith(source.hostile.names), f"{name}: {reason}"

    size = 0 if source.value is None else len(source.value)
    if letter.value is None and source.value is not None:
        assert size > 1_000_000, f"{name}: only a record too large to re-send loses its value"
        assert "dlq.value_dropped" in added, name
    else:
        assert letter.value == source.value, name
        assert size <= DEFAULT_MAX_REQUEST, f"{name}: {size} bytes re-sent whole"


def test_the_stream_is_the_same_for_the_seed_and_holds_every_kind_of_hostile_record() -> None:
    valid = [event(seq=1), event(seq=2, kind="succeeded")]
    first, again = hostile_stream(valid), hostile_stream(valid)
    assert [(s.key, s.value, s.headers) for s in first] == [
        (s.key, s.value, s.headers) for s in again
    ]
    hostile = [s.hostile for s in first if s.hostile is not None]
    assert len({h.category for h in hostile}) == len(BUILDERS) + 2  # + oversized, no key
    assert any(s.key is None for s in first)
    assert any(s.value is None for s in first)
    assert sum(len(s.value or b"") > DEFAULT_MAX_REQUEST for s in first) >= 2
