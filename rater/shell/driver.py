"""The Kafka driver of the partition tasks: one transaction per batch unit.

For each input partition number *p* this worker owns, it keeps a
:class:`~rater.shell.task.PartitionTask` and a transactional producer
(``transactional.id = {app}-{p}``; starting it fences a zombie owner of *p* and aborts
its open transaction). A batch of *p*'s records becomes one transaction holding the
unit's outputs, its state records on the compacted ``rater-state`` changelog (partition
*p*) and the input offsets. On assignment a task is rebuilt from the changelog alone
(read_committed, to its end), and the inputs are read from the partition record's
offsets. Any send or commit error stops the worker: nothing is logged and skipped.

Every record the worker produces is stamped with the broker's clock as the ticks measure
it (:mod:`rater.shell.clock`), never with the host's: Kafka refuses timestamps more
than an hour ahead of the broker's clock.

The driver's parts that stand on their own live apart: the local stores and their
memory (:mod:`rater.shell.store`), a unit's record batches (:mod:`rater.shell.batches`),
the fetch and the unit timeline (:mod:`rater.shell.fetching`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Generator, Iterable
from typing import Any, TypeVar, cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import InvalidTimestampError

import rater
from rater import edge
from rater.core.context import RatingContext
from rater.shell.api import Api, Located
from rater.shell.api_auth import Auth, Tokens, TokensError
from rater.shell.batches import MAX_RECORD_BYTES, RecordBatches
from rater.shell.clock import BrokerClock
from rater.shell.fetching import fetch_batch, log_timeline, timeline
from rater.shell.keys import key_partition as _key_partition
from rater.shell.metrics import INPUT_TOPICS, Metrics, Now, expected_series, registry
from rater.shell.preflight import Preflight, PreflightFailed
from rater.shell.routing import UrlRangeAssignor, advertised_url
from rater.shell.settings import Settings
from rater.shell.store import LocalStore, StoreMemory
from rater.shell.task import TICKS, Batch, PartitionTask, Slicer, probe_value, tick_value
from rater.shell.web import WebServer, WebServerError

log = logging.getLogger("rater.driver")
T = TypeVar("T")

INPUTS = ("account-commands", "recharge-results", TICKS, "cdrs")
"""Input topics, in the order a batch applies them (order across topics is not part of
the contract; commands first gives a tenant created in the same batch its calls)."""
STATE_TOPIC = "rater-state"
SLICE_S = 0.001
"""The longest a unit's rating, record building or store write runs on the event loop
without letting it serve anything else (the API's requests, the other partitions'
units): about a millisecond, where a batch of 2000 CDRs is over 100 ms of work. A unit
is still one transaction; the slices only interleave with work that does not touch its
task (issue 13: an API request waited for whole batches, up to 57 ms of CPU at half the
maximum rate)."""


LOG_APPEND_TIME = 1
"""A produce acknowledgement's ``timestamp_type`` when the broker stamped the record
(the topic is ``message.timestamp.type=LogAppendTime``); 0 is the producer's own stamp."""


class ClockRefused(RuntimeError):
    """The broker refused a record's timestamp: the worker stops (the message says why
    and what was measured); a restart measures the broker's clock afresh."""


class _Owned:
    """What the worker holds for one partition number."""

    def __init__(self, task: PartitionTask, producer: AIOKafkaProducer, store: LocalStore,
                 first_tick: edge.Record | None = None, ready_us: int = 0) -> None:
        self.task = task
        self.producer = producer
        self.store = store
        self.first_tick = first_tick
        """A tick sent when the partition was made ready, applied ahead of the first unit's
        inputs (its own copy, fetched later, is below the partition record's offset)."""
        self.ready_us = ready_us
        """When the partition was made ready (the broker's clock)."""


