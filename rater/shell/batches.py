"""The records of one unit's transaction as aiokafka record batches: one batch per topic
partition, handed to the unit's transactional producer whole (``send_batch``).

Apart from the driver because it is the unit's records on their way to the broker, not
the unit's cycle: which partition a record goes to (Kafka's default partitioner,
:mod:`rater.shell.keys`), the largest record a unit may hold, the stamp every record
carries (the broker's clock, :mod:`rater.shell.clock`), and the order batches go out in.
The driver fills the batches of a unit, sends them, and waits for their acknowledgements
before it commits the transaction.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import RecordTooLargeError

from rater.shell.keys import key_partition as _key_partition

MAX_RECORD_BYTES = 8 * 1024 * 1024 - 16 * 1024
"""The largest record a unit may hold: what fits, with a record batch's own bytes, in the
8 MiB ``max.message.bytes`` that topics/topics.toml gives ``rater-state`` and every
output topic. A record over it stops the worker with a clear error instead of a refused
batch (a tenant's users and ids are records of their own, not part of its state)."""


class RecordBatches:
    """A unit's records, one aiokafka record batch per topic partition, handed to the
    transactional producer with ``send_batch`` — one call per batch instead of one
    ``send`` per record (a unit holds thousands). Records are added without an await
    (the partition counts of their topics are looked up first, :meth:`count`); batches
    go out in the order they were started, so records of one topic partition keep their
    order. A record goes to the partition Kafka's default partitioner would pick
    for its key (murmur2, as every Kafka client does: consumers keyed by tenant see a
    tenant on one partition); a record without a key goes to ``fallback``. Every record
    is stamped ``timestamp_ms`` (the broker's clock when the unit was made: aiokafka's
    own stamp would be the host's clock, which Kafka refuses an hour ahead of its own)."""

    def __init__(self, producer: AIOKafkaProducer, partitions: dict[str, int], fallback: int, *,
                 timestamp_ms: int) -> None:
        self.producer = producer
        self.partitions = partitions
        """Topic → its partition count (filled by :meth:`count`)."""
        self.fallback = fallback
        self.timestamp_ms = timestamp_ms
        self.open: dict[tuple[str, int], Any] = {}
        self.full: list[tuple[tuple[str, int], Any]] = []
        """Batches that filled up, in the order they were started, not yet sent."""
        self.sent: list[tuple[asyncio.Future[Any], int]] = []
        """(future of the batch's RecordMetadata — its base offset —, records in it)."""

    async def count(self, topic: str) -> int:
        count = self.partitions.get(topic)
        if count is None:
            count = self.partitions[topic] = len(await self.producer.partitions_for(topic))
        return count

    def add(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        """Add a record (its topic's partition count looked up with :meth:`count` first,
        unless ``partition`` is given)."""
        if partition is None:
            count = self.partitions[topic]
            partition = self.fallback % count if key is None else _key_partition(key, count)
        where = (topic, partition)
        builder = self.open.get(where)
        if builder is None:
            builder = self.open[where] = self.producer.create_batch()
        size = len(key or b"") + len(value or b"")
        if size > MAX_RECORD_BYTES:
            shown = (key or b"")[:80]
            raise RecordTooLargeError(f"a {size}-byte record for {topic} (key {shown!r}) is over the"
                                      f" {MAX_RECORD_BYTES} bytes a produce request may carry")
        if builder.append(key=key, value=value, timestamp=self.timestamp_ms) is None:  # full: start another
            self.full.append((where, builder))
            builder = self.open[where] = self.producer.create_batch()
            if builder.append(key=key, value=value, timestamp=self.timestamp_ms) is None:
                raise ValueError(f"a record of {len(value or b'')} bytes does not fit a batch for {topic}")

    async def _send(self, where: tuple[str, int], builder: Any) -> None:
        builder.close()  # nothing else may join it
        future: asyncio.Future[Any] = await self.producer.send_batch(builder, where[0], partition=where[1])
        self.sent.append((future, builder.record_count()))

    async def send_all(self) -> None:
        for where, builder in self.full:
            await self._send(where, builder)
        self.full.clear()
        for where, builder in self.open.items():
            await self._send(where, builder)
        self.open.clear()

    async def acknowledged(self) -> None:
        """Wait until the broker acknowledged every batch; raises if one failed."""
        for future, _count in self.sent:
            await future
