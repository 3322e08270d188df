"""aiokafka's `getmany`, handing over records it cannot decode instead of stalling the partition.

The Kafka protocol types a header key as a String, but a broker stores whatever bytes a producer
wrote, and aiokafka (0.14, as read and measured) decodes header keys strictly while it unpacks a
fetched batch inside `getmany`: its C extension raises `UnicodeDecodeError`, its pure-Python
parser `CorruptRecordException`. Two things then go wrong:

- the partition stalls: aiokafka leaves its position before the batch and fails on it on
  every later fetch; FastStream's consume loop restarts on each failure (a tight loop of log
  lines) or, for a `KafkaError`, sleeps 5 s and fails again, forever;
- records are lost: `getmany` drains partition after partition into one result, and advances
  each drained partition's position as it goes. When a later partition raises, the records
  already drained from the earlier ones are dropped with the exception, while their positions
  stay advanced: the next `getmany` starts after them. A consumer that commits what it
  processed commits past them (seen against the local broker: partition 0 at position 5
  after a failed call that returned nothing).

What this module does instead (`getmany`, and `LenientConsumer` built on it):

1. It drains one partition per call to aiokafka. A call that raises has then drained nothing
   but the failing partition, and aiokafka has left that partition's position where the call
   started (`FetchResult.getall` moves it only once it returns). Only the first call, which
   waits for data, spans several partitions; it asks for one record, so it either returns
   that record or fails before draining anything.
2. On the error, it fetches the failing partition from its position with a Fetch request of
   its own (through the consumer's client) and parses the record set with the lenient parser
   (`projector.kafka.records`). It hands over the records from the position to the end of the
   first batch holding an undecodable record, and seeks past that batch: aiokafka parses a
   whole batch even when asked for an offset inside it, so it would fail again on the records
   after the undecodable one. That one comes as an `UndecodableRecord` (key and value as
   written, header keys that are not UTF-8 shown with their bytes escaped, the reason); the
   projector's parse dead-letters it (`projector.intake.parse`), `replay build` counts it as
   poison, and the commit moves past it like past any poison record.
3. An error it cannot recover from is raised only while nothing is drained; otherwise the
   records drained so far are returned and the error is raised by the next call, as aiokafka
   does for fetch errors.

Other ways, and why not: catching the error around aiokafka's own `getmany` (a wrapper or a
subclass that retries, or FastStream's consume loop) comes too late, as the records drained
before the error are already lost; seeking back to offsets tracked from what was handed out
breaks on rebalances and resets, where aiokafka moves positions by itself; replacing
aiokafka's record parser means patching its fetcher internals and its C extension. What this
depends on (the failure itself, the fetcher's position rule in 1, whole-batch parsing in 2,
the Fetch request and response shapes of aiokafka 0.14, the consumer's `_client`) is pinned
by the tests in `tests/unit/test_undecodable.py` and
`tests/integration/test_undecodable_records.py`: an aiokafka upgrade that changes it fails
them.

FastStream builds its consumers with `partial(aiokafka.AIOKafkaConsumer, ...)`, rebuilt on
every connect, and takes no consumer class; `consume_leniently` re-points that partial at
`LenientConsumer` right after each connect. Only `read_uncommitted` consumers are supported
(the lenient fetch does not filter aborted transactions).

`LenientConsumer` also keeps an empty fetch from costing a sleep (`idle_wait_ms`). FastStream
0.7's batch subscriber calls `getmany(timeout_ms=batch_timeout_ms)` and, when that returns
nothing, sleeps another `batch_timeout_ms` before it asks again: a record arriving during the
sleep waits for it, although aiokafka's fetcher has it. With `idle_wait_ms`, a `getmany` that
found nothing asks again, for up to `idle_wait_ms` in all, so FastStream sleeps only after
that long without records. aiokafka's `getmany` returns as soon as its fetcher has records,
so waiting longer costs no latency; stopping is not held up either (FastStream cancels its
consume loop, aiokafka's `stop` ends a waiting `getmany`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias

import aiokafka.errors as errors
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.protocol.fetch import FetchRequest

from projector.kafka.records import Record, UndecodableRecord, parse_record_set

if TYPE_CHECKING:
    from faststream.kafka import KafkaBroker

log = logging.getLogger("projector.kafka.lenient")

Fetched: TypeAlias = dict[TopicPartition, list[Record]]


# What aiokafka raises when it cannot decode a record (C extension, pure Python).
PARSE_ERRORS = (UnicodeDecodeError, errors.CorruptRecordException)

# Bytes asked for in the lenient fetch: aiokafka's default per partition. A broker returns at
# least the first batch at the offset even when it is larger (KIP-74).
FETCH_BYTES = 1_048_576
READ_UNCOMMITTED = 0
# Not 0: Tansu 0.6 answers a Fetch with max_wait_time=0 with no partitions at all.
FETCH_WAIT_MS = 100
# How long the recovery waits for a partition's position after a reset or an assignment.
POSITION_WAIT_SECONDS = 5.0
# How long `LenientConsumer.getone` waits per round.
GETONE_WAIT_MS = 1_000


# --- the lenient fetch ---------------------------------------------------------------------


async def fetch_record_set(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> bytes:
    """The record set of `tp` from `offset`, as the partition leader sends it."""
    client = consumer._client  # no public way to the raw bytes
    leader = client.cluster.leader_for_partition(tp)
    if leader is None or leader < 0:
        client.force_metadata_update()
        raise errors.LeaderNotAvailableError(f"no leader known for {tp}")
    request = FetchRequest(
        FETCH_WAIT_MS,
        1,  # min bytes: the records are there (they just failed to decode), no wait
        FETCH_BYTES,
        READ_UNCOMMITTED,
        [(tp.topic, [(tp.partition, offset, FETCH_BYTES)])],
    )
    response = await client.send(leader, request)
    for topic, partitions in response.topics:
        for partition, error_code, _highwater, *rest in partitions:
            if (topic, partition) != (tp.topic, tp.partition):
                continue
            error = errors.for_code(error_code)
            if error is not errors.NoError:
                raise error(f"fetching {tp} at {offset}")
            return bytes(rest[-1] or b"")
    raise errors.KafkaError(f"the fetch response holds no data for {tp}")


# --- getmany -------------------------------------------------------------------------------

# An error met after records were drained, raised by the consumer's next `getmany`.
_pending: weakref.WeakKeyDictionary[AIOKafkaConsumer, BaseException] = weakref.WeakKeyDictionary()


async def getmany(
    consumer: AIOKafkaConsumer,
    *partitions: TopicPartition,
    timeout_ms: int = 0,
    max_records: int | None = None,
) -> Fetched:
    """`consumer.getmany(*partitions, timeout_ms=..., max_records=...)` of aiokafka, which
    hands over records it cannot decode as `UndecodableRecord`s and loses none (see the module
    documentation). Works on any `AIOKafkaConsumer` with `read_uncommitted`."""
    pending = _pending.pop(consumer, None)
    if pending is not None:
        raise pending
    base = AIOKafkaConsumer.getmany  # aiokafka's own, also when `consumer` is a LenientConsumer
    got: Fetched = {}
    try:
        first: Fetched = await base(consumer, *partitions, timeout_ms=timeout_ms, max_records=1)
    except PARSE_ERRORS as error:
        # Nothing is drained: a call for one record fails before it has one.
        wanted = list(partitions) or sorted(consumer.assignment())
        await _recover(consumer, wanted, got, max_records, error)
        return got
    if not first:
        return got
    got.update(first)
    left = None if max_records is None else max_records - 1
    for tp in _starting_with(next(iter(first)), list(partitions) or sorted(consumer.assignment())):
        if left is not None and left <= 0:
            break
        try:
            part: Fetched = await base(consumer, tp, timeout_ms=0, max_records=left)
        except PARSE_ERRORS as error:
            # aiokafka left `tp` where this call started; `got` holds what came before.
            left = await _recover(consumer, [tp], got, left, error)
            continue
        except errors.KafkaError as error:  # a fetch error of `tp`: the next call raises it
            _pending[consumer] = error
            break
        for records in part.values():
            got.setdefault(tp, []).extend(records)
            if left is not None:
                left -= len(records)
    return got


def _starting_with(first: TopicPartition, wanted: list[TopicPartition]) -> list[TopicPartition]:
    """`first` (the partition aiokafka served first), then the others in turn after it."""
    if first not in wanted:
        return [first, *wanted]
    at = wanted.index(first)
    return [*wanted[at:], *wanted[:at]]


async def _recover(
    consumer: AIOKafkaConsumer,
    candidates: Sequence[TopicPartition],
    got: Fetched,
    left: int | None,
    error: BaseException,
) -> int | None:
    """Read the failing partition among `candidates` leniently (`_read_leniently`) into `got`.
    Returns how many records may still be added. Raises only while `got` is empty: otherwise
    a failure is kept for the next call."""
    moved = False
    failure: BaseException | None = None
    for tp in candidates:
        try:
            records = await _read_leniently(consumer, tp, several=len(candidates) > 1, left=left)
        except errors.KafkaError as read_error:
            failure = read_error
            continue
        except Exception as read_error:  # a bug here must not lose `got`; and FastStream backs
            # off on a KafkaError, but restarts at once (a tight loop) on anything else
            failure = errors.KafkaError(f"reading {tp} leniently failed: {read_error!r}")
            failure.__cause__ = read_error
            continue
        if records is None:
            continue
        moved = True
        if records:
            got.setdefault(tp, []).extend(records)
            if left is not None:
                left -= len(records)
        if left is not None and left <= 0:
            break
    if moved:
        if failure is not None:
            _pending[consumer] = failure
        return left
    cause = failure or errors.CorruptRecordException(
        f"a record aiokafka cannot decode was not found again ({type(error).__name__}: {error})"
    )
    if got:
        _pending[consumer] = cause
        return left
    raise cause from error


async def _read_leniently(
    consumer: AIOKafkaConsumer, tp: TopicPartition, *, several: bool, left: int | None
) -> list[Record] | None:
    """Hand over what aiokafka cannot: the records of `tp` from its position to the end of
    the first batch holding an undecodable record (aiokafka fails on the whole batch, whatever
    the offset asked for), or, when there is none in reach, all the records fetched; and move
    the consumer past them. None when `tp` is not the failing partition (with `several`
    candidates: it has no such batch) or was sought meanwhile."""
    position = await _position(consumer, tp)
    if position is None:
        return None
    batches = parse_record_set(tp, await fetch_record_set(consumer, tp, position), position)
    cut = next((i for i, batch in enumerate(batches) if batch.undecodable), None)
    if cut is None and several:
        return None  # aiokafka serves this one as usual
    chosen = batches if cut is None else batches[: cut + 1]
    records = [record for batch in chosen for record in batch.records]
    following = chosen[-1].following if chosen else position
    if left is not None and len(records) > left:
        records = records[:left]
        following = records[-1].offset + 1  # the rest comes with the next call
    if following <= position:
        raise errors.CorruptRecordException(f"{tp}: no complete record batch at {position}")
    # The caller may have sought meanwhile (during the fetch): its seek wins. Awaited
    # directly, `position` returns without suspending when the position is valid, so no
    # seek can come between this check and ours.
    try:
        if await consumer.position(tp) != position:
            return None
    except errors.IllegalStateError:  # revoked meanwhile: its new owner reads it
        return None
    consumer.seek(tp, following)
    for record in records:
        if type(record) is UndecodableRecord:
            log.info(
                "partition %s offset %s: a record aiokafka cannot decode, read leniently",
                record.partition,
                record.offset,
                extra={"partition": record.partition, "offset": record.offset},
            )
    return records


async def _position(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """The partition's position; None when it is not assigned or has none yet (then it has
    nothing fetched, so it is not the failing partition)."""
    try:
        position: int = await asyncio.wait_for(consumer.position(tp), POSITION_WAIT_SECONDS)
    except (TimeoutError, errors.IllegalStateError):
        return None
    return position


# --- the consumer and the FastStream hook --------------------------------------------------


class LenientConsumer(AIOKafkaConsumer):  # type: ignore[misc]  # aiokafka is untyped
    """An `AIOKafkaConsumer` whose `getmany` and `getone` hand over records it cannot decode
    as `UndecodableRecord`s and lose none (the module's `getmany`). With `idle_wait_ms`, a
    `getmany` given a timeout that finds nothing keeps waiting up to that long in all."""

    def __init__(self, *topics: str, idle_wait_ms: int = 0, **options: Any) -> None:
        if options.get("isolation_level", "read_uncommitted") != "read_uncommitted":
            raise ValueError("LenientConsumer reads with isolation_level='read_uncommitted' only")
        if idle_wait_ms < 0:
            raise ValueError(f"idle_wait_ms must be 0 or more, not {idle_wait_ms}")
        super().__init__(*topics, **options)
        self._idle_wait = idle_wait_ms / 1000

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Fetched:
        """`getmany` of aiokafka (`_getmany_once`); while it returns nothing, called again
        with the same timeout until `idle_wait_ms` have passed since this call began. A call
        without a timeout (0) only takes what is already fetched, as aiokafka's does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._idle_wait
        while True:
            fetched = await self._getmany_once(
                *partitions, timeout_ms=timeout_ms, max_records=max_records
            )
            if fetched or timeout_ms <= 0:
                return fetched
            left_ms = int((deadline - loop.time()) * 1000)
            if left_ms <= 0:
                return fetched
            timeout_ms = min(timeout_ms, left_ms)

    async def _getmany_once(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Fetched:
        """aiokafka's own `getmany` while every record decodes, the common case, at its full
        speed (draining one partition per call, as the module's `getmany` does, cost the
        projector a third of its throughput).
        When a record does not decode, every partition goes back to where this call found
        it - which brings back the records aiokafka drained and dropped with the error - and
        the module's `getmany` takes the same records again, one partition at a time."""
        if self in _pending:
            return await getmany(self, *partitions, timeout_ms=timeout_ms, max_records=max_records)
        found: dict[TopicPartition, int] = {}
        for tp in partitions or self.assignment():
            with contextlib.suppress(errors.IllegalStateError):  # revoked meanwhile
                found[tp] = await self.position(tp)
        try:
            fetched: Fetched = await super().getmany(
                *partitions, timeout_ms=timeout_ms, max_records=max_records
            )
        except PARSE_ERRORS:
            for tp, offset in found.items():
                with contextlib.suppress(errors.IllegalStateError):
                    self.seek(tp, offset)
            return await getmany(self, *partitions, timeout_ms=timeout_ms, max_records=max_records)
        return fetched

    async def getone(self, *partitions: TopicPartition) -> Record:
        while True:
            for records in (
                await self.getmany(*partitions, timeout_ms=GETONE_WAIT_MS, max_records=1)
            ).values():
                return records[0]


def lenient_builder(
    builder: Callable[..., AIOKafkaConsumer], idle_wait_ms: int = 0
) -> Callable[..., AIOKafkaConsumer]:
    """FastStream's consumer builder, building a `LenientConsumer` with the same options
    (and `idle_wait_ms`)."""
    if isinstance(builder, partial) and builder.func is LenientConsumer:
        return builder
    if not (isinstance(builder, partial) and builder.func is AIOKafkaConsumer):
        # A FastStream upgrade changed how it builds consumers: fail at start, not silently.
        raise TypeError(f"expected partial(AIOKafkaConsumer, ...) from FastStream: {builder!r}")
    options = builder.keywords | ({"idle_wait_ms": idle_wait_ms} if idle_wait_ms else {})
    return partial(LenientConsumer, *builder.args, **options)


def consume_leniently(broker: KafkaBroker, idle_wait_ms: int = 0) -> KafkaBroker:
    """Make the broker's subscribers consume with `LenientConsumer` (waiting up to
    `idle_wait_ms` per `getmany` while nothing comes). FastStream's
    `KafkaBrokerConfig.connect` sets `builder = partial(aiokafka.AIOKafkaConsumer, ...)` on
    every connect, and subscribers build their consumer with it once connected."""
    config = broker.config.broker_config
    connect = config.connect

    async def connect_leniently(**connection: Any) -> None:
        await connect(**connection)
        config.builder = lenient_builder(config.builder, idle_wait_ms)

    config.connect = connect_leniently  # type: ignore[method-assign]  # on this instance only
    return broker
