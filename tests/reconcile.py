"""Money exactly once, checked: what read_committed consumers see of a run equals an
independent in-process run of the same inputs through the partition tasks.

Shared by the crash tests (tests/test_crash.py) and the soak (benchmarks/soak.py). The
independent run reads the input topics back (every record with its own offset and Kafka
timestamp, as the workers saw them) and feeds each partition's records, in offset order,
to a :class:`PartitionTask` over a :class:`MemoryStore`. It stays small in memory so a
soak of millions of CDRs fits: outputs are compared as counts and order-free digests (a
sum of 128-bit hashes of their bytes), the usage ids rated as sets of 64-bit hashes, the
money as sums of minor units per currency, and the state — the changelog's latest record
per key against the independent store — one partition at a time.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError
from aiokafka.partitioner import murmur2

from rater import edge
from rater.catalog import rating_context
from rater.shell.driver import STATE_TOPIC
from rater.shell.tally import minor_units
from rater.shell.task import PARTITION_KEY, MemoryStore, PartitionTask

INPUTS = ("account-commands", "cdrs")
"""The inputs the runs feed, applied in this order by the independent run (the runs put
every command on the topics before the first CDR)."""
_MASK = (1 << 128) - 1


def partition_of(tenant_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``tenant_id``."""
    return (murmur2(tenant_id.encode()) & 0x7FFFFFFF) % partitions


async def produce_values(bootstrap: str, prefix: str, items: list[tuple[str, bytes, int]],
                         timestamp_ms: int | None = None) -> None:
    """Send (topic, JSON value, partition) keyed by the value's tenant, in order, and wait
    for every ack (acks=all, idempotent)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(prefix + topic, value, key=orjson.loads(value)["tenant_id"].encode(),
                                       partition=p, timestamp_ms=timestamp_ms) for topic, value, p in items]
        await producer.flush()
        for future in futures:
            future.result()
    finally:
        await producer.stop()


async def committed_and_end(bootstrap: str, group: str, topic: str, partitions: int) -> tuple[int, int]:
    """(committed, end) offsets of ``topic`` summed over its partitions, for ``group``;
    committed is -1 before the group has a coordinator."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        try:
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        except GroupCoordinatorNotAvailableError:
            return -1, sum(ends.values())
        return sum(m.offset for m in committed.values() if m.offset > 0), sum(ends.values())
    finally:
        await consumer.stop()
        await admin.close()


async def read_partition(bootstrap: str, topic: str, partition: int, chunk: int = 2_000) -> AsyncIterator[list[Any]]:
    """Every committed record of one partition up to its current end, in offset order, in
    lists of up to ``chunk``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, isolation_level="read_committed",
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            records = (await consumer.getmany(tp, timeout_ms=500, max_records=chunk)).get(tp, [])
            if records:
                yield records
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topics: list[str], partitions: int) -> list[Any]:
    """Every committed record of ``topics`` up to their current ends."""
    out: list[Any] = []
    for topic in topics:
        for p in range(partitions):
            async for records in read_partition(bootstrap, topic, p):
                out.extend(records)
    return out


def _digest(value: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(value, digest_size=16).digest(), "big")


def _id_hash(usage_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(usage_id.encode(), digest_size=8).digest(), "big")


@dataclass
class Outputs:
    """What one side (the cluster, read_committed; or the independent run) produced."""

    rated: int = 0
    rated_digest: int = 0
    """The sum of the rated CDRs' 128-bit hashes: equal sums of equal counts are equal
    multisets, whatever the order they were read in."""
    dead: Counter[str] = field(default_factory=Counter)
    """Dead letters by the topic of their input."""
    dead_digest: int = 0
    usage_ids: set[int] = field(default_factory=set)
    """64-bit hashes of the rated usage ids."""
    twice: int = 0
    """Rated CDRs whose usage id was rated before."""
    charged_minor: Counter[str] = field(default_factory=Counter)
    """Currency → the rated CDRs' ``charge`` summed in minor units."""
    debited_minor: Counter[str] = field(default_factory=Counter)
    """Currency → the rated CDRs' ``lot_debits`` amounts summed in minor units."""

    def add(self, topic: str, value: bytes) -> None:
        """Count one output record of logical ``topic``."""
        if topic == "rated-cdrs":
            self.rated += 1
            self.rated_digest = (self.rated_digest + _digest(value)) & _MASK
            event = orjson.loads(value)
            found = _id_hash(event["usage_id"])
            if found in self.usage_ids:
                self.twice += 1
            self.usage_ids.add(found)
            currency = event.get("currency") or "-"
            self.charged_minor[currency] += minor_units(event["charge"]) if event.get("charge") else 0
            self.debited_minor[currency] += sum(minor_units(d["amount"]) for d in event.get("lot_debits") or ())
        elif topic == "dead-letters":
            self.dead[orjson.loads(value)["source_topic"]] += 1
            self.dead_digest = (self.dead_digest + _digest(value)) & _MASK