class Driver:
    """Runs the partition tasks of this worker until stopped or failed."""

    def __init__(self, settings: Settings, ctx: RatingContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.prefix = settings.topic_prefix
        self.group_id = settings.app_id
        self.owned: dict[int, _Owned] = {}
        self.store_memory = StoreMemory(settings.store_cache_mib * 1024 * 1024)
        """The memory budget of every partition store this worker opens."""
        self.lock = asyncio.Lock()
        """Held while a unit is processed and committed; a revocation waits for it."""
        self.stopping = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None
        self.ticker: AIOKafkaProducer | None = None
        self.partition_counts: dict[str, int] = {}
        """Output topic → its partition count (for the default partition of a key)."""
        self.preparing: dict[int, asyncio.Task[None]] = {}
        """Assigned partitions being made ready (paused until they are)."""
        self.failure: BaseException | None = None
        """What stopped the worker from a callback or a preparing task."""
        self.clock = BrokerClock(source=self._topic(TICKS))
        """The broker's clock: ticks carry it, records are stamped with it."""
        self.metrics = Metrics(rater.__version__, rater.CORE_BUILD, self._now) if settings.metrics else None
        if self.metrics is not None:
            self.metrics.expect(expected_series(ctx), INPUT_TOPICS)
        self.assignor = UrlRangeAssignor()
        """The range assignment with every partition's URL (:mod:`rater.shell.routing`)."""
        tokens = Tokens.load(settings.api_tokens) if settings.api_tokens is not None else None
        api = Api(ctx, self, Auth(tokens, settings.web_host))
        self.web = WebServer(settings.web_host, settings.web_port, self.readiness,
                             registry(self.metrics) if self.metrics is not None else None,
                             before_scrape=self._measure_lag, mount=api.mount)
        self.joined = False
        """The group gave this worker its partitions at least once."""
        self.rebalancing = False
        """Between a revocation and the assignment that follows it."""
        self.lag: dict[tuple[str, int], int] = {}
        """(logical input topic, partition) → records not yet fetched, as last measured."""
        self.preflight = Preflight(settings.bootstrap, self.prefix, broker_wait_s=settings.broker_wait_s,
                                   topics_wait_s=settings.topics_wait_s, stopping=self.stopping)
        """The broker and the topics, checked before the worker joins its group."""

    def _topic(self, name: str) -> str:
        return self.prefix + name

    # -- assignment --------------------------------------------------------------------
    # The rebalance callbacks return at once: a partition that arrives is paused and made
    # ready by a task of its own (fence the old owner, restore the store from the
    # changelog, seek to the partition record's offsets, resume). A restore can take
    # minutes on a new machine; aiokafka sends no heartbeats while a callback runs, so a
    # restore inside the callback would get the worker thrown out of the group again.
    def _tps(self, p: int) -> list[TopicPartition]:
        return [TopicPartition(self._topic(name), p) for name in INPUTS]

    def assigned(self, partitions: Iterable[int]) -> None:
        """Partitions assigned: pause them and start making each ready."""
        assert self.consumer is not None
        self.joined, self.rebalancing = True, False
        for p in sorted(set(partitions) - set(self.owned) - set(self.preparing)):
            self.consumer.pause(*self._tps(p))
            self.preparing[p] = asyncio.create_task(self._prepare(p), name=f"prepare-{p}")
            self.preparing[p].add_done_callback(self._prepared)

    def _prepared(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.fail(task.exception())

    async def _prepare(self, p: int) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap, transactional_id=f"{self.group_id}-{p}",
            # no linger_ms: a unit's records go out as closed batches (send_batch), which
            # aiokafka never holds back; a linger would only read as a wait that is not there
            enable_idempotence=True, acks="all", max_batch_size=256 * 1024,
            max_request_size=MAX_RECORD_BYTES + 64 * 1024)
        store: LocalStore | None = None
        handed_over = False
        try:
            await _start(producer)  # init_transactions: fences the previous owner of p
            store = LocalStore(self.settings.data_dir / f"tenants-{p}.db", self.store_memory)
            caught_up = await self._restore(p, store)
            task = PartitionTask(p, self.ctx, store, topic_prefix=self.prefix, counting=self.metrics is not None,
                                 partitions=self.preflight.partitions, schedule=False)
            scheduling = task.scheduling(SLICE_S)
            try:
                await _sliced(scheduling)  # every tenant's deadline, heartbeats going on
            finally:
                scheduling.close()  # cancelled: its store iterator goes before the store closes
            first_tick = await self._first_tick(p) if self.settings.tick_interval_s > 0 else None
            async with self.lock:  # after any unit in flight; FIFO, so after a fetch made before this
                await self._seek(p, task)
                self.owned[p] = _Owned(task, producer, store, first_tick, self.clock.now_us())
                handed_over = True
                del self.preparing[p]
                assert self.consumer is not None
                self.consumer.resume(*self._tps(p))
            log.info("partition %d: %d changelog records caught up, offsets %s", p, caught_up, task.offsets)
        finally:
            if not handed_over:  # cancelled by a revocation, or failed
                with contextlib.suppress(Exception):
                    await producer.stop()
                if store is not None:
                    store.close()

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Partitions taken away: stop making them ready, or let the unit in flight
        commit and close them."""
        self.rebalancing = True  # until the assignment that follows
        self.assignor.forget()  # the next assignment brings the new map
        for p in partitions:
            if self.metrics is not None:
                self.metrics.restores.pop(p, None)  # no longer this worker's to show
            preparing = self.preparing.pop(p, None)
            if preparing is not None:
                preparing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await preparing
        async with self.lock:  # the unit in flight commits first
            for p in partitions:
                owned = self.owned.pop(p, None)
                if owned is not None:
                    await owned.producer.stop()
                    owned.store.close()

    def fail(self, exc: BaseException | None) -> None:
        """Stop the worker with ``exc`` (``run`` raises it)."""
        if self.failure is None:
            self.failure = exc
        self.stopping.set()

    async def _restore(self, p: int, store: LocalStore) -> int:
        """Bring the local store up to the end of changelog partition ``p`` (committed
        records only), from the offset it reflects; returns how many records it read."""
        tp = TopicPartition(self._topic(STATE_TOPIC), p)
        reader = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap, group_id=None,
                                  enable_auto_commit=False, isolation_level="read_committed",
                                  auto_offset_reset="earliest")
        count = 0
        progress = self.metrics.restoring(p) if self.metrics is not None else None
        try:
            await _start(reader)  # inside the try: a restore cancelled here still closes the reader
            reader.assign([tp])
            end = (await reader.end_offsets([tp]))[tp]
            start = store.next_offset()
            if start > end:
                # the store is from a changelog that no longer exists (the topic was
                # deleted and made again): forget it all and rebuild from this one
                log.warning("partition %d: the local store is at changelog offset %d, the changelog ends at"
                            " %d: rebuilding the store from the changelog", p, start, end)
                store.clear()
                start = 0
            reader.seek(tp, start)
            if progress is not None:
                progress.target = end - start
            while (position := await reader.position(tp)) < end:
                records: dict[bytes, bytes | None] = {}
                for message in (await reader.getmany(tp, timeout_ms=500)).get(tp, []):
                    if message.key is not None:
                        records[message.key] = message.value  # None: a tombstone
                count += len(records)
                store.write(records.items(), position := await reader.position(tp))
                if progress is not None:
                    progress.done = position - start
        finally:
            if progress is not None:
                progress.ended = time.monotonic()
            await reader.stop()
        return count

    async def _seek(self, p: int, task: PartitionTask) -> None:
        assert self.consumer is not None
        for name in INPUTS:
            tp = TopicPartition(self._topic(name), p)
            offset = task.offsets.get(name)
            if offset is None:
                offset = await self.consumer.committed(tp)
            if offset is not None:
                self.consumer.seek(tp, offset)
            else:
                await self.consumer.seek_to_beginning(tp)

    # -- the tenant API ------------------------------------------------------------------
    @property
    def advertised(self) -> str:
        """This worker's URL for the other workers (known once the web server listens)."""
        return self.assignor.url

    def broker_now_us(self) -> int:
        """The broker's clock as this worker measured it (the API's "now")."""
        return self.clock.now_us()

    def locate(self, tenant_id: str) -> Located:
        """Where a tenant's committed state is (:mod:`rater.shell.api`): its partition is
        the one producers pick for its key, among the input topics' partitions."""
        count = self.consumer.partitions_for_topic(self._topic("account-commands")) if self.consumer else None
        if not count:
            return Located(None, None, "the worker has not read the topics' metadata yet")
        p = _key_partition(tenant_id.encode(), len(count))
        owned = self.owned.get(p)
        if owned is not None:
            return Located(p, owned.store)
        if p in self.preparing:
            return Located(p, None, f"partition {p} is being restored from its changelog on this worker")
        if self.rebalancing or not self.joined:
            return Located(p, None, "the consumer group is rebalancing")
        owner = self.assignor.urls.get(p)
        if owner is None:
            return Located(p, None, f"partition {p} is another worker's, and the group's assignment did not say"
                                    " whose (a worker of an older version is in the group)")
        return Located(p, None, f"partition {p} is owned by {owner}", owner)

    # -- what operators see ------------------------------------------------------------
    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready: the worker joined its group, no rebalance is under way and every
        partition it owns is restored and consuming (a worker that owns none — more
        workers than partitions — is ready: it is where it should be)."""
        details: dict[str, object] = {"partitions": sorted(self.owned), "restoring": sorted(self.preparing)}
        if self.stopping.is_set():
            return False, {**details, "reason": "stopping"}
        if self.preflight.waiting is not None:
            return False, {**details, "reason": self.preflight.waiting}
        if not self.joined:
            return False, {**details, "reason": "joining the consumer group"}
        if self.rebalancing:
            return False, {**details, "reason": "rebalancing"}
        if self.preparing:
            return False, {**details, "reason": "restoring partitions from the changelog"}
        return True, details

    def _now(self) -> Now:
        """What the metrics show of the worker now."""
        now_us = self.clock.now_us()
        # since its last tick, or since it became ready if that is later: a partition that
        # never ticks (ticks off, or failing to arrive) ages from its first moment
        ages = {p: max(0, now_us - max(owned.task.clock.tick_us or 0, owned.ready_us)) / 1e6
                for p, owned in self.owned.items()}
        lag = {key: value for key, value in self.lag.items() if key[1] in self.owned}
        offset = self.clock.offset_ms
        return Now(owned=len(self.owned) + len(self.preparing), ready=len(self.owned), is_ready=self.readiness()[0],
                   lag=lag, tick_age_s=ages, clock_offset_s=None if offset is None else offset / 1000)

    async def _measure_lag(self) -> None:
        """Measure the lag of every owned input partition (before a scrape): its last
        stable offset (what a read_committed consumer can read) − the consumer's position."""
        consumer = self.consumer
        if consumer is None:
            return
        lag: dict[tuple[str, int], int] = {}
        for p in list(self.owned):
            for name in INPUTS:
                tp = TopicPartition(self._topic(name), p)
                stable = consumer.last_stable_offset(tp)
                if stable is None:
                    continue  # not fetched yet
                try:
                    position = await asyncio.wait_for(consumer.position(tp), timeout=1)
                except Exception:  # noqa: BLE001, S112 - revoked meanwhile, or not positioned yet: no value
                    continue
                lag[(name, p)] = max(0, stable - position)
        self.lag = lag

    # -- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        await self.web.start()  # first: /healthz answers while the rest starts
        try:
            await self._run()
        finally:
            await self.web.stop()

    async def _run(self) -> None:
        if not await self.preflight.run():
            return  # stopped while waiting for the broker or the topics
        topics = [self._topic(name) for name in INPUTS]
        session_ms = int(self.settings.session_timeout_s * 1000)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap, group_id=self.group_id, enable_auto_commit=False,
            isolation_level="read_committed", auto_offset_reset="earliest",
            session_timeout_ms=session_ms, heartbeat_interval_ms=max(500, session_ms // 4),
            request_timeout_ms=max(30_000, session_ms * 3), max_poll_records=self.settings.max_batch,
            # range assignment gives a worker the same partition numbers of every input
            # topic (they are co-partitioned); aiokafka's default, round robin, does not.
            # rater-range is range with every partition's API URL. It is the only one:
            # aiokafka 0.14 sends a JoinGroup per assignor given, the second with other
            # protocols than the first, and the coordinator starts a new rebalance for it —
            # two workers so fed each other rebalances for over a minute on a busy machine
            # (aio-libs/aiokafka#1168; docs/api.md, "Routing")
            partition_assignment_strategy=(self.assignor,))
        self.assignor.url = advertised_url(self.settings.advertised_url, self.settings.web_host, self.web.port)
        self.ticker = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap, acks="all",
                                       enable_idempotence=True)
        try:
            await self.ticker.start()
            await self._probe()  # the broker's clock, before anything is consumed or produced
            await self.consumer.start()
            self.consumer.subscribe(topics, listener=_Listener(self))
            await self._loop()
            if self.failure is not None:
                raise self.failure
        except InvalidTimestampError as exc:
            raise ClockRefused(await self._refused()) from exc
        finally:
            await self.consumer.stop()
            await self.ticker.stop()

    async def _loop(self) -> None:
        """Fetch and process until stopped; then close the partitions."""
        assert self.consumer is not None
        ticking = asyncio.create_task(self._tick_loop() if self.settings.tick_interval_s > 0 else asyncio.sleep(0))
        try:
            while not self.stopping.is_set():
                fetched = await fetch_batch(self.consumer, self.settings.max_batch)
                if fetched:
                    held = self._hold_fetches(fetched)
                    try:
                        await self._process(fetched, time.monotonic())
                    finally:
                        self._release_fetches(held)
                if ticking.done():
                    ticking.result()  # a tick send failed: stop
        finally:
            ticking.cancel()
            try:
                await ticking
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # noqa: BLE001 - it failed after the last look: it stops the worker
                self.fail(exc)  # (raised here, it skipped the rest: clients left unclosed)
            for preparing in list(self.preparing.values()):
                preparing.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await preparing
            await self.consumer.stop()
            for owned in self.owned.values():  # each closed whatever another's stop raised
                try:
                    await owned.producer.stop()
                except Exception:
                    log.exception("stopping a partition's producer failed")
                owned.store.close()

    def _hold_fetches(self, fetched: dict[TopicPartition, list[Any]]) -> list[TopicPartition]:
        """Pause the owned partitions while a fetch that was not full is made into units;
        the partitions paused.

        aiokafka fetches a partition again as soon as its records were taken, and keeps
        the answer until the next ``getmany``: the next units would be made of what had
        arrived in the first milliseconds of this one, and whatever came later waited on
        the broker for one more whole cycle (fetch → units → commit). Paused, the next
        fetch goes out when the units are committed and brings everything up to then —
        one round trip of waiting instead of a cycle (docs/benchmarks.md, "CDR latency"). A
        full fetch is a backlog: there the fetch ahead keeps the worker busy."""
        assert self.consumer is not None
        if sum(len(messages) for messages in fetched.values()) >= self.settings.max_batch:
            return []
        held = [tp for p in self.owned for tp in self._tps(p)]
        self.consumer.pause(*held)
        return held

    def _release_fetches(self, held: list[TopicPartition]) -> None:
        """Resume what :meth:`_hold_fetches` paused, of the partitions still owned (a
        partition being made ready stays paused until it is)."""
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        self.consumer.resume(*(tp for tp in held if tp in assigned and tp.partition in self.owned))

    async def _process(self, fetched: dict[TopicPartition, list[Any]], fetched_at: float = 0.0) -> None:
        assert self.consumer is not None
        by_partition: dict[int, dict[str, list[Any]]] = {}
        log.debug("fetched %s", {f"{tp.topic}/{tp.partition}": len(m) for tp, m in fetched.items()})
        for tp, messages in fetched.items():
            by_partition.setdefault(tp.partition, {})[tp.topic.removeprefix(self.prefix)] = messages
        async with self.lock:
            units = []
            for p, topics in by_partition.items():
                owned = self.owned.get(p)
                if owned is None:
                    # fetched before p was taken away: dropped (if p comes back, making it
                    # ready seeks to its partition record's offsets)
                    continue
                records = [
                    edge.Record(name, p, m.offset, m.key, m.value, m.timestamp)
                    for name in INPUTS for m in topics.get(name, [])
                ]
                if owned.first_tick is not None:
                    records.insert(0, owned.first_tick)
                    owned.first_tick = None
                units.append(self._commit_unit(p, owned, records, topics, fetched_at))
            # The partitions' units run side by side: while one waits for the broker (its
            # acknowledgements, its transaction's round trips) the next one is rated. Each
            # has its own producer and transaction, so each commits or fails on its own;
            # all of them end before a failure stops the worker.
            failed = [result for result in await asyncio.gather(*units, return_exceptions=True)
                      if isinstance(result, BaseException)]
            for other in failed[1:]:  # the first one stops the worker; the others are said here
                log.error("another partition's unit failed too: %r", other)
            if failed:
                raise failed[0]

    async def _commit_unit(self, p: int, owned: _Owned, records: list[edge.Record],
                           topics: dict[str, list[Any]], fetched_at: float = 0.0) -> None:
        producer = owned.producer
        stamps: list[tuple[str, float]] = [("start", time.monotonic())]  # the unit's timeline
        try:
            # in slices: the loop serves requests between them (raises only when the store cannot be read)
            batch = await _sliced(owned.task.slices(records, SLICE_S))
            stamps.append(("rated", time.monotonic()))
            log.debug("partition %d: %d records, %d applied, %d skipped, %d outputs, %d states", p, len(records),
                      batch.applied, batch.skipped, len(batch.outputs), len(batch.states))
            began = time.monotonic()
            await producer.begin_transaction()
        except Exception:
            if self.metrics is not None:
                self.metrics.failed()
            raise
        try:
            batches = RecordBatches(producer, self.partition_counts, p, timestamp_ms=self.clock.now_ms())
            topic = self._topic
            for name in {out.topic for out in batch.outputs}:
                await batches.count(topic(name))
            state_topic = topic(STATE_TOPIC)
            changelog = batch.changelog()  # the partition record last
            await _sliced(_add_all(batches, batch, prefix=self.prefix, state_topic=state_topic, changelog=changelog,
                                   p=p))
            stamps.append(("added", time.monotonic()))
            await batches.send_all()
            stamps.append(("sent", time.monotonic()))
            # Every batch acknowledged before the commit: aiokafka's commit does not look
            # at failed batches (it sends EndTxn(COMMIT) anyway), so a unit with a refused
            # batch would commit the rest of it — outputs and offsets without their state.
            await batches.acknowledged()
            stamps.append(("acked", time.monotonic()))
            offsets = {TopicPartition(topic(name), p): max(messages[-1].offset + 1, owned.task.offsets.get(name, 0))
                       for name, messages in topics.items() if messages}
            await producer.send_offsets_to_transaction(offsets, self.group_id)
            stamps.append(("offsets", time.monotonic()))
            await producer.commit_transaction()
            stamps.append(("committed", time.monotonic()))
        except BaseException as exc:
            if self.metrics is not None and isinstance(exc, Exception):  # not a stop
                self.metrics.failed()
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            raise
        # the unit is in Kafka: the local cache follows (a crash here only means the
        # next assignment reads these records back from the changelog). The changelog's
        # last batch ends with the partition record.
        last, count = next((f, n) for f, n in reversed(batches.sent) if f.result().topic == state_topic)
        await _sliced(owned.store.writing(changelog, last.result().offset + count, SLICE_S))
        if timeline.isEnabledFor(logging.DEBUG):
            stamps.append(("stored", time.monotonic()))
            log_timeline(p, records, topics.get("cdrs", []), fetched_at, stamps)
        if self.metrics is not None:
            await asyncio.sleep(0)  # the store's write was one call: counting waits for the next turn
            self.metrics.committed(batch.counts, batch.call_ends_us,
                                   ((record.topic, record.timestamp_ms) for record in records),
                                   time.monotonic() - began, self.clock.now_ms())

    async def _tick_loop(self) -> None:
        """Carry the broker's clock into each owned partition of the tick topic; each
        tick measures it again."""
        while True:
            now_us = self.clock.now_us()
            for p in list(self.owned):
                await self._measure(p, tick_value(now_us))  # delivered (a failure stops the worker)
            await asyncio.sleep(self.settings.tick_interval_s)

    # -- the broker's clock ----------------------------------------------------------------
    async def _measure(self, p: int, value: bytes) -> bool:
        """Send ``value`` to partition ``p`` of the tick topic and, from the broker's
        stamp on it, measure the broker's clock; False when the topic is not
        ``LogAppendTime`` (the acknowledgement carries no stamp of the broker's then)."""
        ack = await self._send_tick(p, value)
        return bool(ack.timestamp_type == LOG_APPEND_TIME)

    async def _send_tick(self, p: int, value: bytes) -> Any:
        """Send ``value`` to partition ``p`` of the tick topic, measure the broker's clock
        from its acknowledgement when the broker stamped it; the acknowledgement."""
        assert self.ticker is not None
        sent = self.clock.sending()
        delivered = await self.ticker.send(self._topic(TICKS), value, partition=p, timestamp_ms=self.clock.now_ms())
        ack = await delivered
        if ack.timestamp_type == LOG_APPEND_TIME:
            self.clock.measured(sent, ack.timestamp)
        return ack

    async def _first_tick(self, p: int) -> edge.Record:
        """A tick for partition ``p`` made ready: the first unit applies it before any
        input. Without it, the inputs waiting on the topics (a backlog, a worker that was
        down) were applied before the partition's first tick of this run — at no wall
        clock at all on a new partition (so no ``future`` check: one CDR ending in 8999
        moved every tenant's "now" there), at a stale one after a long stop (a backlog
        of calls more than a day past it: ``future``)."""
        value = tick_value(self.clock.now_us())
        ack = await self._send_tick(p, value)
        return edge.Record(TICKS, p, ack.offset, None, value, ack.timestamp)

    async def _probe(self) -> None:
        """Measure the broker's clock once before anything else is produced (a probe
        record on partition 0 of the tick topic, which the task skips)."""
        if not await self._measure(0, probe_value()):
            log.warning("%s is not message.timestamp.type=LogAppendTime (a topic made before the worker measured"
                        " the broker's clock): the worker cannot measure it and stamps ticks and records with this"
                        " host's clock, which the broker refuses more than log.message.timestamp.after.max.ms ahead"
                        " of its own; `kafka-configs --alter --entity-type topics --entity-name %s --add-config"
                        " message.timestamp.type=LogAppendTime` fixes it", self._topic(TICKS), self._topic(TICKS))

    async def _refused(self) -> str:
        """Why the broker refused a record's timestamp, with the broker's clock measured
        again: the message the worker stops with."""
        before = self.clock.offset_ms
        stops = ("nothing refused became visible (a unit's transaction is aborted whole); the worker stops, and"
                 " a restart measures the broker's clock again")
        try:
            measured = await asyncio.wait_for(self._measure(0, probe_value()), timeout=10)
        except InvalidTimestampError:
            measured = False  # the tick topic checks the worker's stamps: it is not LogAppendTime
        except Exception as exc:  # noqa: BLE001 - a message is made whatever happens
            return f"the broker refused a record's timestamp, and measuring its clock again failed ({exc!r}): {stops}"
        topic = self._topic(TICKS)
        if not measured:
            return (f"the broker refused a record's timestamp: {topic} is not message.timestamp.type=LogAppendTime,"
                    " so the worker cannot measure the broker's clock and stamps records with this host's, which"
                    " is more than log.message.timestamp.after.max.ms ahead of the broker's. Set LogAppendTime on"
                    f" {topic} (`rater topics create` says so too) or fix the host's clock. Nothing refused became"
                    " visible; the worker stops (and a restart stops the same way until then)")
        was = "not measured" if before is None else f"{before / 1000:+.3f} s"
        assert self.clock.offset_ms is not None
        return (f"the broker refused a record's timestamp (broker clock − host clock: {was} at the previous"
                f" measurement, {self.clock.offset_ms / 1000:+.3f} s now: the clocks moved apart since — the broker's"
                " stepped, or this host's ran off — or a topic's message.timestamp.*.max.ms is tighter than the"
                f" round trip of a measurement); {stops}")


