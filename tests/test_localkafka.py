"""The local Kafka harness: real brokers from the Maven jars, single node and 3-node."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from rater.localkafka import LocalKafka, describe_brokers

pytestmark = pytest.mark.kafka


async def _roundtrip(bootstrap: str, replication: int) -> tuple[list[bytes], int]:
    topic = f"harness-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 2, replication)])
    # Metadata reaches every broker a moment after the create returns: wait until the
    # answering broker knows both partitions instead of reading a half-propagated view.
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        [described] = await admin.describe_topics([topic])
        parts = described["partitions"]
        if not described.get("error_code") and len(parts) == 2 and all(p["leader"] >= 0 for p in parts):
            break
        assert asyncio.get_running_loop().time() < deadline, f"topic {topic} never fully described: {described}"
        await asyncio.sleep(0.1)
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", transactional_id=f"tx-{topic}")
    await producer.start()
    async with producer.transaction():
        for i in range(3):
            await producer.send(topic, f"m{i}".encode(), key=b"k")
    await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                isolation_level="read_committed", group_id=None)
    await consumer.start()
    got: list[bytes] = []
    try:
        while len(got) < 3:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                got.extend(r.value for r in records)
    finally:
        await consumer.stop()
    return got, len(described["partitions"][0]["replicas"])


def test_session_broker_serves_transactions_and_refuses_auto_created_topics(kafka_bootstrap: str) -> None:
    got, _ = asyncio.run(asyncio.wait_for(_roundtrip(kafka_bootstrap, 1), 60))
    assert got == [b"m0", b"m1", b"m2"]

    async def produce_to_missing_topic() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, request_timeout_ms=3000)
        await producer.start()
        try:
            await producer.send_and_wait(f"missing-{uuid.uuid4().hex[:8]}", b"x")
        finally:
            await producer.stop()

    with pytest.raises(Exception):  # noqa: B017,PT011 - aiokafka raises a timeout or unknown-topic error
        asyncio.run(produce_to_missing_topic())


def test_three_node_cluster_replicates_and_survives_a_node_stop() -> None:
    with LocalKafka(nodes=3) as cluster:
        assert asyncio.run(describe_brokers(cluster.bootstrap)) == [1, 2, 3]
        got, replicas = asyncio.run(asyncio.wait_for(_roundtrip(cluster.bootstrap, 3), 60))
        assert got == [b"m0", b"m1", b"m2"]
        assert replicas == 3
        cluster.stop_node(cluster.members[2])
        survivors = ",".join(f"127.0.0.1:{n.port}" for n in cluster.members[:2])
        got, _ = asyncio.run(asyncio.wait_for(_roundtrip(survivors, 2), 60))
        assert got == [b"m0", b"m1", b"m2"]
    assert all(node.proc is not None and node.proc.poll() is not None for node in cluster.members)


def test_a_cluster_id_starting_with_a_dash_still_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    """base64url ids start with "-" once in 64 runs; the formatter must not read it as an option."""
    monkeypatch.setattr("rater.localkafka._new_cluster_id", lambda: "-" + "A" * 21)
    with LocalKafka() as node:
        assert asyncio.run(describe_brokers(node.bootstrap)) == [1]
