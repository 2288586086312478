"""The notifier commits its input offsets itself (:mod:`rater.notifier.progress` says
why): the agents report each record they take and finish; every ``TICK_S`` this keeper
commits each partition's frontier through the group's consumer, audits the holes, and
seeks the consumer back to a record it never handed — in two steps, so a batch Faust is
in the middle of cannot skip the record again (:mod:`rater.notifier.consumer`)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.exceptions import ConsumerNotStarted
from faust.types import TP, Message

from rater.notifier.consumer import NotifierConsumer
from rater.notifier.progress import Audit, PartitionProgress

log = logging.getLogger("rater.notify")

TICK_S = 1.0
"""How often holes are audited and frontiers committed."""
AUDIT_TIMEOUT_S = 10.0
"""How long one audit may read before it is left to the next tick."""


@dataclass(frozen=True)
class _Held:
    """A partition held to be sought back to ``target`` once Faust's fetch loop has
    started a fetch after ``fetches``."""

    target: int
    fetches: int


class OffsetKeeper:
    """Each input partition's :class:`PartitionProgress`, and the I/O around it: the
    group's committed offsets after a rebalance, audits with a consumer of its own (no
    group membership: it reads what it is told), seeks and commits through Faust's."""

    def __init__(self, app: faust.App, bootstrap: str, group: str, topics: set[str]) -> None:
        self.app = app
        self.bootstrap = bootstrap
        self.group = group
        self.topics = topics
        self.partitions: dict[TP, PartitionProgress] = {}
        self._ready: set[TP] = set()
        self._rebalances_seen = -1
        self._reader: AIOKafkaConsumer | None = None
        self._agents_free_since: dict[str, float | None] = {}
        self._held: dict[TP, _Held] = {}
        self._ends: dict[TP, int] = {}
        self._fetch_marks: dict[TP, tuple[float | None, int]] = {}

    # --- what the agents report ----------------------------------------------------------

    def _progress(self, tp: TP) -> PartitionProgress:
        if tp not in self.partitions:
            self.partitions[tp] = PartitionProgress(committed=0, frontier=0)
        return self.partitions[tp]

    def handed(self, message: Message) -> None:
        """An agent took ``message``."""
        self._progress(message.tp).handed(message.offset, time.monotonic())

    def finished(self, message: Message) -> None:
        """``message`` is done: its offset may be committed once all before it are."""
        self._progress(message.tp).finished(message.offset, time.monotonic())

    def released(self, message: Message) -> None:
        """``message`` was not finished (cancelled, or its partition moved): read again."""
        self._progress(message.tp).release(message.offset)

    def agent_busy(self, topic: str) -> None:
        """The agent of ``topic`` waits for a free slot: what Faust holds for it waits too."""
        self._agents_free_since[topic] = None

    def agent_free(self, topic: str) -> None:
        """The agent of ``topic`` has a free slot again."""
        self._agents_free_since[topic] = time.monotonic()

    def committed(self, tp: TP) -> int | None:
        """The offset this notifier last committed for ``tp`` (``None``: not known yet)."""
        progress = self.partitions.get(tp)
        return progress.committed if progress is not None and tp in self._ready else None

    def lag(self, tp: TP, highwater: int | None) -> int | None:
        """Records of ``tp`` not committed yet (``None``: not known yet), to the later of
        its end as read by the keeper's last tick and ``highwater``, the end Faust's
        consumer saw last (it has none for a partition it has not fetched yet: paused,
        held, just assigned; an end only grows)."""
        committed = self.committed(tp)
        ends = [end for end in (self._ends.get(tp), highwater) if end is not None]
        return None if committed is None or not ends else max(0, max(ends) - committed)

    # --- the tick ------------------------------------------------------------------------

    async def run(self) -> None:
        """Faust app task: tick until the app stops."""
        self._reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group,
                                        enable_auto_commit=False, isolation_level="read_uncommitted",
                                        auto_offset_reset="earliest", client_id=f"{self.group}-audit")
        await self._reader.start()
        try:
            while True:
                await asyncio.sleep(TICK_S)
                try:
                    await self.tick()
                except (TimeoutError, KafkaError) as exc:  # the broker: try again next tick
                    log.info("offsets not committed this time: %r", exc)
        finally:
            await self._reader.stop()

    async def tick(self) -> None:
        """Commit the frontiers; seek back what was held; audit what needs it (an audit that
        fails is left to the next tick, the other partitions' go on); commit again."""
        if self.app.rebalancing or self._reader is None:
            return
        try:
            consumer = cast(NotifierConsumer, self.app.consumer)
            assigned = {tp for tp in consumer.assignment() if tp.topic in self.topics}
        except ConsumerNotStarted:
            return
        rebalances = self.app.rebalancing_count
        if rebalances != self._rebalances_seen or not assigned <= self._ready:
            self._ends = {}
            await self._take(assigned)
            if not self._steady(rebalances):
                return
            self._rearm(consumer, assigned)
            self._rebalances_seen = rebalances
        if not assigned:
            return
        await self._commit(consumer, assigned)
        await self._seek_held(consumer, assigned, rebalances)
        try:
            ends = await self._reader.end_offsets([_kafka(tp) for tp in assigned])
        except (TimeoutError, KafkaError):
            self._ends = {}  # not known rather than stale
            raise
        self._ends = {tp: ends[_kafka(tp)] for tp in assigned}
        for tp in sorted(assigned):
            if tp in self._held:
                continue
            try:
                await self._audit(consumer, tp, self.partitions[tp], ends[_kafka(tp)], rebalances)
            except (TimeoutError, KafkaError) as exc:
                log.info("%s[%d]: audit left to the next tick: %r", tp.topic, tp.partition, exc)
            await self._seek_held(consumer, assigned, rebalances)  # a hold of this tick, if a fetch came since
        await self._commit(consumer, assigned)

    def _steady(self, rebalances: int) -> bool:
        """No rebalance or table recovery under way, nor any since the tick read
        ``rebalances``: a hold, seek or release now cannot cross Faust's own pauses,
        resumes and seeks (called with no await between it and the action)."""
        app: Any = self.app
        return not app.rebalancing and not app.in_recovery and app.rebalancing_count == rebalances

    def _rearm(self, consumer: NotifierConsumer, assigned: set[TP]) -> None:
        """After a rebalance: Faust resumed every partition it assigned (which ends a
        hold) and sought it to the committed offset. Defensive, since no hold is made
        while a rebalance is under way: a partition still held is sought back to that
        offset; a held partition no longer assigned is let go."""
        for tp in list(self._held):
            if not consumer.held(tp):
                del self._held[tp]
            elif tp in assigned:
                self._held[tp] = _Held(self.partitions[tp].committed, consumer.fetches)
            else:
                consumer.forget(tp)
                del self._held[tp]

    async def _commit(self, consumer: Any, assigned: set[TP]) -> None:
        # Faust has no public "commit these offsets": its driver's own commit call.
        due = {tp: p.frontier for tp in assigned if (p := self.partitions[tp]).frontier > p.committed}
        if due and not self.app.rebalancing and await consumer._commit(due):
            for tp, offset in due.items():
                self.partitions[tp].committed = offset

    async def on_stop(self, _app: Any, /, *_args: Any, signal: Any, **_kwargs: Any) -> None:
        """Faust's ``on_before_shutdown`` (the fetcher stopped, the group's consumer not
        yet): commit what the agents finished, so a clean restart reads little again."""
        del signal  # Faust's signals pass it: not needed here
        try:
            consumer = self.app.consumer
            await self._commit(consumer, {tp for tp in consumer.assignment() if tp in self._ready})
        except (ConsumerNotStarted, TimeoutError, KafkaError) as exc:
            log.info("offsets not committed at the stop: %r", exc)

    async def _take(self, assigned: set[TP]) -> None:
        """After a rebalance: each partition starts again from the group's committed offset
        (another notifier may have moved it), or its beginning when there is none."""
        assert self._reader is not None
        committed = {tp: await self._reader.committed(_kafka(tp)) for tp in assigned}
        beginnings = await self._reader.beginning_offsets([_kafka(tp) for tp, offset in committed.items()
                                                           if offset is None])
        now = time.monotonic()
        for tp, offset in committed.items():
            self._progress(tp).reset(offset if offset is not None else beginnings[_kafka(tp)], now)
        self._ready = assigned  # a revoked partition's progress is kept: what was done stays done

    async def _audit(self, consumer: NotifierConsumer, tp: TP, progress: PartitionProgress, end: int,
                     rebalances: int) -> None:
        free_since = self._agents_free_since.get(tp.topic, 0.0)
        if not self._fetching(consumer, tp, progress):
            free_since = None  # Faust's fetch loop waits (another agent is full): so do this partition's records
        while (audit := progress.audit_needed(end, time.monotonic(), free_since)) is not None:
            records = await self._records(tp, audit)
            if records is None:
                return
            before = progress.frontier
            if not self._steady(rebalances):
                return  # what was read may be another notifier's by now: the next tick sees
            target = progress.audited(audit, records, time.monotonic())
            if target is not None:
                log.warning("%s[%d]: the record at offset %d was read but not handed to the agent, or not"
                            " finished: reading again from it", tp.topic, tp.partition, target)
                consumer.hold(tp)
                self._held[tp] = _Held(target, consumer.fetches)
                return
            if progress.frontier == before:
                return

    def _fetching(self, consumer: NotifierConsumer, tp: TP, progress: PartitionProgress) -> bool:
        """Whether Faust's fetch loop has started two fetches since the tick that first saw
        the partition's last activity: a record it fetched for the partition since then
        has been handed out, or dropped."""
        active_at, fetches = self._fetch_marks.get(tp, (None, 0))
        if active_at != progress.active_at:
            active_at, fetches = self._fetch_marks[tp] = (progress.active_at, consumer.fetches)
        return consumer.fetches - fetches >= 2

    async def _seek_held(self, consumer: NotifierConsumer, assigned: set[TP], rebalances: int) -> None:
        """Seek each held partition back to its target and release it, once the batch
        Faust's fetch loop was handing out when it was held is over. (Faust's ``seek``
        does not suspend — its consumer thread's seek is a plain call — so none of
        Faust's own pauses, resumes and seeks, which run on this loop, falls between the
        check that no rebalance is under way and the release. A rebalance the consumer
        thread starts meanwhile makes the seek raise — ``IllegalStateError``, a
        ``KafkaError`` — and the tick is tried again.)"""
        if not self._steady(rebalances):
            return
        for tp, held in list(self._held.items()):
            if tp not in assigned or not consumer.held(tp):  # moved, or resumed by a rebalance
                if tp not in assigned:
                    consumer.forget(tp)
                del self._held[tp]
            elif consumer.fetches > held.fetches:
                await consumer.seek(tp, held.target)
                consumer.release(tp)
                del self._held[tp]

    async def _records(self, tp: TP, audit: Audit) -> list[int] | None:
        """The offsets of the records in ``[audit.start, audit.end)``, read with the
        keeper's own consumer (``None``: not within ``AUDIT_TIMEOUT_S``)."""
        assert self._reader is not None
        kafka_tp = _kafka(tp)
        self._reader.assign([kafka_tp])
        self._reader.seek(kafka_tp, audit.start)
        offsets: list[int] = []
        deadline = time.monotonic() + AUDIT_TIMEOUT_S
        while await self._reader.position(kafka_tp) < audit.end:
            if time.monotonic() > deadline:
                return None
            batch: Any = await self._reader.getmany(kafka_tp, timeout_ms=500)
            offsets.extend(record.offset for record in batch.get(kafka_tp, ()) if record.offset < audit.end)
        return offsets


def _kafka(tp: TP) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)
