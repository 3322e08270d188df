"""The harness gives real parts: a Kafka-protocol broker, Redis and S3 that really work."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from contracts.events import JobEvent
from contracts.publisher import JobEventPublisher
from devstack import Stack, s3_client
from devstack.data import event
from tests.integration.support import consume_all

pytestmark = pytest.mark.integration


async def test_broker_delivers_what_was_produced_to_a_consumer_group(
    kafka_bootstrap: str, topic: str
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for n in range(20):
            await producer.send_and_wait(topic, f"value-{n}".encode(), key=f"k{n}".encode())
    finally:
        await producer.stop()
    records = await consume_all(kafka_bootstrap, topic, expected=20)
    assert sorted(r.value for r in records) == sorted(f"value-{n}".encode() for n in range(20))


async def test_publisher_keys_by_job_id_with_headers_and_valid_bytes(
    kafka_bootstrap: str, topic: str
) -> None:
    sent = [event(seq=n, kind="stage") for n in (1, 2, 3)]
    async with JobEventPublisher(kafka_bootstrap, topic, idempotent=False) as publisher:
        await publisher.publish(sent[0], traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")
        await publisher.publish_many(sent[1:])
    records = await consume_all(kafka_bootstrap, topic, expected=3)
    assert {r.key for r in records} == {sent[0].job_id.encode()}
    assert len({r.partition for r in records}) == 1, "one job's events share a partition"
    assert [r.offset for r in records] == sorted(r.offset for r in records)
    received = [JobEvent.model_validate_json(r.value) for r in records]
    assert received == sent
    headers = dict(records[0].headers)
    assert headers["kind"] == b"stage"
    assert headers["tenant_id"] == sent[0].tenant_id.encode()
    assert headers["traceparent"].startswith(b"00-")


async def test_publisher_refuses_an_event_that_breaks_the_contract(
    kafka_bootstrap: str, topic: str
) -> None:
    broken = event(seq=1).model_copy(update={"seq": 0})  # bypasses validation on purpose
    async with JobEventPublisher(kafka_bootstrap, topic, idempotent=False) as publisher:
        with pytest.raises(ValueError, match="seq"):
            await publisher.publish(broken)


async def test_redis_stores_and_returns_a_hash(redis: Redis, unique: str) -> None:
    key = f"probe:{unique}"
    await redis.hset(key, mapping={"a": "1", "b": "ü"})
    assert await redis.hgetall(key) == {b"a": b"1", b"b": "ü".encode()}
    await redis.delete(key)


async def test_s3_server_returns_the_object_put_and_serves_presigned_gets(
    stack: Stack, bucket: str, unique: str
) -> None:
    s3 = s3_client(stack)
    key = f"{unique}/look 1+ü.png"
    s3.put_object(Bucket=bucket, Key=key, Body=b"image-bytes")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"image-bytes"
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == b"image-bytes"


async def test_consumer_group_offsets_are_committed_and_readable(
    kafka_bootstrap: str, topic: str, unique: str
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    await producer.send_and_wait(topic, b"x", key=b"k", partition=0)
    await producer.stop()
    group = f"g-{unique}"
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        batch = {}
        for _ in range(40):
            batch = await consumer.getmany(timeout_ms=500)
            if batch:
                break
        assert batch, "the record was delivered"
        await consumer.commit()
        (tp,) = batch
        await asyncio.sleep(0)
        assert await consumer.committed(tp) == 1
    finally:
        await consumer.stop()
