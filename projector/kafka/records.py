"""Kafka record sets read leniently: records aiokafka cannot decode become `UndecodableRecord`s.

The Kafka protocol types a header key as a String, but a broker stores whatever bytes a producer
wrote, and aiokafka (0.14, as read and measured) decodes header keys strictly while it unpacks a
fetched batch: its C extension raises `UnicodeDecodeError`, its pure-Python parser
`CorruptRecordException`. `parse_record_set` reads the documented v2 record batch format (and
v0/v1 through aiokafka's own parser) without depending on aiokafka's parser, and hands over a
record whose header key is not UTF-8 as an `UndecodableRecord` (key and value as written, the
header key's bytes escaped, the reason): `projector.intake.parse` makes it poison.
`projector.kafka.lenient` fetches the bytes and puts this parser behind aiokafka's `getmany`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import aiokafka.errors as errors
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka import codec as codecs
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c

from projector.dead_letter import one_line

Record: TypeAlias = ConsumerRecord[Any, Any]


@dataclass
class UndecodableRecord(ConsumerRecord[bytes, bytes]):  # type: ignore[misc]  # aiokafka is untyped
    """A record aiokafka could not decode, as written but for its header keys, and why."""

    reason: str = ""


# The v2 record batch header, up to the records (the Kafka protocol's RecordBatch).
_BATCH = struct.Struct(">qiibIhiqqqhii")
_LOG_OVERHEAD = 12  # base offset (8) and batch length (4), not counted in the length
_MAGIC_AT = 16  # base offset (8), length (4), partition leader epoch (4)
_CRC_FROM = 21  # the CRC covers everything from the attributes on
_CODEC_MASK = 0x07
_LOG_APPEND_TIME = 0x08
_CONTROL = 0x20
_DECOMPRESS: dict[int, Callable[[bytes], bytes]] = {
    1: codecs.gzip_decode,
    2: codecs.snappy_decode,
    3: codecs.lz4_decode,
    4: codecs.zstd_decode,
}


@dataclass
class ParsedBatch:
    """One record batch of a record set, read leniently."""

    records: list[Record]  # those at offsets from the start asked for
    following: int  # the offset after the batch
    # A record of the batch, at any offset, is undecodable: aiokafka fails on the whole
    # batch, also when it is asked for an offset after that record.
    undecodable: bool


def parse_record_set(tp: TopicPartition, data: bytes, start: int) -> list[ParsedBatch]:
    """The complete batches of a record set (the bytes of one partition in a fetch response;
    a partial batch at the end is left for the next fetch), with their records at offsets
    from `start`. Records are decoded as aiokafka decodes them (control batches skipped, as
    with `read_uncommitted`), except that a header key that is not UTF-8 makes an
    `UndecodableRecord`. Raises `CorruptRecordException` for a batch that is corrupt (bad
    CRC, bad structure, unknown compression)."""
    batches: list[ParsedBatch] = []
    pos = 0
    while len(data) - pos > _MAGIC_AT:
        (length,) = struct.unpack_from(">i", data, pos + 8)
        end = pos + _LOG_OVERHEAD + length
        if length < _MAGIC_AT + 1 - _LOG_OVERHEAD or end > len(data):
            break
        batch = data[pos:end]
        pos = end
        if batch[_MAGIC_AT] < 2:
            batches.append(_legacy_batch(tp, batch, start))
        else:
            batches.append(_batch_v2(tp, batch, start))
    return batches


def _batch_v2(tp: TopicPartition, batch: bytes, start: int) -> ParsedBatch:
    if len(batch) < _BATCH.size:
        raise errors.CorruptRecordException(f"{tp}: record batch of {len(batch)} bytes")
    (
        base_offset,
        _length,
        _epoch,
        _magic,
        crc,
        attributes,
        last_offset_delta,
        first_timestamp,
        max_timestamp,
        _producer_id,
        _producer_epoch,
        _base_sequence,
        count,
    ) = _BATCH.unpack_from(batch)
    if calc_crc32c(batch[_CRC_FROM:]) != crc:
        raise errors.CorruptRecordException(f"{tp}: invalid CRC in the batch at {base_offset}")
    parsed = ParsedBatch([], base_offset + last_offset_delta + 1, undecodable=False)
    if attributes & _CONTROL:
        return parsed
    body = batch[_BATCH.size :]
    codec = attributes & _CODEC_MASK
    log_append_time = bool(attributes & _LOG_APPEND_TIME)
    try:
        if codec:
            body = _DECOMPRESS[codec](body)
        _records_v2(
            tp,
            body,
            count,
            base_offset,
            max_timestamp if log_append_time else first_timestamp,
            log_append_time,
            start,
            parsed,
        )
    except Exception as error:  # unknown codec, bad compressed data, bad record structure
        raise errors.CorruptRecordException(
            f"{tp}: the batch at {base_offset} cannot be read: {type(error).__name__}: {error}"
        ) from error
    return parsed


def _records_v2(
    tp: TopicPartition,
    body: bytes,
    count: int,
    base_offset: int,
    timestamp: int,
    log_append_time: bool,
    start: int,
    into: ParsedBatch,
) -> None:
    timestamp_type = 1 if log_append_time else 0
    pos = 0
    for _ in range(count):
        length, pos = _varint(body, pos)
        end = pos + length
        pos += 1  # attributes: none defined
        timestamp_delta, pos = _varint(body, pos)
        offset_delta, pos = _varint(body, pos)
        key, pos = _nullable_bytes(body, pos)
        value, pos = _nullable_bytes(body, pos)
        header_count, pos = _varint(body, pos)
        if header_count < 0:
            raise ValueError(f"{header_count} headers")
        headers: list[tuple[str, bytes | None]] = []
        problems: list[str] = []
        for index in range(header_count):
            name, pos = _nullable_bytes(body, pos)
            if name is None:
                raise ValueError("a header without a key")
            header_value, pos = _nullable_bytes(body, pos)
            headers.append((_header_key(name, index, problems), header_value))
        if pos != end:
            raise ValueError(f"record of {length} bytes, {pos - end + length} read")
        into.undecodable = into.undecodable or bool(problems)
        offset = base_offset + offset_delta
        if offset < start:
            continue
        fields = (
            tp.topic,
            tp.partition,
            offset,
            timestamp if log_append_time else timestamp + timestamp_delta,
            timestamp_type,
            key,
            value,
            None,  # checksum: none per record in v2
            -1 if key is None else len(key),
            -1 if value is None else len(value),
            tuple(headers),
        )
        if problems:
            reason = "headers: not decodable, " + "; ".join(problems)
            into.records.append(UndecodableRecord(*fields, reason=one_line(reason)))
        else:
            into.records.append(ConsumerRecord(*fields))


def _header_key(name: bytes, index: int, problems: list[str]) -> str:
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError as error:
        problems.append(
            f"the key of header {index} is not UTF-8 ({error.reason} at byte {error.start}): "
            f"{name!r}, kept with its bytes escaped as \\xNN"
        )
        return name.decode("utf-8", "backslashreplace")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint (or varlong) at `pos`, and the position after it."""
    shift = value = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")


def _nullable_bytes(data: bytes, pos: int) -> tuple[bytes | None, int]:
    size, pos = _varint(data, pos)
    if size < 0:
        return None, pos
    if pos + size > len(data):
        raise ValueError(f"{size} bytes past the end of the batch")
    return data[pos : pos + size], pos + size


def _legacy_batch(tp: TopicPartition, batch: bytes, start: int) -> ParsedBatch:
    """Message format v0/v1 (no headers, so nothing undecodable): aiokafka's own parser."""
    parsed = ParsedBatch([], start, undecodable=False)
    legacy = MemoryRecords(batch).next_batch()
    for record in legacy or ():
        parsed.following = max(parsed.following, record.offset + 1)
        if record.offset < start:
            continue
        key, value = record.key, record.value
        parsed.records.append(
            ConsumerRecord(
                tp.topic,
                tp.partition,
                record.offset,
                record.timestamp,
                record.timestamp_type,
                key,
                value,
                record.checksum,
                -1 if key is None else len(key),
                -1 if value is None else len(value),
                (),
            )
        )
    return parsed
