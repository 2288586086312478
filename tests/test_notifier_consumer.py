"""``NotifierConsumer``'s hold and release against Faust's buffer pressure, driven through
mode's real ``FlowControlQueue`` the way Faust's conductor drives it (each record put
with its partition's "full" and "drained" callbacks), and the keeper's lag and its
"between rebalances" check. No broker: the consumer is made, not started."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
from faust.types import TP

from rater.notifier.consumer import NotifierApp, NotifierConsumer
from rater.notifier.offsets import OffsetKeeper
from rater.notifier.progress import PartitionProgress

HELD, OTHER = TP("notifications", 0), TP("notifications", 1)


@pytest.fixture
def consumer() -> Iterator[NotifierConsumer]:
    loop = asyncio.new_event_loop()
    app = NotifierApp("test-hold", broker="kafka://127.0.0.1:1", autodiscover=False, store="memory://", loop=loop)
    made = app.consumer
    assert isinstance(made, NotifierConsumer)
    made._set_active_tps({HELD, OTHER})
    yield made
    made._thread.thread_loop.close()  # the consumer thread's loop, made with it (never started here)
    loop.close()


class Buffer:
    """An agent's buffer of 10 (the app's own queue class) as Faust's conductor fills it:
    each partition's records put with one pair of "full"/"drained" callbacks, made anew
    at each assignment (mode calls a "full" only while that partition's "drained" is not
    pending). "Full" from 8 records on."""

    def __init__(self, consumer: NotifierConsumer) -> None:
        self.consumer = consumer
        self.queue = consumer.app.FlowControlQueue(maxsize=10)
        self.callbacks: dict[TP, tuple[Callable[[], None], Callable[[], None]]] = {}
        self.assign()

    def assign(self) -> None:
        """Faust's conductor after an assignment: new callbacks for every partition."""
        def pair(tp: TP) -> tuple[Callable[[], None], Callable[[], None]]:
            return lambda: self.consumer.on_buffer_full(tp), lambda: self.consumer.on_buffer_drop(tp)
        self.callbacks = {tp: pair(tp) for tp in (HELD, OTHER)}

    def put(self, tp: TP, n: int = 1) -> None:
        high, drop = self.callbacks[tp]
        for _ in range(n):
            self.queue.put_nowait_enhanced(0, on_pressure_high=high, on_pressure_drop=drop)

    def take(self, n: int) -> None:
        """The agent takes ``n`` records (each take past 40 % may call a pending "drained")."""
        for _ in range(n):
            self.queue.get_nowait()

    def drain(self) -> None:
        """The agent takes every record (an empty buffer calls every pending "drained")."""
        self.take(self.queue.qsize())
        self.queue.maybe_endorse_pressure_drop()


def fetched(consumer: NotifierConsumer, tp: TP) -> bool:
    return tp in consumer._get_active_partitions()


def handed(consumer: NotifierConsumer, tp: TP) -> bool:
    """Faust's getmany hands a fetched record of ``tp`` out if it is active or buffered."""
    return fetched(consumer, tp) or tp in consumer._buffered_partitions


def test_a_hold_hands_out_nothing_even_of_a_partition_under_pressure(consumer: NotifierConsumer) -> None:
    buffer = Buffer(consumer)
    buffer.put(HELD, 9)
    assert (fetched(consumer, HELD), handed(consumer, HELD)) == (False, True)  # Faust: the batch goes on
    consumer.hold(HELD)
    assert (fetched(consumer, HELD), handed(consumer, HELD), consumer.held(HELD)) == (False, False, True)
    buffer.drain()  # the "drained" callback does not take a held partition back
    assert (fetched(consumer, HELD), handed(consumer, HELD)) == (False, False)
    assert fetched(consumer, OTHER)


