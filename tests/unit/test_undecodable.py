"""Record batches that aiokafka cannot decode, and the lenient parser that reads them.

`encode_batch` writes a v2 record batch byte by byte, so that a test can put into it what
aiokafka's builder refuses (a header key that is not UTF-8); the integration tests send its
output to the real broker.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import replace
from functools import partial

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition, codec
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, FetchResult, PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.legacy_records import LegacyRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from faststream.kafka import KafkaBroker

from contracts.events import JobEvent
from contracts.publisher import encode_event
from devstack.data import STORAGE, event
from projector.event_fields import fields_of
from projector.intake import Poison, parse
from projector.kafka.lenient import (
    PARSE_ERRORS,
    LenientConsumer,
    consume_leniently,
    lenient_builder,
)
from projector.kafka.records import UndecodableRecord, parse_record_set

RawHeader = tuple[bytes, bytes | None]
RawRecord = tuple[bytes | None, bytes | None, Sequence[RawHeader]]

BASE_TIMESTAMP = 1_796_000_000_000
GZIP = 1
CONTROL = 0x20
LOG_APPEND_TIME = 0x08


def _varint(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        low = zigzag & 0x7F
        zigzag >>= 7
        if zigzag:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _nullable(data: bytes | None) -> bytes:
    return _varint(-1) if data is None else _varint(len(data)) + data


def encode_batch(
    records: Sequence[RawRecord], *, base_offset: int = 0, attributes: int = 0
) -> bytes:
    """A v2 record batch (what a producer sends, base offset 0, or a broker stores)."""
    body = bytearray()
    for delta, (key, value, headers) in enumerate(records):
        record = bytearray(b"\x00")  # attributes
        record += _varint(delta * 10)  # timestamp delta
        record += _varint(delta)  # offset delta
        record += _nullable(key) + _nullable(value) + _varint(len(headers))
        for name, header_value in headers:
            record += _varint(len(name)) + name + _nullable(header_value)
        body += _varint(len(record)) + record
    if attributes & 0x07 == GZIP:
        body = bytearray(codec.gzip_encode(bytes(body)))
    last = max(len(records) - 1, 0)
    after_crc = struct.pack(
        ">hiqqqhii",
        attributes,
        last,  # last offset delta
        BASE_TIMESTAMP,
        BASE_TIMESTAMP + last * 10,  # max timestamp
        -1,  # producer id
        -1,  # producer epoch
        -1,  # base sequence
        len(records),
    ) + bytes(body)
    crc = calc_crc32c(after_crc)
    length = 4 + 1 + 4 + len(after_crc)  # leader epoch, magic, crc, the rest
    return struct.pack(">qiibI", base_offset, length, -1, 2, crc) + after_crc


# --- what aiokafka does with these batches (the assumptions `projector.kafka` needs) --


class _State:
    """A partition's fetch state, as aiokafka's `FetchResult` uses it."""

    def __init__(self, position: int) -> None:
        self.position = position
        self.paused = False
        self.moves: list[int] = []

    def consumed_to(self, position: int) -> None:
        self.moves.append(position)
        self.position = position


class _Assignment:
    active = True

    def __init__(self, state: _State) -> None:
        self._state = state

    def state_value(self, tp: TopicPartition) -> _State:
        return self._state


def aiokafka_records(data: bytes, start: int = 0) -> list[ConsumerRecord[bytes, bytes]]:
    """The records aiokafka's consumer hands out for a record set fetched at `start`."""
    return list(
        PartitionRecords(TP, MemoryRecords(data), None, start, None, None, True, READ_UNCOMMITTED)
    )


def fetch_result(data: bytes, position: int) -> tuple[FetchResult, _State]:
    state = _State(position)
    records = PartitionRecords(
        TP, MemoryRecords(data), None, position, None, None, True, READ_UNCOMMITTED
    )
    return FetchResult(
        TP, assignment=_Assignment(state), partition_records=records, backoff=0
    ), state


TP = TopicPartition("jobs.events", 3)
BAD_KEY = b"\xff\xfe-not-utf-8"


def good(n: int) -> RawRecord:
    return (f"key-{n}".encode(), f"value-{n}".encode(), [(b"kind", b"stage")])


BAD: RawRecord = (b"key-bad", b'{"a": 1}', [(b"kind", b"x"), (BAD_KEY, b"v"), (b"", None)])


def stream_with_a_bad_record() -> bytes:
    """Offsets 0-2 in one batch, then 3 (good), 4 (undecodable), 5 (good) in the next."""
    return encode_batch([good(0), good(1), good(2)]) + encode_batch(
        [good(3), BAD, good(5)], base_offset=3
    )


def test_aiokafka_fails_on_a_header_key_that_is_not_utf8() -> None:
    # If this starts to pass, aiokafka reads such records itself: the module may go.
    with pytest.raises(PARSE_ERRORS):
        aiokafka_records(stream_with_a_bad_record())


