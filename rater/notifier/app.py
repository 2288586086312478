"""The notifier's Faust app: a contacts table fed from ``account-commands``, agents that
deliver ``notifications`` and ``low-balance`` events, and one agent per retry level.

Every topic is keyed by tenant id and co-partitioned with the others, so partition ``p``
of each of them (and of both tables' changelogs) belongs to one notifier. Faust's tables
read and write the partition of the "current event": every table access here happens
while handling one event of that tenant (no batching across partitions), and a retry
record is written to the partition of the event it retries.

Delivery is at least once. A delivered (event id, channel, target) is remembered per
tenant in the ``delivered`` table (for ``RATER_NOTIFY_KEEP_DELIVERED``), so an event seen
again — a rebalance or a restart replays what was not committed — is not sent again; a
crash between a delivery and that table's write can send it again, with the same
``Message-ID`` / ``Idempotency-Key``. A failed attempt is never retried in place: a
retry record goes to the level's topic, whose agent waits for its due time, so one
tenant's broken endpoint holds up nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, cast

import faust
import orjson
from faust.exceptions import ConsumerNotStarted
from faust.types import EventT, StreamT
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from rater import schemas
from rater.notifier import delivery, retry
from rater.notifier.consumer import NotifierApp
from rater.notifier.metrics import NotifyMetrics
from rater.notifier.offsets import OffsetKeeper
from rater.notifier.render import KINDS
from rater.notifier.settings import (
    COMMANDS,
    FAILURES,
    LOW_BALANCE,
    NOTIFICATIONS,
    RETRY_TOPICS,
    TOPICS,
    NotifySettings,
)

log = logging.getLogger("rater.notify")

TABLES = ("contacts", "delivered")
"""The tables; their changelogs are ``{app id}-{table}-changelog``."""



def _decode(value: bytes | None) -> dict[str, Any] | None:
    """A JSON object, or ``None`` for anything else."""
    if value is None:
        return None
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


def _retry_record(value: bytes | None) -> dict[str, Any] | None:
    """A valid ``notification_retry`` record (schemas/notification_retry.json), or ``None``.
    A record written before the schema (no ``type``, ``schema_version``) is taken as one."""
    record = _decode(value)
    if record is None:
        return None
    record = {"type": "notification_retry", "schema_version": 1, **record}
    return record if schemas.first_error("notification_retry", record) is None else None


def _headroom(buffer: int) -> int:
    """Records a buffer of ``buffer`` takes past the mark where Faust stops fetching its
    partitions (a record put at ``floor(buffer / 1.25)`` or more: mode's
    ``FlowControlQueue``) while staying below full."""
    return buffer - math.floor(buffer / 1.25) - 1


def max_poll_records(buffer: int, partitions: int) -> int:
    """How many records one fetch may bring, so that no buffer of ``buffer`` records
    ever fills.

    Faust reads every topic in one fetch loop, and that loop waits while a buffer it puts
    into is full. A retry level's agent holds its records until they are due — up to
    hours — so a full buffer there would stop every topic's reading for that long. Faust
    stops fetching a partition once one of its records is put into a buffer past the
    mark, but still hands out what it fetched already: each partition that puts into the
    buffer can do so once more, with at most one fetch. An agent's buffer takes one
    topic's ``partitions``; the tables' changelogs share one buffer, ``2 × partitions``."""
    return max(1, _headroom(buffer) // (2 * partitions))


def least_buffer(partitions: int) -> int:
    """The smallest ``RATER_NOTIFY_BUFFER`` for ``partitions`` (the notifier refuses to
    start below it): one record a fetch still leaves every buffer below full."""
    buffer = 1
    while _headroom(buffer) < 2 * partitions:
        buffer += 1
    return buffer


def _manual(stream: StreamT[bytes]) -> faust.Stream[bytes]:
    """``stream`` with manual acks: an event is acked once handled, so one cut short by a
    shutdown is read again (Faust's own iteration acks it on the way out). Faust's
    ``StreamT`` does not declare ``noack``; the stream an agent gets is a ``Stream``."""
    return cast("faust.Stream[bytes]", stream).noack()  # type: ignore[return-value]


def _unix(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def contacts_of(command: dict[str, Any]) -> dict[str, Any] | None:
    """The contacts a valid ``tenant_upserted`` sets (``None``: it has none).

    The rater takes any object as ``notify`` (a mistyped contact never costs the account
    its upsert): each field is held here to ``common.json#/$defs/notify`` on its own, and
    what breaks it is left out, logged — a bad address among good ones leaves the good
    ones, a bad ``locale`` is English."""
    notify = command.get("notify")
    if not isinstance(notify, dict):
        return None
    tenant = command.get("tenant_id")
    emails: list[str] = []
    raw_emails = notify.get("emails")
    for address in raw_emails if isinstance(raw_emails, list) else [] if raw_emails is None else [raw_emails]:
        if schemas.definition_error("notify", {"emails": [address]}) is None:
            if address not in emails and len(emails) < MAX_EMAILS:
                emails.append(address)
        else:
            log.warning("tenant %s: contact address %.80r ignored (not an e-mail address)", tenant, address)
    webhook = notify.get("webhook_url")
    if webhook is not None and schemas.definition_error("notify", {"webhook_url": webhook}) is not None:
        log.warning("tenant %s: webhook_url %.80r ignored (not an http(s) URL)", tenant, webhook)
        webhook = None
    locale = notify.get("locale")
    if locale is not None and schemas.definition_error("notify", {"locale": locale}) is not None:
        log.warning("tenant %s: locale %.40r ignored (not a BCP 47 tag): English", tenant, locale)
        locale = None
    if not emails and not webhook:
        return None
    return {"emails": emails, "webhook_url": webhook, "locale": locale or "en"}


MAX_EMAILS = 10
"""The addresses a tenant's contacts hold at most (``common.json#/$defs/notify``)."""


class TenantLocks:
    """One lock per tenant with deliveries under way: a tenant's events go one at a
    time, in the order the agent took them, while other tenants' go on."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, tenant: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(tenant, (asyncio.Lock(), 0))
        self._locks[tenant] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[tenant]
            if users == 1:
                del self._locks[tenant]
            else:
                self._locks[tenant] = (lock, users - 1)


class PartitionRevoked(Exception):
    """The event's partition went to another notifier before it was handled: not done,
    the other one reads it."""


class DeliveryWindow:
    """Up to ``size`` events of one agent handled at once (a slow endpoint holds one
    slot; the agent reads on). The offsets keeper hears of each event taken and each
    finished, and commits a partition's offset only past events that are done, so a
    committed offset never passes an event still in flight. Events are acked to Faust in
    the order the agent read them (its bookkeeping only: Faust commits none of these
    topics). Each event's task starts in the agent's context, where Faust's "current
    event" is that event: the tables read and write its partition."""

    def __init__(self, stream: faust.Stream[bytes], size: int, keeper: OffsetKeeper,
                 on_failure: Callable[[], None]) -> None:
        self.stream = stream
        self.keeper = keeper
        self.on_failure = on_failure
        self.slots = asyncio.Semaphore(size)
        self.order: deque[list[Any]] = deque()  # [event, done] in the order read
        self.tasks: set[asyncio.Task[None]] = set()
        self.failure: BaseException | None = None

    async def __aenter__(self) -> DeliveryWindow:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        """The agent stops: what is in flight is cancelled and stays unacked (read again)."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def start(self, event: EventT[bytes], handling: Coroutine[Any, Any, None]) -> None:
        """Handle ``event`` in a task of its own once a slot is free."""
        if self.failure is not None:  # a bug: the agent crashes (its event stays unacked)
            handling.close()
            raise self.failure
        self.keeper.handed(event.message)
        try:
            if self.slots.locked():  # every slot taken: the agent (and what Faust holds for it) waits
                self.keeper.agent_busy(event.message.topic)
                await self.slots.acquire()
                self.keeper.agent_free(event.message.topic)
            else:
                await self.slots.acquire()
        except asyncio.CancelledError:  # the agent stops: not handled, read again
            handling.close()
            self.keeper.released(event.message)
            raise
        entry = [event, False]
        self.order.append(entry)
        task = asyncio.create_task(self._run(entry, handling))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, entry: list[Any], handling: Coroutine[Any, Any, None]) -> None:
        message = entry[0].message
        finished = False
        try:
            await handling
            finished = True
        except asyncio.CancelledError:
            self.keeper.released(message)
            raise
        except PartitionRevoked:
            pass  # not done here: the notifier that holds the partition now reads it
        except Exception as exc:  # a bug: stop, and read the event again at the next start
            self.keeper.released(message)
            log.exception("handling %s offset %d failed: stopping (its offset is not committed)",
                          message.tp, message.offset)
            self.failure = exc
            self.on_failure()
            return
        finally:
            self.slots.release()
        if finished:
            self.keeper.finished(message)
        else:
            self.keeper.released(message)
        entry[1] = True
        while self.order and self.order[0][1]:
            await self.stream.ack(self.order.popleft()[0])


class Notifier:
    """The app, its topics, tables and agents."""

    def __init__(self, settings: NotifySettings, *, partitions: int, replication: int,
                 registry: CollectorRegistry | None = None, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.settings = settings
        self.partitions = partitions
        self.metrics = NotifyMetrics(registry or CollectorRegistry())
        self.locks = TenantLocks()
        self.failed = False
        longest_wait_s = max(settings.retry_delays_s) + settings.timeout_s + 60.0
        self.app = NotifierApp(
            settings.app_id,
            broker=[f"kafka://{host.strip()}" for host in settings.bootstrap.split(",") if host.strip()],
            store="rocksdb://",
            datadir=str(settings.data_dir),
            autodiscover=False,
            loop=loop,
            processing_guarantee="at_least_once",
            topic_partitions=partitions,
            topic_replication_factor=replication,
            topic_disable_leader=True,  # no assignor leader topic to create: the group's leader is Kafka's
            consumer_auto_offset_reset="earliest",  # a first start reads every tenant_upserted
            stream_buffer_maxsize=settings.buffer,
            broker_max_poll_records=max_poll_records(settings.buffer, partitions),
            stream_wait_empty=False,  # a rebalance does not wait for a retry agent's wait
            stream_recovery_delay=0.0,
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=settings.session_timeout_s / 5,
            broker_commit_livelock_soft_timeout=longest_wait_s,
            stream_processing_timeout=longest_wait_s,
            key_serializer="raw",
            value_serializer="raw",
            web_enabled=True,
            web_port=settings.web_port,
            web_bind=settings.web_host,
            web_host=settings.web_host,
        )
        # acks=False: Faust commits none of these topics (and fills no "gaps"); the
        # keeper commits what the agents finished (rater.notifier.progress says why).
        self._topics = {name: self.app.topic(settings.topic_prefix + name, key_type=bytes, value_type=bytes,
                                             partitions=partitions, acks=False) for name in TOPICS}
        self.keeper = OffsetKeeper(self.app, settings.bootstrap, settings.app_id,
                                   {topic.get_topic_name() for name, topic in self._topics.items() if name != FAILURES})
        self.app.task(self.keeper.run)
        self.app.on_before_shutdown.connect(self.keeper.on_stop)
        as_json: faust.Schema[str, Any] = faust.Schema(key_serializer="json", value_serializer="json")
        self.contacts = self.app.Table("contacts", partitions=partitions, schema=as_json,
                                       help="tenant id → its contacts")
        self.delivered = self.app.Table("delivered", partitions=partitions, schema=as_json,
                                        help="tenant id → {delivery key: unix time delivered}")
        # One actor per agent (Faust's concurrency > 1 can commit past an event still in
        # flight): the agent itself keeps up to RATER_NOTIFY_CONCURRENCY events in flight
        # and acks them in the order it read them (DeliveryWindow).
        self.app.agent(self._topics[COMMANDS], name="contacts")(self._contacts_agent)
        self.app.agent(self._topics[NOTIFICATIONS], name="notifications")(self._notifications_agent)
        self.app.agent(self._topics[LOW_BALANCE], name="low-balance")(self._notifications_agent)
        for level, name in enumerate(RETRY_TOPICS, start=1):
            self.app.agent(self._topics[name], name=f"retry-{level}")(self._retry_agent)
        self._pages()

    def _fail(self) -> None:
        """A delivery task raised (a bug): stop the process cleanly, exit code 3."""
        if not self.failed:
            self.failed = True
            os.kill(os.getpid(), signal.SIGTERM)

    # --- web ---------------------------------------------------------------------------

    def _pages(self) -> None:
        """``/metrics`` (Prometheus) and ``/healthz`` on Faust's web server."""
        registry, app = self.metrics.registry, self.app

        async def metrics(view: Any, _request: Any) -> Any:
            with contextlib.suppress(ConsumerNotStarted):
                self._measure_lag()
            return view.bytes(generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

        async def healthz(view: Any, _request: Any) -> Any:
            try:
                assigned = len(app.consumer.assignment())
            except ConsumerNotStarted:
                return view.json({"status": "starting"}, status=503)
            return view.json({"status": "ok", "rebalancing": bool(app.rebalancing), "assigned_partitions": assigned})

        app.page("/metrics")(metrics)
        app.page("/healthz")(healthz)

    def _measure_lag(self) -> None:
        """``rater_notify_consumer_lag`` now, from each partition's end and committed offset
        (as of the keeper's last tick)."""
        consumer = self.app.consumer
        lag = dict.fromkeys(self._topics, 0)
        names = {topic.get_topic_name(): name for name, topic in self._topics.items()}
        for tp in consumer.assignment():
            name = names.get(tp.topic)
            if name is None:
                continue
            try:
                highwater = consumer.highwater(tp)
            except AssertionError:  # aiokafka's "not assigned": the consumer thread is rebalancing
                highwater = None
            behind = self.keeper.lag(tp, highwater)
            if behind is not None:
                lag[name] += behind
        for name, value in lag.items():
            if name != FAILURES:
                self.metrics.lag.labels(name).set(value)

    # --- contacts ----------------------------------------------------------------------

    async def _contacts_agent(self, stream: StreamT[bytes]) -> None:
        manual = _manual(stream)
        async for event in manual.events():
            self.keeper.handed(event.message)
            try:
                await self._on_command(event)
            except BaseException:
                self.keeper.released(event.message)  # not done: read again
                raise
            self.keeper.finished(event.message)
            await manual.ack(event)

    async def _on_command(self, event: EventT[bytes]) -> None:
        command = _decode(event.value)
        if command is None or command.get("type") != "tenant_upserted":
            return  # other commands; what is not JSON the rater dead-letters
        if schemas.first_error("tenant_upserted", command) is not None:
            self.metrics.contacts.labels("invalid").inc()
            return
        contacts = contacts_of(command)
        if contacts is None:
            self.contacts.pop(command["tenant_id"], None)
            self.metrics.contacts.labels("cleared").inc()
        else:
            self.contacts[command["tenant_id"]] = contacts
            self.metrics.contacts.labels("set").inc()
        await self.app.producer.flush()  # the change is in the changelog before the command's offset

    # --- fresh notifications -----------------------------------------------------------

    async def _notifications_agent(self, stream: StreamT[bytes]) -> None:
        manual = _manual(stream)  # acked once handled: a shutdown mid-delivery leaves it to be read again
        async with DeliveryWindow(manual, self.settings.concurrency, self.keeper, self._fail) as window:
            async for event in manual.events():
                await window.start(event, self._on_notification(event))

    def _skip(self, reason: str) -> None:
        self.metrics.skipped.labels(reason).inc()

    async def _on_notification(self, event: EventT[bytes]) -> None:
        payload = _decode(event.value)
        kind = payload.get("type") if payload is not None else None
        if payload is None or kind not in KINDS:
            self._skip("other_type")  # pool_exhausted, credits_expired, …
            return
        if schemas.first_error(str(kind), payload) is not None:
            self._skip("invalid")
            return
        if self.settings.max_age_s and time.time() - _unix(payload["occurred_at"]) > self.settings.max_age_s:
            self._skip("too_old")
            return
        tenant = payload["tenant_id"]
        contacts = self.contacts.get(tenant)
        if not contacts:
            self._skip("no_contacts")
            return
        targets = [(delivery.EMAIL, address) for address in contacts["emails"]]
        if contacts.get("webhook_url"):
            targets.append((delivery.WEBHOOK, contacts["webhook_url"]))
        async with self.locks.hold(tenant):
            await asyncio.gather(*(self._deliver(event, payload, channel=channel, target=target,
                                                 locale=contacts.get("locale"), attempts=0)
                                   for channel, target in targets))

    # --- retries -----------------------------------------------------------------------

    async def _retry_agent(self, stream: StreamT[bytes]) -> None:
        manual = _manual(stream)  # a shutdown while waiting for the due time must not ack the record
        async with DeliveryWindow(manual, self.settings.concurrency, self.keeper, self._fail) as window:
            async for event in manual.events():
                await window.start(event, self._on_retry(event))

    async def _on_retry(self, event: EventT[bytes]) -> None:
        record = _retry_record(event.value)
        if record is None:  # not the notifier's (a hand-written record): contained, not a crash
            self._skip("invalid")
            log.warning("%s offset %d: not a notification_retry record: skipped", event.message.tp,
                        event.message.offset)
            return
        if not await self._wait_until(float(record["due_at"]), event):
            raise PartitionRevoked  # the partition moved to another notifier: it retries it
        payload = record["event"]
        async with self.locks.hold(payload["tenant_id"]):
            await self._deliver(event, payload, channel=record["channel"], target=record["target"],
                                locale=record.get("locale"), attempts=int(record["attempts"]))

    async def _wait_until(self, due_at: float, event: EventT[bytes]) -> bool:
        """Sleep until ``due_at``; ``False`` if the event's partition was revoked meanwhile."""
        tp = event.message.tp
        while (left := due_at - time.time()) > 0:
            await asyncio.sleep(min(left, 1.0))
            if tp not in self.app.consumer.assignment():
                return False
        return True

    # --- one delivery ------------------------------------------------------------------

    def _delivered(self, tenant: str, key: str) -> bool:
        return key in (self.delivered.get(tenant) or {})

    def _remember(self, tenant: str, key: str, now: float) -> None:
        """Add ``key`` and drop what is older than the TTL: one read and one write, with no
        await between them (other deliveries of the tenant may have written meanwhile)."""
        horizon = now - self.settings.delivered_ttl_s
        kept = {k: t for k, t in (self.delivered.get(tenant) or {}).items() if t >= horizon}
        kept[key] = now
        self.delivered[tenant] = kept

    async def _deliver(self, event: EventT[bytes], payload: dict[str, Any], *, channel: str, target: str,
                       locale: str | None, attempts: int) -> None:
        """Attempt number ``attempts + 1`` of one (event, channel, target), then remember
        it, schedule a retry or write the failure."""
        tenant, kind = payload["tenant_id"], payload["type"]
        key = delivery.delivery_key(payload["event_id"], channel, target)
        if self._delivered(tenant, key):
            self.metrics.deliveries.labels(kind, channel, "duplicate").inc()
            return
        self.metrics.in_flight.inc()
        try:
            if self.settings.dry_run:
                outcome = delivery.dry_run(payload, channel, target, locale, self.settings)
            elif channel == delivery.EMAIL:
                outcome = await delivery.send_email(payload, target, locale, self.settings)
            else:
                outcome = await delivery.send_webhook(payload, target, self.settings)
        finally:
            self.metrics.in_flight.dec()
        attempts += 1
        step = retry.after(outcome, attempts, self.settings.retry_delays_s, self.settings.max_attempts)
        now = time.time()
        if step is None:
            self._remember(tenant, key, now)
            self.metrics.deliveries.labels(kind, channel, "delivered").inc()
            self.metrics.latency.labels(channel).observe(max(0.0, now - _unix(payload["occurred_at"])))
            return
        record: dict[str, Any] = {"type": "notification_retry", "schema_version": 1,  # schemas/notification_*.json
                                  "event": payload, "channel": channel, "target": target, "locale": locale,
                                  "attempts": attempts, "last_error": outcome.error}
        if isinstance(step, retry.Retry):
            record["due_at"] = now + step.delay_s
            await self._send(RETRY_TOPICS[step.level - 1], event, tenant, record)
            self.metrics.deliveries.labels(kind, channel, "retry").inc()
            self.metrics.retries.labels(channel, str(step.level)).inc()
            log.info("%s %s to %s %s: attempt %d failed (%s); retry in %gs", kind, payload["event_id"], channel,
                     target, attempts, outcome.error, step.delay_s)
            return
        record.update(type="notification_failed", reason=step.reason, failed_at=_now_text())
        await self._send(FAILURES, event, tenant, record)
        self.metrics.deliveries.labels(kind, channel, "failed").inc()
        self.metrics.failures.labels(channel, step.reason).inc()
        log.warning("%s %s to %s %s: given up after %d attempt(s), %s: %s", kind, payload["event_id"], channel,
                    target, attempts, step.reason, outcome.error)

    async def _send(self, name: str, event: EventT[bytes], tenant: str, record: dict[str, Any]) -> None:
        """Write ``record`` on the current event's partition of topic ``name`` and wait
        for the broker's ack (before the event's offset can be committed)."""
        sent = await self._topics[name].send(key=tenant.encode(), value=orjson.dumps(record),
                                             partition=event.message.partition)
        await sent
