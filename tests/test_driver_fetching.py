"""The driver holds its fetches while a fetch that was not full is made into units
(issue 15: aiokafka's fetch ahead kept the first milliseconds of a cycle and left the
rest of its CDRs waiting a whole cycle more). A real consumer on a real broker: the
partitions paused and resumed are aiokafka's own state."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from rater.catalog import rating_context
from rater.shell.driver import INPUTS, Driver
from rater.shell.settings import Settings
from tests.support import TEST_PARTITIONS, create_topics

CTX = rating_context()


def _fetched(driver: Driver, records: int) -> dict[TopicPartition, list[Any]]:
    """What a ``getmany`` returned: ``records`` CDRs of partition 0."""
    return {TopicPartition(driver.prefix + "cdrs", 0): [object()] * records}


async def _check(bootstrap: str, prefix: str) -> None:
    driver = Driver(Settings(bootstrap=bootstrap, topic_prefix=prefix, max_batch=10), CTX)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        every = {TopicPartition(prefix + name, p) for name in INPUTS for p in range(TEST_PARTITIONS)}
        consumer.assign(list(every))
        await consumer.seek_to_end(*every)  # positioned, as the worker's are
        driver.consumer = consumer
        driver.owned = dict.fromkeys((0, 1, 2))  # type: ignore[assignment] # only the numbers count here
        preparing = {tp for tp in every if tp.partition == 3}
        consumer.pause(*preparing)  # as a partition being made ready is

        held = driver._hold_fetches(_fetched(driver, 9))  # not full: the owned partitions wait for the units
        assert consumer.paused() == every
        assert set(held) == every - preparing

        del driver.owned[2]  # taken away meanwhile
        driver._release_fetches(held)
        assert consumer.paused() == preparing | {tp for tp in every if tp.partition == 2}

        consumer.resume(*every)
        assert driver._hold_fetches(_fetched(driver, 10)) == []  # full: a backlog, fetched ahead
        assert consumer.paused() == set()
    finally:
        await consumer.stop()


def test_a_fetch_that_was_not_full_holds_the_next_one_until_its_units_are_done(kafka_bootstrap: str,
                                                                                topic_prefix: str) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    asyncio.run(_check(kafka_bootstrap, topic_prefix))