def test_aiokafka_fails_on_the_whole_batch_even_from_an_offset_after_the_bad_record() -> None:
    # Why the recovery hands over the rest of the batch and seeks past its end.
    with pytest.raises(PARSE_ERRORS):
        aiokafka_records(stream_with_a_bad_record(), start=5)


def test_a_failed_drain_leaves_the_position_where_it_was() -> None:
    result, state = fetch_result(stream_with_a_bad_record(), position=0)
    with pytest.raises(PARSE_ERRORS):
        result.getall(max_records=None)  # offsets 0-3 read, then the failure
    assert state.moves == [], "the position stays at 0: records 0-3 are fetched again"
    assert state.position == 0


def test_a_drain_of_one_record_fails_before_taking_any() -> None:
    # From offset 4 a broker sends the batch that holds it: offsets 3 (good), 4 (bad), 5.
    result, state = fetch_result(encode_batch([good(3), BAD, good(5)], base_offset=3), 4)
    with pytest.raises(PARSE_ERRORS):
        result.getall(max_records=1)
    assert state.moves == []


def test_a_drain_that_succeeds_moves_the_position_past_what_it_returned() -> None:
    result, state = fetch_result(encode_batch([good(0), good(1), good(2)]), position=0)
    assert [r.offset for r in result.getall(max_records=2)] == [0, 1]
    assert state.moves == [2]


# --- the lenient parser ----------------------------------------------------------------------


def built_by_aiokafka(base_offset: int, count: int, compression: int = 0) -> bytes:
    builder = DefaultRecordBatchBuilder(2, compression, 0, -1, -1, -1, 1 << 20)
    for n in range(count):
        headers: list[tuple[str, bytes | None]] = [("kind", b"stage"), ("é", None)]
        key = None if n % 3 == 0 else f"key-{n}".encode()
        value = None if n % 4 == 1 else f"value-{n}".encode() * (n + 1)
        builder.append(n, BASE_TIMESTAMP + n, key, value, headers if n % 2 else [])
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base_offset)  # as the broker stores it; not in the CRC
    return bytes(data)


def lenient_records(data: bytes, start: int = 0) -> list[ConsumerRecord[bytes, bytes]]:
    return [r for batch in parse_record_set(TP, data, start) for r in batch.records]


# gzip is in the standard library; snappy, lz4 and zstd need optional libraries that this
# project does not install, so aiokafka could not read such batches here either. The parser
# hands them to the same aiokafka codec functions as gzip.
CODECS = [pytest.param(0, id="none"), pytest.param(1, id="gzip")]


@pytest.mark.parametrize("compression", CODECS)
@pytest.mark.parametrize("start", [0, 5, 7, 9])
def test_the_parser_reads_valid_batches_as_aiokafka_does(compression: int, start: int) -> None:
    # What a broker sends from `start`: the batches from the one that holds it.
    sizes = [(base, count) for base, count in [(0, 7), (7, 5)] if base + count > start]
    data = b"".join(built_by_aiokafka(base, count, compression) for base, count in sizes)
    assert lenient_records(data, start) == aiokafka_records(data, start)
    batches = parse_record_set(TP, data, start)
    assert [b.following for b in batches] == [base + count for base, count in sizes]
    assert not any(b.undecodable for b in batches)


def test_the_test_encoder_writes_what_aiokafka_reads() -> None:
    data = encode_batch([good(0), (None, None, []), good(2)], base_offset=40, attributes=GZIP)
    assert lenient_records(data) == aiokafka_records(data)
    assert [r.offset for r in aiokafka_records(data)] == [40, 41, 42]


def test_log_append_time_is_read_as_aiokafka_reads_it() -> None:
    data = encode_batch([good(0), good(1)], attributes=LOG_APPEND_TIME)
    records = lenient_records(data)
    assert records == aiokafka_records(data)
    assert {(r.timestamp, r.timestamp_type) for r in records} == {(BASE_TIMESTAMP + 10, 1)}


def test_a_control_batch_is_skipped_and_a_partial_batch_left_for_the_next_fetch() -> None:
    control = encode_batch([(b"\x00\x00\x00\x00", b"", [])], base_offset=0, attributes=CONTROL)
    data = (
        control
        + encode_batch([good(1)], base_offset=1)
        + encode_batch([good(2)], base_offset=2)[:-3]
    )
    batches = parse_record_set(TP, data, 0)
    assert [(len(b.records), b.following) for b in batches] == [(0, 1), (1, 2)]
    assert lenient_records(data) == aiokafka_records(data)


def test_a_legacy_message_set_is_read_by_aiokafka_s_own_parser() -> None:
    builder = LegacyRecordBatchBuilder(1, 0, 1 << 20)
    builder.append(0, BASE_TIMESTAMP, b"k", b"v")
    data = bytes(builder.build())
    assert lenient_records(data) == aiokafka_records(data)
    assert parse_record_set(TP, data, 0)[0].following == 1


