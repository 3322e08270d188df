"""`LenientConsumer`'s idle wait: a `getmany` that finds nothing asks again, up to
`idle_wait_ms` in all, instead of handing FastStream an empty result (after which FastStream
sleeps a whole batch timeout while records may arrive). aiokafka's own `getmany` is replaced
by a fake here; tests/integration/test_idle_wait.py runs it against the broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from typing import Any, Protocol

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream.kafka import KafkaBroker

from projector.kafka.lenient import LenientConsumer, consume_leniently, lenient_builder

TP = TopicPartition("jobs.events", 0)


class Fetches:
    """Stands for aiokafka's `getmany`: waits its timeout and returns nothing, until the
    call numbered `records_on` (from 1), which returns a record at once."""

    def __init__(self, records_on: int | None = None) -> None:
        self.records_on = records_on
        self.timeouts: list[int] = []

    async def __call__(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        self.timeouts.append(timeout_ms)
        if len(self.timeouts) == self.records_on:
            return {TP: ["a record"]}
        await asyncio.sleep(timeout_ms / 1000)
        return {}


class Consumers(Protocol):
    def __call__(self, fetches: Fetches, idle_wait_ms: int) -> LenientConsumer: ...


@pytest.fixture
async def consumer() -> AsyncIterator[Consumers]:
    """Makes consumers that are never started (their fetches are faked), stopped after."""
    made: list[LenientConsumer] = []

    def make(fetches: Fetches, idle_wait_ms: int) -> LenientConsumer:
        lenient = LenientConsumer(bootstrap_servers="127.0.0.1:1", idle_wait_ms=idle_wait_ms)
        lenient._getmany_once = fetches  # type: ignore[method-assign]  # aiokafka's, faked
        made.append(lenient)
        return lenient

    yield make
    for lenient in made:
        await lenient.stop()


async def test_an_empty_fetch_is_asked_again_until_the_idle_wait_has_passed(
    consumer: Consumers,
) -> None:
    fetches = Fetches()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await consumer(fetches, idle_wait_ms=200).getmany(timeout_ms=20) == {}
    took = loop.time() - started
    assert took >= 0.199  # the bound, to the millisecond the timeouts are counted in
    assert took < 1.0  # ... and not much past it (each fetch asks for what is left at most)
    assert len(fetches.timeouts) >= 2
    assert fetches.timeouts[0] == 20
    assert sum(fetches.timeouts) <= 200


async def test_records_end_the_wait_as_soon_as_a_fetch_returns_them(consumer: Consumers) -> None:
    fetches = Fetches(records_on=3)
    fetched = await consumer(fetches, idle_wait_ms=10_000).getmany(timeout_ms=20)
    assert fetched == {TP: ["a record"]}
    assert len(fetches.timeouts) == 3


async def test_without_an_idle_wait_or_a_timeout_one_fetch_answers(consumer: Consumers) -> None:
    """The default (0) is aiokafka's behaviour; a call without a timeout only takes what is
    already fetched, whatever the idle wait."""
    fetches = Fetches()
    assert await consumer(fetches, idle_wait_ms=0).getmany(timeout_ms=20) == {}
    assert fetches.timeouts == [20]
    fetches = Fetches()
    assert await consumer(fetches, idle_wait_ms=1_000).getmany(timeout_ms=0) == {}
    assert fetches.timeouts == [0]


async def test_a_waiting_getmany_is_cancelled_at_once(consumer: Consumers) -> None:
    """FastStream stops its consume loop by cancelling it: the wait does not hold it up."""
    fetches = Fetches()
    waiting = asyncio.create_task(consumer(fetches, idle_wait_ms=10_000).getmany(timeout_ms=20))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 0.1)


def test_the_idle_wait_cannot_be_negative() -> None:
    with pytest.raises(ValueError, match="idle_wait_ms"):
        LenientConsumer(idle_wait_ms=-1)


async def test_the_projector_s_consumers_get_the_idle_wait() -> None:
    broker = consume_leniently(KafkaBroker("127.0.0.1:1", consumer_only=True), idle_wait_ms=750)
    broker.subscriber("jobs.events", group_id="g", batch=True)
    await broker.connect()  # consumer-only: builds the consumer factory, opens nothing
    builder = broker.config.broker_config.builder
    assert isinstance(builder, partial)
    assert (builder.func, builder.keywords["idle_wait_ms"]) == (LenientConsumer, 750)
    plain = lenient_builder(partial(AIOKafkaConsumer, a=1))
    assert isinstance(plain, partial)
    assert plain.keywords == {"a": 1}  # no idle wait asked: aiokafka's behaviour