async def _sliced(work: Generator[None, None, T]) -> T:
    """Run work made in slices (it yields between them), letting the event loop run
    whatever is ready between two slices; its result."""
    while True:
        try:
            next(work)
        except StopIteration as done:
            return cast("T", done.value)
        await asyncio.sleep(0)


def _add_all(batches: RecordBatches, batch: Batch, *, prefix: str, state_topic: str,
             changelog: list[tuple[bytes, bytes | None]], p: int) -> Generator[None, None, None]:
    """Add a unit's outputs, then its changelog records, to its record batches, in
    slices of :data:`SLICE_S` (their topics' partition counts looked up first)."""
    slicer = Slicer(SLICE_S)
    add = batches.add
    for out in batch.outputs:
        if slicer.over():
            yield
            slicer.restart()
        add(prefix + out.topic, out.key, out.value)
    for key, value in changelog:
        if slicer.over():
            yield
            slicer.restart()
        add(state_topic, key, value, p)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka logs and swallows what a rebalance callback raises; here it stops the
    worker instead (a partition left half set up would stall unseen)."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await self.driver.revoke({tp.partition for tp in revoked})
        except Exception as exc:  # noqa: BLE001 - whatever it is, the worker must stop
            self.driver.fail(exc)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            self.driver.assigned({tp.partition for tp in assigned})
        except Exception as exc:  # noqa: BLE001 - whatever it is, the worker must stop
            self.driver.fail(exc)