@pytest.mark.parametrize("attributes", [0, GZIP], ids=["none", "gzip"])
def test_an_undecodable_record_keeps_its_key_value_and_header_bytes(attributes: int) -> None:
    data = encode_batch([good(0), good(1), good(2)]) + encode_batch(
        [good(3), BAD, good(5)], base_offset=3, attributes=attributes
    )
    batches = parse_record_set(TP, data, 0)
    assert [b.undecodable for b in batches] == [False, True]
    records = lenient_records(data)
    assert [r.offset for r in records] == [0, 1, 2, 3, 4, 5]
    bad = records[4]
    assert type(bad) is UndecodableRecord
    assert [type(r) for r in records[:4] + records[5:]] == [ConsumerRecord] * 5
    assert (bad.key, bad.value) == (BAD[0], BAD[1])
    assert bad.headers == (("kind", b"x"), ("\\xff\\xfe-not-utf-8", b"v"), ("", None))
    assert (bad.serialized_key_size, bad.serialized_value_size) == (7, 8)
    assert bad.reason == (
        "headers: not decodable, the key of header 1 is not UTF-8 (invalid start byte at "
        "byte 0): b'\\xff\\xfe-not-utf-8', kept with its bytes escaped as \\xNN"
    )
    assert bad.reason.splitlines() == [bad.reason]
    # The others are what aiokafka hands out when the bad header key is made decodable.
    twin = (BAD[0], BAD[1], [(b"kind", b"x"), (b"decodable", b"v"), (b"", None)])
    decodable = encode_batch([good(0), good(1), good(2)]) + encode_batch(
        [good(3), twin, good(5)], base_offset=3, attributes=attributes
    )
    expected = aiokafka_records(decodable)
    assert records[:4] + records[5:] == expected[:4] + expected[5:]


def test_a_batch_stays_undecodable_from_an_offset_after_its_bad_record() -> None:
    batches = parse_record_set(TP, stream_with_a_bad_record(), 5)
    assert [([r.offset for r in b.records], b.undecodable) for b in batches] == [
        ([], False),
        ([5], True),
    ]


def test_a_corrupt_batch_is_an_error_not_a_record() -> None:
    data = bytearray(encode_batch([good(0)]))
    data[-1] ^= 0xFF
    with pytest.raises(CorruptRecordException, match="CRC"):
        parse_record_set(TP, bytes(data), 0)
    truncated = encode_batch([(b"k", b"v" * 10, [])])
    shorter = bytearray(truncated)
    shorter[_RECORDS_AT] = 0x04  # the record's length: 2 bytes, far fewer than it holds
    struct.pack_into(">I", shorter, 17, calc_crc32c(bytes(shorter[21:])))
    with pytest.raises(CorruptRecordException, match="cannot be read"):
        parse_record_set(TP, bytes(shorter), 0)


_RECORDS_AT = 61  # the v2 batch header's size


def test_validation_turns_an_undecodable_record_into_its_reason() -> None:
    value = encode_event(event(seq=1))
    data = encode_batch([(b"key", value, [(BAD_KEY, b"v")]), (b"key", value, [])])
    bad, same_but_decodable = lenient_records(data)
    assert type(bad) is UndecodableRecord
    assert parse(replace(same_but_decodable, offset=0), STORAGE) == fields_of(
        JobEvent.model_validate_json(bad.value)
    )
    assert parse(bad, STORAGE) == Poison(bad.reason), (
        "an event, but for a header key breaking the protocol"
    )


# --- the consumer and FastStream ------------------------------------------------------------


async def test_faststream_subscribers_build_lenient_consumers() -> None:
    broker = consume_leniently(KafkaBroker("127.0.0.1:1", consumer_only=True))
    subscriber = broker.subscriber("jobs.events", group_id="g", batch=True)
    await broker.connect()  # consumer-only: builds the consumer factory, opens nothing
    builder = broker.config.broker_config.builder
    assert isinstance(builder, partial), builder
    assert builder.func is LenientConsumer
    assert builder.keywords["bootstrap_servers"] == ["127.0.0.1:1"]
    assert subscriber.builder is builder
    # Every connect rebuilds the factory; it stays lenient.
    await broker.config.broker_config.connect(bootstrap_servers="127.0.0.1:2")
    rebuilt = broker.config.broker_config.builder
    assert isinstance(rebuilt, partial)
    assert rebuilt.func is LenientConsumer
    assert rebuilt.keywords["bootstrap_servers"] == "127.0.0.1:2"


def test_an_unexpected_consumer_factory_fails_loudly() -> None:
    lenient = lenient_builder(partial(AIOKafkaConsumer, a=1))
    assert isinstance(lenient, partial)
    assert (lenient.func, lenient.keywords) == (LenientConsumer, {"a": 1})
    with pytest.raises(TypeError, match="FastStream"):
        lenient_builder(AIOKafkaConsumer)


def test_a_lenient_consumer_reads_uncommitted_only() -> None:
    with pytest.raises(ValueError, match="read_uncommitted"):
        LenientConsumer(isolation_level="read_committed")