def test_a_release_under_pressure_leaves_the_partition_out_of_the_fetch_until_drained(
        consumer: NotifierConsumer) -> None:
    """The review's case: held, the buffer goes "full" (the record in hand), released
    before it drained. Had the release made the partition active, Faust would never
    take it out of the fetch again (its "full" callback is pending already): the buffer
    fills and Faust's one fetch loop waits on it, for every topic."""
    buffer = Buffer(consumer)
    buffer.put(HELD, 7)
    consumer.hold(HELD)
    buffer.put(HELD, 2)  # past the mark while held
    consumer.release(HELD)
    assert (fetched(consumer, HELD), handed(consumer, HELD), consumer.held(HELD)) == (False, True, False)
    buffer.drain()
    assert (fetched(consumer, HELD), HELD in consumer._buffered_partitions) == (True, False)


def test_a_release_after_the_buffer_drained_fetches_at_once(consumer: NotifierConsumer) -> None:
    buffer = Buffer(consumer)
    buffer.put(HELD, 9)
    consumer.hold(HELD)
    buffer.drain()
    consumer.release(HELD)
    assert (fetched(consumer, HELD), handed(consumer, HELD)) == (True, True)


def test_faust_s_resume_after_a_rebalance_ends_a_hold_and_forget_lets_a_revoked_one_go(
        consumer: NotifierConsumer) -> None:
    consumer.hold(HELD)
    consumer.resume_partitions({HELD})
    assert (consumer.held(HELD), fetched(consumer, HELD)) == (False, True)
    consumer.hold(OTHER)
    consumer.forget(OTHER)
    assert (consumer.held(OTHER), fetched(consumer, OTHER)) == (False, False)
    assert OTHER not in consumer._paused_partitions


def test_a_buffer_faust_clears_for_a_rebalance_leaves_no_stale_drained_callback(consumer: NotifierConsumer) -> None:
    """The second review's case: a partition under pressure when Faust empties the buffers
    for a rebalance. Had the old "drained" stayed pending, it would put the partition back
    into the fetch while the new "full" was pending — never called again — and the buffer
    would fill."""
    buffer = Buffer(consumer)
    buffer.put(HELD, 9)
    assert not fetched(consumer, HELD)
    consumer.app.rebalancing = True
    buffer.queue.clear()  # Faust's flow control, for the rebalance
    assert (HELD in consumer._buffered_partitions, HELD in consumer._pressured) == (False, False)
    consumer.resume_partitions({HELD, OTHER})  # the end of Faust's recovery
    consumer.app.rebalancing = False
    buffer.assign()
    buffer.put(HELD, 9)  # past the mark again: Faust takes it out of the fetch again
    assert (fetched(consumer, HELD), handed(consumer, HELD)) == (False, True)
    buffer.take(6)  # a take at 40 % calls the one "drained" pending: the new one
    assert (fetched(consumer, HELD), handed(consumer, HELD)) == (True, True)


def test_the_lag_runs_to_the_later_end_known_and_is_unknown_before_the_keeper_s_first_tick() -> None:
    keeper = OffsetKeeper(cast(Any, None), "127.0.0.1:1", "g", {HELD.topic})
    assert keeper.lag(HELD, 10) is None  # no committed offset read yet
    keeper.partitions[HELD] = PartitionProgress(committed=5, frontier=5)
    keeper._ready = {HELD}
    assert keeper.lag(HELD, None) is None  # no end known: Faust fetched nothing, no tick yet
    keeper._ends = {HELD: 8}
    assert (keeper.lag(HELD, None), keeper.lag(HELD, 12), keeper.lag(HELD, 6)) == (3, 7, 3)


def test_the_keeper_acts_on_the_consumer_only_between_rebalances() -> None:
    app = SimpleNamespace(rebalancing=False, in_recovery=False, rebalancing_count=3)
    keeper = OffsetKeeper(cast(Any, app), "127.0.0.1:1", "g", {HELD.topic})
    assert keeper._steady(3)
    assert not keeper._steady(2)  # one began and ended since the tick read the count
    app.rebalancing = True
    assert not keeper._steady(3)
    app.rebalancing, app.in_recovery = False, True
    assert not keeper._steady(3)
