"""How the worker fetches its input: a batch taken from the consumer in slices, and the
timeline of a unit measured from the fetch that brought its records.

Apart from the driver because it is the input side of a unit's cycle and its latency:
:func:`fetch_batch` fills a batch from several takes with the event loop free between
them (aiokafka decodes records as they are taken: one take of 2,000 held the loop for
~4 ms, and an API request with it — docs/api.md), and the ``rater.timeline`` logger says,
for each unit, how old its CDRs were when they were fetched and when each phase of its
cycle ended after that fetch (``benchmarks/latency.py`` reads it). The driver decides
what a fetch becomes (its units, its held partitions).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from rater import edge

timeline = logging.getLogger("rater.timeline")
"""One DEBUG line per unit: when each phase of its cycle ended, in ms after the fetch
that brought its records, and how old its oldest and newest input were then (by their
Kafka timestamps, the producer's clock). Off unless this logger is set to DEBUG on its
own (``benchmarks/latency.py`` does): the worker's log level leaves it alone."""
FETCH_SLICE = 250
"""Records taken from the consumer at a time (aiokafka decodes them as they are taken);
a batch is filled from several takes, with the event loop free between them."""


def log_timeline(p: int, records: list[edge.Record], cdrs: list[Any], fetched_at: float,
                  stamps: list[tuple[str, float]]) -> None:
    """The :data:`timeline` line of a unit: ``p``, its records and CDRs, the ages (ms) of
    its oldest and newest CDR when its fetch returned, and each phase's end, ms after it."""
    ages = ""
    if cdrs:
        fetched_ms = (time.time() - (time.monotonic() - fetched_at)) * 1000  # wall clock then
        ages = f" oldest={fetched_ms - cdrs[0].timestamp:.1f} newest={fetched_ms - cdrs[-1].timestamp:.1f}"
    phases = " ".join(f"{name}={(at - fetched_at) * 1000:.1f}" for name, at in stamps)
    timeline.debug("unit p=%d records=%d cdrs=%d%s %s", p, len(records), len(cdrs), ages, phases)


async def fetch_batch(consumer: AIOKafkaConsumer, limit: int,
                      take: int = FETCH_SLICE) -> dict[TopicPartition, list[Any]]:
    """Up to ``limit`` fetched records, by partition: waits up to 200 ms for the first
    ones, then takes what the consumer has already fetched, ``take`` records at a time,
    with a turn of the event loop between takes (aiokafka decodes records as they are
    taken: 2,000 at once held the loop for ~4 ms, and an API request with it)."""
    fetched: dict[TopicPartition, list[Any]] = await consumer.getmany(timeout_ms=200, max_records=min(take, limit))
    taken = sum(map(len, fetched.values()))
    while 0 < taken < limit:
        await asyncio.sleep(0)
        more = await consumer.getmany(timeout_ms=0, max_records=min(take, limit - taken))
        if not more:
            break
        for tp, messages in more.items():
            fetched.setdefault(tp, []).extend(messages)
            taken += len(messages)
    return fetched
