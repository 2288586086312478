"""The driver's record batching (no broker needed: batches are only built here)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import RecordTooLargeError
from aiokafka.record.default_records import DefaultRecordBatch

from rater.shell.batches import MAX_RECORD_BYTES, RecordBatches
from rater.shell.keys import key_partition

STAMP = 1_796_346_656_523
"""The unit's timestamp (the broker's clock, as the worker measured it)."""


def _batches(max_batch_size: int = 16 * 1024) -> RecordBatches:
    async def make() -> AIOKafkaProducer:  # never started: it only builds batches here
        return AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", max_batch_size=max_batch_size)

    return RecordBatches(asyncio.run(make()), {"out": 4, "state": 8}, fallback=3, timestamp_ms=STAMP)


def test_a_record_too_large_for_a_produce_request_stops_the_unit_before_anything_is_sent() -> None:
    batches = _batches()
    batches.add("out", b"t1", b"x" * 100)
    with pytest.raises(RecordTooLargeError, match="over the"):
        batches.add("state", b"t1", b"x" * (MAX_RECORD_BYTES + 1), 2)  # also into a new, empty batch
    assert batches.sent == []


def test_records_go_to_their_key_s_partition_keep_their_order_and_carry_the_unit_s_stamp() -> None:
    batches = _batches(max_batch_size=4096)
    for n in range(300):
        batches.add("out", b"tenant-%d" % (n % 5), b"%06d" % n + b"v" * 100)
        batches.add("state", b"k%d" % n, b"%06d" % n + b"s" * 100, 2)
    batches.add("out", None, b"no key")
    assert len(batches.full) > 5
    sent: dict[tuple[str, int], list[bytes]] = {}
    for where, builder in [*batches.full, *batches.open.items()]:  # the order send_all sends them in
        records = list(DefaultRecordBatch(builder._build()))
        assert {r.timestamp for r in records} == {STAMP}  # never the host's clock
        sent.setdefault(where, []).extend(r.value for r in records)
    assert set(sent) == {("state", 2), ("out", 3)} | {("out", key_partition(b"tenant-%d" % n, 4)) for n in range(5)}
    assert [v[:6] for v in sent[("state", 2)]] == [b"%06d" % n for n in range(300)]
    for n in range(5):
        mine = [b"%06d" % m for m in range(300) if m % 5 == n]
        assert [v[:6] for v in sent[("out", key_partition(b"tenant-%d" % n, 4))] if v[:6] in mine] == mine
    assert sent[("out", 3)][-1] == b"no key"
