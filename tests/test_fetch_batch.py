"""The worker's fetch (``rater.shell.fetching.fetch_batch``) on a real broker: a batch is
filled from several small takes, and the takes lose, repeat and reorder nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from rater.shell.fetching import fetch_batch

RECORDS = 3000


async def _fill(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, b"%d" % n, partition=n % 2) for n in range(RECORDS)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _read(bootstrap: str, topic: str) -> list[dict[TopicPartition, list[Any]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, max_poll_records=2000)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        batches = []
        seen = 0
        while seen < RECORDS:
            batch = await fetch_batch(consumer, limit=1000, take=7)
            assert sum(map(len, batch.values())) <= 1000
            seen += sum(map(len, batch.values()))
            batches.append(batch)
        assert await fetch_batch(consumer, limit=1000, take=7) == {}  # nothing more: empty after its wait
        return batches
    finally:
        await consumer.stop()


def test_a_batch_fills_from_several_takes_and_every_record_comes_once_in_order(kafka_bootstrap: str,
                                                                               topic_prefix: str) -> None:
    topic = f"{topic_prefix}fetch"
    asyncio.run(_fill(kafka_bootstrap, topic))
    batches = asyncio.run(_read(kafka_bootstrap, topic))
    assert max(sum(map(len, batch.values())) for batch in batches) > 7, "no batch took more than one take"
    for p in (0, 1):
        offsets = [m.offset for batch in batches for m in batch.get(TopicPartition(topic, p), [])]
        values = [int(m.value) for batch in batches for m in batch.get(TopicPartition(topic, p), [])]
        assert offsets == list(range(RECORDS // 2))
        assert values == list(range(p, RECORDS, 2))