async def _start(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """Start an aiokafka client that a revocation or a stop may cancel meanwhile: the
    start runs to its end first (aiokafka leaves the bootstrap connection of a start
    cancelled half way unclosed — an ``Unclosed AIOKafkaConnection`` ERROR at exit), then
    the cancellation goes on and the caller's ``finally`` stops the client."""
    starting = asyncio.ensure_future(client.start())
    try:
        await asyncio.shield(starting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await starting
        raise


def run_worker(settings: Settings, ctx: RatingContext) -> None:
    """Run a worker until SIGTERM/SIGINT (a clean stop) or a failure (exit non-zero);
    the log is set up by the caller (:mod:`rater.shell.logs`)."""

    # The catalog, the tariff and the prefix index are loaded for good: out of the cyclic
    # collector's sight, and a collection every 50,000 allocations instead of 700 (a
    # batch allocates ~20 objects a CDR, nearly all freed by reference counting).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)

    async def main() -> None:
        driver = Driver(settings, ctx)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, driver.stopping.set)
        await driver.run()

    try:
        asyncio.run(main())
    except (ClockRefused, WebServerError, PreflightFailed, TokensError) as exc:  # the message is the whole story
        log.error("%s", exc)
        raise SystemExit(1) from None
    except Exception as exc:  # a failure that stops the worker: logged (one record, in the log's format)
        log.critical("the worker stopped: %r", exc, exc_info=True)
        raise SystemExit(1) from None
