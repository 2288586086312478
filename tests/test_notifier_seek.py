"""The offsets keeper's seek back, under a backlog, on a real broker with a real
receiver: Faust's consumer drops one fetched record (``tests/faultinject``: the drop
Faust 0.15 makes around a rebalance), the keeper's audit finds it never handed and seeks
back to it. The dropped event must go out while the backlog is still large — not once
the backlog has cleared — and the group's committed offset must reach the end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from rater.localkafka import free_port
from tests.notify_support import NotifierProc, Receiver, notification, upsert, verify_signature, wait_for
from tests.support import TEST_PARTITIONS, create_topics, send_events

pytestmark = pytest.mark.kafka

FAULTINJECT = Path(__file__).parent / "faultinject"
REPO = Path(__file__).parent.parent

EVENTS = 600
"""Notifications of one tenant, all on one partition, one at a time (the tenant's lock):
at ``ANSWER_S`` and more each (signing, the tables' writes) a backlog of 18 s or more."""
DROPPED = 5
"""The offset Faust's consumer drops once: early, so the backlog behind it is large."""
ANSWER_S = 0.025
"""How long the receiver takes to answer each webhook: at most 40 events a second however
fast the machine, so the backlog is long next to the keeper's tick."""
BUFFER = 240
"""Faust's read-ahead per agent (``RATER_NOTIFY_BUFFER``): fetches of 5 records
(:func:`rater.notifier.app.max_poll_records` over 4 partitions)."""
SLOW_YIELD_S = 0.04
"""How long Faust's fetch loop takes to hand each record (``tests/faultinject``): slower
than the receiver, so the loop is the bottleneck and almost always in the middle of a
batch — where a seek lands before the rest of the batch is handed. (Since fetches are
bounded by ``max_poll_records``, a full agent buffer no longer holds the loop mid-batch;
CPU starvation or the producer's full buffer still can.)"""


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


async def _produce_all(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    """Every event keyed by its tenant, sent at once (one batch or a few), acked."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=50)
    await producer.start()
    try:
        sent = [await producer.send(topic, orjson.dumps(e), key=e["tenant_id"].encode()) for e in events]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _partition_of_only_record(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        [partition] = [int(tp.partition) for tp, end in ends.items() if end > 0]
        return partition
    finally:
        await consumer.stop()


async def _committed_and_end(bootstrap: str, group: str, topic: str, partition: int) -> tuple[int | None, int]:
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        end = int((await consumer.end_offsets([tp]))[tp])
        committed = await consumer.committed(tp)
        return (None if committed is None else int(committed)), end
    finally:
        await consumer.stop()


@contextlib.contextmanager
def _log_on_failure(proc: NotifierProc) -> Iterator[None]:
    """A failed assertion shows the keeper's seeks and the notifier's log tail."""
    try:
        yield
    except AssertionError as exc:
        lines = proc.log.read_text(errors="replace").splitlines()
        seeks = [line for line in lines if "faultinject" in line or "reading again from it" in line]
        tail = "\n".join(lines[-40:])
        seen = "\n".join(seeks)
        raise AssertionError(f"{exc}\n--- drop and seeks ---\n{seen}\n--- notifier log tail ---\n{tail}") from None


def test_a_record_faust_dropped_is_read_again_while_the_backlog_is_large(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, hooks: Receiver) -> None:
    tenant = f"seek-{uuid.uuid4().hex[:6]}"
    hooks.answers["/hook"] = (ANSWER_S, 204)
    create_topics(kafka_bootstrap, topic_prefix)
    # the tenant's upsert first: its partition of account-commands is its partition of
    # notifications (same key, same partition count), which names the record to drop
    send_events(kafka_bootstrap, topic_prefix,
                [("account-commands", upsert(tenant, {"webhook_url": hooks.url("/hook")}))])
    topic = f"{topic_prefix}notifications"
    partition = asyncio.run(_partition_of_only_record(kafka_bootstrap, f"{topic_prefix}account-commands",
                                                            TEST_PARTITIONS))
    pythonpath = os.pathsep.join(p for p in (str(FAULTINJECT), str(REPO), os.environ.get("PYTHONPATH")) if p)
    proc = NotifierProc(kafka_bootstrap, topic_prefix, tmp_path, free_port(), extra_env={
        "PYTHONPATH": pythonpath,
        "RATER_TEST_DROP": f"{topic}:{partition}:{DROPPED}",
        "RATER_NOTIFY_BUFFER": str(BUFFER),
        "RATER_TEST_SLOW_YIELD_S": str(SLOW_YIELD_S),
        "RATER_NOTIFY_CONCURRENCY": "2",
    }).start()
    try:
        with _log_on_failure(proc):
            wait_for(lambda: proc.metric("rater_notify_contacts_updates_total") >= 1, 60, "the contacts applied",
                     proc.check_alive)
            kinds = ("recharge_succeeded", "recharge_failed", "balance_depleted")  # the notifications topic's
            events = [notification(kinds[n % 3], tenant, n) for n in range(EVENTS)]
            began = time.monotonic()
            asyncio.run(_produce_all(kafka_bootstrap, topic, events))
            ids = [e["event_id"] for e in events]
            wait_for(lambda: {c.headers.get("Idempotency-Key") for c in hooks.calls} >= set(ids), 120,
                     "every event's webhook", proc.check_alive)
            took = time.monotonic() - began
            assert "faultinject: dropped" in proc.log.read_text(errors="replace"), "nothing was dropped"

            by_id = {e["event_id"]: e for e in events}
            first: dict[str, int] = {}  # event id → its place among first deliveries
            for call in hooks.calls:
                key = call.headers["Idempotency-Key"]
                assert orjson.loads(call.body) == by_id[key]  # a repeat only with the same key and body
                assert verify_signature(call)
                first.setdefault(key, len(first))
            place = first[ids[DROPPED]]
            at = next(c.at for c in hooks.calls if c.headers["Idempotency-Key"] == ids[DROPPED]) - began
            print(f"event at offset {DROPPED} delivered {place + 1}th of {EVENTS} (first deliveries) {at:.1f}s"
                  f" after the events were sent; {len(hooks.calls) - EVENTS} repeats; all in {took:.1f}s")
            # The bound, a third of the events (6 s of deliveries or more): a seek that
            # takes effect brings the dropped record back after the keeper's first audit
            # (~1.5-3 s after the drop) plus what was already queued for the agent (the
            # buffer, the window): at most 40 × 3 + 18 first deliveries in. A seek the
            # fetch loop undoes — it goes on handing the rest of the batch it is in (the
            # first one held ~460 records, handed one by one as the buffer drains), moving
            # its read offset past the target, and drops what is fetched again below it —
            # is tried again only STALL_S (10 s) later, and undone again while the backlog
            # lasts: the record comes back once the backlog has cleared, last.
            assert place < EVENTS // 3, (
                f"the dropped event was delivered {place + 1}th of {EVENTS}: after the backlog, not during it")

            group, tp = proc.prefix + "rater-notify", TopicPartition(topic, partition)

            def caught_up() -> bool:
                committed, end = asyncio.run(_committed_and_end(kafka_bootstrap, group, tp.topic, tp.partition))
                return committed == end == EVENTS

            wait_for(caught_up, 30, "the group's committed offset at the partition's end", proc.check_alive)
            assert proc.error_lines() == []
    finally:
        proc.stop()
