"""The reconciliation the crash tests and the soak rely on (tests/reconcile.py) can fail:
a real worker rates a seeded workload and the check passes; then a rated CDR appears a
second time and a state record changes on the changelog, and the check names both."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from rater.shell.driver import STATE_TOPIC
from rater.shell.task import PARTITION_KEY
from rater.workload import Workload

from .reconcile import committed_and_end, partition_of, produce_values, read_all, reconcile
from .support import TEST_PARTITIONS, Worker, create_topics

pytestmark = pytest.mark.kafka

CDRS = 300


async def _append(bootstrap: str, topic: str, partition: int, key: bytes | None, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


def test_the_reconciliation_names_a_cdr_rated_twice_and_a_changed_state(kafka_bootstrap: str, tmp_path: Path,
                                                                        topic_prefix: str) -> None:
    prefix = topic_prefix
    create_topics(kafka_bootstrap, prefix)
    load = Workload(20, 100, seed=3)
    items = [(topic, orjson.dumps(e), partition_of(e["tenant_id"], TEST_PARTITIONS)) for topic, e in load.setup()]
    items += [("cdrs", orjson.dumps(e), partition_of(e["tenant_id"], TEST_PARTITIONS)) for e in load.cdrs(CDRS)]
    asyncio.run(produce_values(kafka_bootstrap, prefix, items))
    worker = Worker(kafka_bootstrap, prefix, tmp_path / "w").start()
    deadline = time.monotonic() + 120
    while asyncio.run(committed_and_end(kafka_bootstrap, f"{prefix}rater", f"{prefix}cdrs", TEST_PARTITIONS)) != (
            CDRS, CDRS):
        worker.check_alive()
        assert time.monotonic() < deadline, "the worker did not rate the CDRs"
        time.sleep(0.2)
    worker.stop()

    found = asyncio.run(reconcile(kafka_bootstrap, prefix, TEST_PARTITIONS))
    assert found.problems == []
    assert found.inputs["cdrs"] == CDRS == found.seen.rated + found.seen.dead["cdrs"]
    assert found.seen.charged_minor == found.want.charged_minor
    assert sum(found.seen.charged_minor.values()) > 0, "no money moved: the sums would prove nothing"

    rated = asyncio.run(read_all(kafka_bootstrap, [f"{prefix}rated-cdrs"], TEST_PARTITIONS))
    charged = next(r for r in rated if orjson.loads(r.value)["charge"] not in ("0", "0.00"))
    asyncio.run(_append(kafka_bootstrap, f"{prefix}rated-cdrs", charged.partition, charged.key, charged.value))
    states = asyncio.run(read_all(kafka_bootstrap, [f"{prefix}{STATE_TOPIC}"], TEST_PARTITIONS))
    state = next(r for r in states if r.key != PARTITION_KEY and r.value)
    asyncio.run(_append(kafka_bootstrap, f"{prefix}{STATE_TOPIC}", state.partition, state.key, state.value + b" "))

    problems = asyncio.run(reconcile(kafka_bootstrap, prefix, TEST_PARTITIONS)).problems
    assert any("1 CDRs rated twice" in p for p in problems), problems
    assert any(p.startswith("rated CDRs differ") for p in problems), problems
    assert any(p.startswith("charged (minor units)") for p in problems), problems
    assert any(p.startswith("1 state records differ") for p in problems), problems