@dataclass
class Reconciliation:
    """The two sides and what differs."""

    seen: Outputs = field(default_factory=Outputs)
    want: Outputs = field(default_factory=Outputs)
    inputs: Counter[str] = field(default_factory=Counter)
    """Input records read back, by logical topic."""
    state_keys: int = 0
    """State records (changelog keys) compared."""
    state_differences: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Every way the cluster's outputs differ from the independent run (none: reconciled)."""
        seen, want = self.seen, self.want
        found: list[str] = []
        if seen.twice:
            found.append(f"{seen.twice} CDRs rated twice")
        if seen.usage_ids != want.usage_ids:
            found.append(f"{len(want.usage_ids - seen.usage_ids)} CDRs never rated, "
                         f"{len(seen.usage_ids - want.usage_ids)} rated that should not be")
        if want.rated + want.dead["cdrs"] != self.inputs["cdrs"]:
            found.append(f"the independent run rated {want.rated} and dead-lettered {want.dead['cdrs']}"
                         f" of {self.inputs['cdrs']} CDRs")
        if (seen.rated, seen.rated_digest) != (want.rated, want.rated_digest):
            found.append(f"rated CDRs differ: {seen.rated} seen, {want.rated} wanted (or their bytes)")
        if (seen.dead, seen.dead_digest) != (want.dead, want.dead_digest):
            found.append(f"dead letters differ: {dict(seen.dead)} seen, {dict(want.dead)} wanted (or their bytes)")
        if seen.charged_minor != want.charged_minor:
            found.append(f"charged (minor units) {dict(seen.charged_minor)} seen, {dict(want.charged_minor)} wanted")
        if seen.debited_minor != want.debited_minor:
            found.append(f"debited (minor units) {dict(seen.debited_minor)} seen, {dict(want.debited_minor)} wanted")
        if self.state_differences:
            found.append(f"{len(self.state_differences)} state records differ, e.g. {self.state_differences[:5]}")
        return found


async def _replay(bootstrap: str, prefix: str, p: int, found: Reconciliation) -> dict[bytes, bytes]:
    """The independent run of partition ``p``: its outputs counted into ``found.want``;
    returns its final state records."""
    store = MemoryStore()
    task = PartitionTask(p, rating_context(), store, topic_prefix=prefix)
    for topic in INPUTS:
        async for records in read_partition(bootstrap, prefix + topic, p):
            found.inputs[topic] += len(records)
            batch = task.process([edge.Record(topic, p, r.offset, r.key, r.value, r.timestamp) for r in records])
            store.write(batch)
            for output in batch.outputs:
                found.want.add(output.topic, output.value)
    return {k: v for k, v in store.records.items() if k != PARTITION_KEY}


async def _changelog(bootstrap: str, prefix: str, p: int) -> dict[bytes, bytes]:
    """Partition ``p``'s state as its changelog holds it: the latest record per key."""
    states: dict[bytes, bytes] = {}
    async for records in read_partition(bootstrap, f"{prefix}{STATE_TOPIC}", p):
        for r in records:
            if r.key == PARTITION_KEY:
                continue
            if r.value is None:
                states.pop(r.key, None)
            else:
                states[r.key] = r.value
    return states


async def reconcile(bootstrap: str, prefix: str, partitions: int,
                    progress: Callable[[str], None] = lambda _line: None) -> Reconciliation:
    """Compare what read_committed consumers see of ``prefix``'s topics with an independent
    run of the inputs on them (call it once every worker has stopped)."""
    found = Reconciliation()
    for topic in ("rated-cdrs", "dead-letters"):
        for p in range(partitions):
            async for records in read_partition(bootstrap, prefix + topic, p):
                for record in records:
                    found.seen.add(topic, record.value)
        progress(f"read {topic}: {found.seen.rated:,} rated, {sum(found.seen.dead.values()):,} dead letters so far")
    for p in range(partitions):
        want = await _replay(bootstrap, prefix, p, found)
        seen = await _changelog(bootstrap, prefix, p)
        keys = want.keys() | seen.keys()
        found.state_keys += len(keys)
        found.state_differences += [f"partition {p} {key!r}" for key in keys if want.get(key) != seen.get(key)]
        progress(f"partition {p}: {found.inputs['cdrs']:,} CDRs replayed so far, {found.state_keys:,} state records"
                 f" compared")
    return found
