"""One partition's work, batch by batch, with no Kafka in it: records in, the records to
produce and the state to write out.

A worker owns partition *p* of every input topic (they are co-partitioned by tenant) and
runs one :class:`PartitionTask` for it. ``process(records)`` applies a batch in order and
returns a :class:`Batch`: the output records, the new state of every tenant the batch
touched (one write per tenant per batch), the ids and users it changed (records of their
own) and the partition's own record — its clock and the next input offset per topic.
The Kafka driver writes all of it, and commits the input offsets, as one unit; this
module only decides what the unit holds, so it is tested without a broker and the
driver stays small.

The partition record is the second line of defence against replays: an input below the
recorded offset of its topic was applied (and its outputs written) in an earlier unit,
so it is skipped — whatever the consumer's committed offset says.

The store's keys (the ``rater-state`` changelog's keys, and the RocksDB cache's):

- ``{tenant_id}`` — the tenant's state (``TenantState.to_dict`` as JSON);
- ``!{tenant_id}/u/{month}/{usage_id}`` and ``!{tenant_id}/a/{id}`` — one record per id
  the tenant applied, its value the fingerprint of what was applied (the core's
  :class:`~rater.core.state.IdMemory`). A forgotten month's ids are deleted with
  tombstones, at most :data:`PURGE_PER_BATCH` per batch;
- ``!{tenant_id}/user/{user_id}`` — one record per user the tenant ever licensed, its
  value ``[usage_location, [capabilities...]]`` (the core's
  :class:`~rater.core.state.UserDirectory`; a removed user keeps a record with no
  capabilities). ``user/`` is neither ``u/`` nor ``a/``: no purge prefix reaches it;
- ``!{tenant_id}/g/{month}`` — the tenant's usage of a billing month (the core's
  :mod:`rater.core.usage`), its value :func:`usage_value`: totals per capability, scope
  and destination country. Deleted once older than :data:`~rater.core.usage.KEPT_MONTHS`;
- ``~purge/{tenant_id}/{month}`` — a forgotten month whose ids are still being deleted;
  its value is the last id key deleted (the cursor: each batch goes on from there);
- ``~partition`` — the partition record.

``!`` sorts before every character a tenant id may hold and ``~`` after, so the tenant
states are one key range of the store.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import msgspec
import orjson

from rater import edge
from rater.core.clock import PartitionClock
from rater.core.context import RatingContext
from rater.core.engine import apply, balance_event, next_deadline, on_time
from rater.core.inputs import Cdr, Input
from rater.core.state import IdMemory, IdReader, TenantState, User, UserReader, usage_key
from rater.core.steps import Step
from rater.core.times import TimeFormatError, parse_time_us
from rater.core.usage import MonthUsage, Totals, UsageDelta, by_month, first_kept, fold
from rater.shell import tally
from rater.shell.keys import key_partition

log = logging.getLogger("rater.task")

TICKS = "rater-ticks"
"""The internal topic that carries the wall clock into each partition (SPEC §1.5)."""
PARTITION_KEY = b"~partition"
"""The changelog key of the partition record; ``~`` can never start a tenant id."""
PARTITION_RECORD_VERSION = 3
"""3: forgotten months are ``~purge/...`` records; 2 listed them in the partition record
(``purging``), read once and turned into purge records by the first batch."""
ID_PREFIX = b"!"
"""Every id and user record's key starts with it (and no tenant id can)."""
TENANT_KEYS = (b"-", b"~")
"""The key range of the tenant states: ``-`` is the lowest character a tenant id may
start with, ``~`` above the highest."""
PURGE_PER_BATCH = 5_000
"""Work a batch spends at most on deleting forgotten months' ids: one unit per id
tombstoned and per month looked at (the rest follows in the next batches)."""
PURGE_PREFIX = b"~purge/"


def id_key(tenant_id: str, memory_key: str) -> bytes:
    """The store key of one remembered id of a tenant."""
    return b"%s%s/%s" % (ID_PREFIX, tenant_id.encode(), memory_key.encode("utf-8", "surrogatepass"))


def user_key(tenant_id: str, user_id: str) -> bytes:
    """The store key of one of a tenant's users."""
    return id_key(tenant_id, f"user/{user_id}")


def user_value(user: User) -> bytes:
    """A user's record: ``[usage_location, [capabilities...]]``."""
    return orjson.dumps([user.usage_location, user.capabilities])


def store_user_reader(get: Callable[[bytes], bytes | None], tenant_id: str) -> UserReader:
    """Reads a tenant's committed users with ``get`` (a store's)."""
    prefix = user_key(tenant_id, "")

    def reader(user_id: str) -> User | None:
        value = get(prefix + user_id.encode("utf-8", "surrogatepass"))
        if value is None:
            return None
        location, capabilities = orjson.loads(value)
        return User(location, tuple(capabilities))

    return reader


def purge_key(tenant_id: str, month: str) -> bytes:
    """The store key of a forgotten month whose ids are being deleted."""
    return b"%s%s/%s" % (PURGE_PREFIX, tenant_id.encode(), month.encode())


USAGE_RECORD_VERSION = 1
USAGE_CACHE_BUCKETS = 5_000
"""Usage buckets a task keeps between batches at most (≈ 500 bytes each, measured: 2.5 MB
a task, 20 MB on a worker owning 8 partitions), in the tenant months used last, decoded
and with each bucket's encoded part: a batch then adds to them without reading and
decoding their records again, and encodes only the buckets it changed (a busy tenant
calls into dozens of countries; its month is re-written by every batch). A month bigger
than the bound is not kept. Issue 15: 25,000 a task were ≈ 100 MB of a worker's memory
once many tenants called; 5,000 still hold the last-used months of 125 tenants calling
~36 destinations each (the 1,000-tenant benchmark's share of a partition)."""
STATE_CACHE_TENANTS = 1_000
"""Tenant states a task keeps decoded between batches at most, those its batches changed
last (≈ 3 KiB each after setup, more with a month of pools: ≈ 3–5 MiB a task, 8 on a
worker owning every partition); the others are read from the store when an input needs
them. Issue 15: every state a task ever loaded stayed in memory, and a task decoded
every tenant of its partition when it started — 3 GiB of states at a million tenants."""
USAGE_MONTHS_SEEN = 1_000
"""The most usage records of a tenant looked at when old months are deleted (13 are kept)."""


def usage_record_key(tenant_id: str, month: str = "") -> bytes:
    """The store key of a tenant's usage of ``month`` (empty: the first part of them all)."""
    return id_key(tenant_id, f"g/{month}")


_USAGE_ENCODER = msgspec.json.Encoder()
_USAGE_DECODER = msgspec.json.Decoder(tuple[int, str, dict[str, tuple[int, ...]]])


def usage_value(month: str, usage: MonthUsage) -> bytes:
    """A tenant's month of usage: ``[version, month, {"capability/scope/country":
    [totals...], ...}]`` (msgspec: a total may outgrow 64 bits)."""
    return _usage_record(month, {key: _usage_part(key, totals) for key, totals in usage.items()})


def _usage_part(key: str, totals: Totals) -> bytes:
    """One bucket of a usage record, encoded: ``"key":[totals...]``."""
    return _USAGE_ENCODER.encode(key) + b":" + _USAGE_ENCODER.encode(totals)


def _usage_record(month: str, parts: dict[str, bytes]) -> bytes:
    """A usage record from its buckets' encoded parts (:func:`usage_value`)."""
    return b"[%d,%s,{%s}]" % (USAGE_RECORD_VERSION, _USAGE_ENCODER.encode(month), b",".join(parts.values()))


class _Month:
    """A tenant month of usage as a task keeps it between batches."""

    __slots__ = ("parts", "usage")

    def __init__(self, usage: MonthUsage) -> None:
        self.usage = usage
        self.parts = {key: _usage_part(key, totals) for key, totals in usage.items()}


def usage_of_record(raw: bytes) -> tuple[str, MonthUsage]:
    """The month and usage of a usage record (:func:`usage_value`)."""
    version, month, usage = _USAGE_DECODER.decode(raw)
    if version != USAGE_RECORD_VERSION:
        raise ValueError(f"usage record version {version}, expected {USAGE_RECORD_VERSION}")
    return month, usage


def month_usage(get: Callable[[bytes], bytes | None], tenant_id: str, month: str) -> MonthUsage:
    """A tenant's usage of ``month`` as a store (``get``) has it."""
    raw = get(usage_record_key(tenant_id, month))
    return {} if raw is None else usage_of_record(raw)[1]


class Store(Protocol):
    """What a task reads of the committed state (the driver's RocksDB cache)."""

    def get(self, key: bytes) -> bytes | None:
        """The value stored under ``key``."""

    def keys(self, prefix: bytes, limit: int, after: bytes = b"") -> list[bytes]:
        """Up to ``limit`` stored keys that start with ``prefix`` (and sort after
        ``after``, if given), in key order."""

    def tenants(self) -> Iterable[tuple[str, bytes]]:
        """Every stored tenant state (read as it is iterated: a million of them do not
        fit in memory at once)."""


class MemoryStore:
    """A :class:`Store` in a dict, written from whole batches: what the driver's store
    holds, for tests and the crash test's independent run."""

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.records.get(key)

    def keys(self, prefix: bytes, limit: int, after: bytes = b"") -> list[bytes]:
        return sorted(k for k in self.records if k.startswith(prefix) and k > after)[:limit]

    def tenants(self) -> list[tuple[str, bytes]]:
        low, high = TENANT_KEYS
        return sorted((k.decode(), v) for k, v in self.records.items() if low <= k < high)

    def write(self, batch: Batch) -> None:
        for key, value in batch.changelog():
            if value is None:
                self.records.pop(key, None)
            else:
                self.records[key] = value


@dataclass(slots=True)
class Produced:
    """One record to produce: a logical output topic, its key and its JSON bytes (not
    changed once made; not ``frozen``, which would double the cost of making one)."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass(slots=True)
class Batch:
    """What one batch made: to be written, with the input offsets, as one unit."""

    outputs: list[Produced] = field(default_factory=list)
    states: dict[str, bytes] = field(default_factory=dict)
    """tenant id → its state (``TenantState.to_dict`` as JSON), for each tenant the batch changed."""
    ids: dict[bytes, bytes | None] = field(default_factory=dict)
    """Id records: the ids the batch applied (key → fingerprint) and the tombstones
    (None) of forgotten months' ids; the purge records (``~purge/...`` → cursor, or a
    tombstone when the month's ids are all gone)."""
    users: dict[bytes, bytes] = field(default_factory=dict)
    """User records: the users the batch changed (key → :func:`user_value`)."""
    usage: dict[bytes, bytes | None] = field(default_factory=dict)
    """Usage records: the tenant months the batch's calls added to (key →
    :func:`usage_value`, the committed totals with the batch's added), and the
    tombstones (None) of months no longer kept."""
    partition_record: bytes = b""
    """The clock and the next input offset per topic, as JSON (changelog key ``~partition``)."""
    applied: int = 0
    skipped: int = 0
    """Records below the recorded offsets: applied in an earlier unit, not again."""
    counts: tally.Counts = field(default_factory=dict)
    """What the batch's outputs hold, counted for the metrics (:mod:`rater.shell.tally`;
    empty when the task does not count)."""
    call_ends_us: list[int] = field(default_factory=list)
    """The end of every call the batch rated (a duplicate too), for the latency from a
    call's end to its commit (empty when the task does not count)."""

    def changelog(self) -> list[tuple[bytes, bytes | None]]:
        """The records for the state changelog, the partition record last."""
        records: list[tuple[bytes, bytes | None]] = list(self.ids.items())
        records.extend(self.users.items())
        records.extend(self.usage.items())
        records.extend((tenant_id.encode(), value) for tenant_id, value in self.states.items())
        records.append((PARTITION_KEY, self.partition_record))
        return records


_STATE_ENCODER = msgspec.json.Encoder()
_STATE_DECODER = msgspec.json.Decoder(dict[str, Any])


def encode_state(state: TenantState) -> bytes:
    """A tenant's state record. msgspec, not orjson: the ledger's totals are integers of
    any size (a CLF balance of 18 integer digits is 22 digits of minor units), which
    orjson refuses to write past 64 bits and reads back as floats."""
    return _STATE_ENCODER.encode(state.to_dict())


def decode_state(raw: bytes, ids: IdMemory | None = None) -> TenantState:
    """A tenant's state from its record (:func:`encode_state`)."""
    return TenantState.from_dict(_STATE_DECODER.decode(raw), ids)


def tick_value(now_us: int) -> bytes:
    """The value of a tick message carrying wall-clock ``now_us``."""
    from rater.core.times import format_time_us  # noqa: PLC0415 - one small helper

    return orjson.dumps({"type": "tick", "now": format_time_us(now_us)})


CLOCK_PROBE = "clock_probe"


def probe_value() -> bytes:
    """The value of a clock probe: a record a worker sends to the tick topic at start to
    measure the broker's clock before it has a time to tick with. A task skips it (no
    dead letter, the clock unchanged)."""
    return orjson.dumps({"type": CLOCK_PROBE})


T = TypeVar("T")


def finish(work: Generator[None, None, T]) -> T:
    """Run work made in slices (:meth:`PartitionTask.slices`) to its end at once; its result."""
    while True:
        try:
            next(work)
        except StopIteration as done:
            return cast("T", done.value)


class Slicer:
    """Says when a slice of work is up: ``slice_s`` seconds since it began (None: never).
    Work in slices yields when :meth:`over` says so and calls :meth:`restart` when it
    is resumed (the time it waited is not its own)."""

    __slots__ = ("budget", "due")

    def __init__(self, slice_s: float | None) -> None:
        self.budget = math.inf if slice_s is None else slice_s
        self.due = time.perf_counter() + self.budget

    def over(self) -> bool:
        return time.perf_counter() >= self.due

    def restart(self) -> None:
        self.due = time.perf_counter() + self.budget


class PartitionTask:
    """The rater's work for one input partition number."""

    def __init__(self, partition: int, ctx: RatingContext, store: Store, *, topic_prefix: str = "",
                 counting: bool = True, partitions: int | None = None, schedule: bool = True) -> None:
        """``store`` holds what earlier units committed (tenant states, ids, the
        partition record); dead letters name the source topic with ``topic_prefix``;
        ``counting``: count each batch's outputs for the metrics (``Batch.counts``);
        ``partitions``: the inputs' partition count — an input whose key Kafka's default
        partitioner puts on another partition is a ``wrong_partition`` dead letter
        (``None``: not checked); ``schedule``: read every stored tenant's deadline now
        (False: the caller runs :meth:`scheduling` before the first batch)."""
        self.partition = partition
        self.partitions = partitions
        self.counting = counting
        self.topic_prefix = topic_prefix
        self.ctx = ctx
        self.store = store
        self.states: dict[str, TenantState] = {}
        """The tenant states in memory: those the batch in flight reads and changes, and
        of the earlier batches' the latest changed (:data:`STATE_CACHE_TENANTS`)."""
        self.clock = PartitionClock()
        self.offsets: dict[str, int] = {}
        """Per input topic, the next offset to apply."""
        self._queued: list[tuple[str, str]] = []
        """Forgotten months a version 2 partition record listed: queued as purge records
        by the next batch."""
        partition_record = store.get(PARTITION_KEY)
        if partition_record:
            record = orjson.loads(partition_record)
            if record.get("v") not in (2, PARTITION_RECORD_VERSION):
                raise ValueError(f"partition record version {record.get('v')!r}, expected {PARTITION_RECORD_VERSION}")
            self.clock = PartitionClock(record["tick_us"], record["now_us"])
            self.offsets = dict(record["offsets"])
            self._queued = [(str(tenant_id), str(month)) for tenant_id, month in record.get("purging", [])]
        self._journal: dict[str, list[tuple[Input | None, int, str]]] = {}
        """Per tenant, the inputs of the batch in flight applied to it (None: time work),
        with the "now" and position each was applied at: what a roll-back applies again."""
        self._touched: dict[str, TenantState] = {}
        """The tenants the batch in flight changed (written with it)."""
        self._balances: dict[str, tuple[int, str]] = {}
        """Per tenant the batch changed what a balance shows: (now, cause) of the last change."""
        self._usage: dict[str, list[UsageDelta]] = {}
        """Per tenant, what the batch in flight's calls add to its usage."""
        self._months: dict[tuple[str, str], _Month] = {}
        """(tenant, month) → its committed usage, the latest used last (at most
        :data:`USAGE_CACHE_BUCKETS` buckets; a unit that fails to commit stops the worker,
        so what a batch wrote here is what the store holds once it committed)."""
        self._cached_buckets = 0
        """The buckets in ``_months``."""
        self._due: list[tuple[int, str]] = []
        """(deadline, tenant) — a lazy heap: an entry whose deadline is no longer the
        tenant's scheduled one is stale and skipped when popped."""
        self._scheduled: dict[str, int] = {}
        """tenant → the deadline it is in the heap for (pushes only when it moves)."""
        if schedule:
            finish(self.scheduling(None))

    def scheduling(self, slice_s: float | None) -> Generator[None, None, None]:
        """Read every stored tenant's deadline (each state decoded, not kept), in slices of
        about ``slice_s`` seconds (None: one): a generator that yields between them. The
        driver runs it on the event loop between other work — at a million tenants it is
        a minute of decoding, and the consumer's heartbeats must go on (issue 15: done in
        one go, the worker lost its group membership and the partitions again and again).
        Run once, before the first batch."""
        slicer = Slicer(slice_s)
        for tenant_id, raw in self.store.tenants():  # decoded for its deadline, not kept
            if slicer.over():
                yield
                slicer.restart()
            self._schedule(tenant_id, self._decoded(tenant_id, raw))

    # -- state ---------------------------------------------------------------------------
    def _state_of(self, tenant_id: str) -> TenantState | None:
        state = self.states.get(tenant_id)
        if state is None:
            raw = self.store.get(tenant_id.encode())
            if raw is None:
                return None
            state = self.states[tenant_id] = self._decoded(tenant_id, raw)
        return state

    def _decoded(self, tenant_id: str, raw: bytes) -> TenantState:
        """A committed tenant state from its record, its ids and users read from the store."""
        state = decode_state(raw, IdMemory(self._reader(tenant_id)))
        state.users.reader = self._user_reader(tenant_id)
        return state

    def _forget_states(self) -> None:
        """Keep at most :data:`STATE_CACHE_TENANTS` states, the latest changed: every
        earlier batch is in the store (:meth:`process`), so a state dropped here is read
        back as it was committed."""
        extra = len(self.states) - STATE_CACHE_TENANTS
        if extra > 0:
            for tenant_id in list(itertools.islice(self.states, extra)):
                del self.states[tenant_id]

    def _reader(self, tenant_id: str) -> IdReader:
        """Reads a tenant's committed ids from the store."""
        get = self.store.get
        prefix = id_key(tenant_id, "")  # id_key, its constant part made once

        def reader(memory_key: str) -> str | None:
            value = get(prefix + memory_key.encode("utf-8", "surrogatepass"))
            return None if value is None else value.decode()

        return reader

    def _user_reader(self, tenant_id: str) -> UserReader:
        """Reads a tenant's committed users from the store."""
        return store_user_reader(self.store.get, tenant_id)

    def _drain_users(self, tenant_id: str, state: TenantState, batch: Batch) -> None:
        """The users a tenant changed in the batch, as records; read from the store from
        then on."""
        if state.users.reader is None:  # a new tenant: its users go to the store too
            state.users.reader = self._user_reader(tenant_id)
        for user_id, user in state.users.drain().items():
            batch.users[user_key(tenant_id, user_id)] = user_value(user)

    def _schedule(self, tenant_id: str, state: TenantState | None) -> None:
        self._schedule_at(tenant_id, None if state is None else next_deadline(state, self.ctx))

    def _schedule_at(self, tenant_id: str, deadline: int | None) -> None:
        if deadline is None:
            self._scheduled.pop(tenant_id, None)
        elif self._scheduled.get(tenant_id) != deadline:
            self._scheduled[tenant_id] = deadline
            heapq.heappush(self._due, (deadline, tenant_id))
            if len(self._due) > 2 * len(self._scheduled) + 1_000:
                # stale entries (deadlines that moved) would stay until they fell due, up
                # to a year: one tenant moving its deadline back and forth grew the heap
                self._due = [(at, tenant) for tenant, at in self._scheduled.items()]
                heapq.heapify(self._due)

    # -- the batch -------------------------------------------------------------------------
    def process(self, records: Iterable[edge.Record]) -> Batch:
        """Apply a batch of records (each topic's in offset order) and say what to write.

        The batch must be in the store (:meth:`Store.get` answers with it) before the
        next call: the ids it applied are read from there from then on."""
        return finish(self.slices(records, None))

    def slices(self, records: Iterable[edge.Record], slice_s: float | None) -> Generator[None, None, Batch]:
        """:meth:`process` in slices of about ``slice_s`` seconds of work (None: one
        slice): a generator that yields between slices and returns the batch. The driver
        lets its event loop serve API requests and the other partitions' units there — a
        request waits for a slice, not for a whole batch. The slices make one batch, one
        unit: nothing else may use the task until the generator has returned, and one
        left unfinished (it raised, or was dropped) leaves the task unusable — the
        worker stops, as when ``process`` raises."""
        slicer = Slicer(slice_s)
        batch = Batch()
        self._forget_states()
        self._journal, self._touched, self._balances, self._usage = {}, {}, {}, {}
        for record in records:
            if slicer.over():
                yield
                slicer.restart()
            if record.offset < self.offsets.get(record.topic, 0):
                batch.skipped += 1
                continue
            self.offsets[record.topic] = record.offset + 1
            batch.applied += 1
            if record.topic == TICKS:
                yield from self._tick(record, batch, slicer)
            else:
                self._input(record, batch)
        yield from self._snapshots(batch, slicer)
        yield from self._states(batch, slicer)
        yield from self._add_usage(batch, slicer)
        for tenant_id, month in self._queued:  # from a version 2 partition record
            batch.ids.setdefault(purge_key(tenant_id, month), b"")
        self._queued = []
        self._purge(batch)
        batch.partition_record = orjson.dumps({
            "v": PARTITION_RECORD_VERSION,
            "partition": self.partition,
            "tick_us": self.clock.tick_us,
            "now_us": self.clock.now_us,
            "offsets": self.offsets,
        })
        return batch

    def _snapshots(self, batch: Batch, slicer: Slicer) -> Generator[None, None, None]:
        """The balance snapshot of each tenant whose balance the batch changed."""
        touched = self._touched
        for tenant_id, (now_us, cause) in self._balances.items():
            if slicer.over():
                yield
                slicer.restart()
            try:
                snapshot = balance_event(touched[tenant_id], self.ctx, now_us, cause)
                value = edge.encode(snapshot.payload)
            except Exception:  # a bug: the money moved and is on the rated CDRs; the next snapshot shows it
                log.exception("partition %d: the balance snapshot of tenant %s (caused by %s) failed;"
                              " none is sent for this batch", self.partition, tenant_id, cause)
                continue
            batch.outputs.append(Produced(snapshot.stream, tenant_id.encode(), value))
            if self.counting:
                tally.count_output(batch.counts, snapshot.stream, "balance")

    def _states(self, batch: Batch, slicer: Slicer) -> Generator[None, None, None]:
        """The state, new ids, forgotten months and users of each tenant the batch changed."""
        states = self.states
        for tenant_id, state in self._touched.items():
            if slicer.over():
                yield
                slicer.restart()
            states.pop(tenant_id, None)  # the latest changed last: forgotten last
            states[tenant_id] = state
            batch.states[tenant_id] = encode_state(state)
            fresh, forgotten = state.ids.drain()
            for memory_key, digest in fresh.items():
                batch.ids[id_key(tenant_id, memory_key)] = digest.encode()
            for month in forgotten:
                # purged from the next batch on; a month with no stored id (the tenant made
                # no call in it, or only in this batch: those ids were never written) has
                # nothing to purge
                if self.store.keys(id_key(tenant_id, usage_key(month, "")), 1):
                    batch.ids[purge_key(tenant_id, month)] = b""
            if forgotten:  # months closed: usage older than 13 months (from the open one) goes
                self._expire_usage(tenant_id, first_kept(state.open_month), batch)
            self._drain_users(tenant_id, state, batch)

    def _add_usage(self, batch: Batch, slicer: Slicer) -> Generator[None, None, None]:
        """The tenant months the batch's calls added to: their committed usage plus the batch's."""
        get, months = self.store.get, self._months
        for tenant_id, deltas in self._usage.items():
            for month, of_month in by_month(deltas).items():
                if slicer.over():
                    yield
                    slicer.restart()
                at = (tenant_id, month)
                kept = months.pop(at, None)
                if kept is None:
                    kept = _Month(month_usage(get, tenant_id, month))
                else:
                    self._cached_buckets -= len(kept.parts)
                usage, parts = fold(kept.usage, of_month), kept.parts
                # the changed buckets in order (a set's order would change the record's bytes)
                for key in dict.fromkeys(delta.key for delta in of_month):
                    parts[key] = _usage_part(key, usage[key])
                batch.usage[usage_record_key(tenant_id, month)] = _usage_record(month, parts)
                self._cache_month(at, kept)

    def _cache_month(self, at: tuple[str, str], kept: _Month) -> None:
        """Keep a tenant month as the latest used, within :data:`USAGE_CACHE_BUCKETS`."""
        months = self._months
        while months and self._cached_buckets + len(kept.parts) > USAGE_CACHE_BUCKETS:
            self._cached_buckets -= len(months.pop(next(iter(months))).parts)
        if len(kept.parts) <= USAGE_CACHE_BUCKETS:
            months[at] = kept
            self._cached_buckets += len(kept.parts)

    def _expire_usage(self, tenant_id: str, first: str, batch: Batch) -> None:
        """Delete a tenant's usage of the months before ``first`` (one seek, a record a month)."""
        prefix = usage_record_key(tenant_id)
        for key in self.store.keys(prefix, USAGE_MONTHS_SEEN):
            month = key[len(prefix):].decode()
            if month >= first:
                return
            batch.usage[key] = None
            gone = self._months.pop((tenant_id, month), None)
            if gone is not None:
                self._cached_buckets -= len(gone.parts)

    def _purge(self, batch: Batch) -> None:
        """Tombstone the stored ids of forgotten months, within :data:`PURGE_PER_BATCH`,
        each month from its cursor on (a scan from the month's first key would step over
        every tombstone already written). A month's ids are never written again once it
        is forgotten: its CDRs are late."""
        budget = PURGE_PER_BATCH
        assert budget >= 2, "a batch's purge looks at a month (1) and deletes ids (1 or more)"
        for entry in self.store.keys(PURGE_PREFIX, PURGE_PER_BATCH):
            budget -= 1  # looking at a month costs too: a thousand empty ones are work
            if budget <= 0:
                break
            tenant_id, month = entry[len(PURGE_PREFIX):].decode().split("/")
            cursor = self.store.get(entry) or b""
            keys = self.store.keys(id_key(tenant_id, usage_key(month, "")), budget, after=cursor)
            for key in keys:
                batch.ids[key] = None
            if len(keys) < budget:
                batch.ids[entry] = None  # fewer than asked for: the month's ids are all gone
            else:
                batch.ids[entry] = keys[-1]  # go on from here in the next batch
            budget -= len(keys)

    def _input(self, record: edge.Record, batch: Batch) -> None:
        try:
            decoded = edge.decode(record)
            if isinstance(decoded, edge.Refusal):
                self._dead_letter(record, decoded, batch)
                return
            if self.partitions is not None and record.key is not None \
                    and (home := key_partition(record.key, self.partitions)) != self.partition:
                # a tenant lives on one partition: its key's (the API finds it there too)
                self._dead_letter(record, edge.Refusal(
                    "wrong_partition", f"tenant {decoded.tenant_id!r} belongs on partition {home} of"
                    f" {self.partitions} (Kafka's default partitioner, murmur2), not {self.partition}: its"
                    " producer uses another partitioner (librdkafka clients: partitioner=murmur2_random)",
                    decoded.tenant_id), batch)
                return
            if isinstance(decoded, Cdr):
                future = self.clock.refuses(decoded.end_us, self.ctx)
                if future is not None:
                    self._dead_letter(record, edge.Refusal("future", future, decoded.tenant_id), batch)
                    return
        except Exception as exc:  # noqa: BLE001 - containment: one input's failure is its dead letter
            self._internal_error(record, batch, exc, None)
            return
        tenant_id = decoded.tenant_id
        state = self._state_of(tenant_id)  # outside containment: a store that cannot be read stops the worker
        try:
            now_us = self.clock.now_us
            if self.clock.tick_us is None and not isinstance(decoded, Cdr) and decoded.occurred_us > now_us:
                # no wall clock on this partition (ticks are off): a command is applied at
                # its own occurred_at, never at 1970 (a recharge requested then would time
                # out at once); its tenant's time only, never the partition's; and never
                # more than a day past its record's Kafka timestamp (which the broker keeps
                # within an hour of its clock): occurred_at 8999 expired every lot
                now_us = max(now_us, min(decoded.occurred_us, record.timestamp_ms * 1000 + self.ctx.future_us))
            step = apply(state, decoded, self.ctx, now_us, record.position)
            encoded = self._encoded(tenant_id, step)
        except Exception as exc:  # noqa: BLE001 - containment: one input's failure is its dead letter
            self._internal_error(record, batch, exc, tenant_id)
            return
        self._journal.setdefault(tenant_id, []).append((decoded, now_us, record.position))
        if isinstance(decoded, Cdr) and step.rejection is None:
            # the tenant's "now" after the step: a CDR's end, but nothing for a duplicate
            self.clock = self.clock.accept(step.now_us)
            if self.counting:
                batch.call_ends_us.append(decoded.end_us)
        self._took(tenant_id, step, encoded, batch)
        if step.rejection is not None:
            refusal = edge.Refusal(step.rejection.reason, step.rejection.message, tenant_id)
            self._dead_letter(record, refusal, batch)

    def _tick(self, record: edge.Record, batch: Batch, slicer: Slicer) -> Generator[None, None, None]:
        """A tick: every tenant whose deadline it passed does its time work, in slices —
        lots bought at one moment expire together, and a tick past that moment is the
        time work of every such tenant of the partition (docs/benchmarks.md, "Month ends
        come together": 9.5 s in one go at 125,000 tenants, past the group's session
        timeout)."""
        try:
            tick = orjson.loads(record.value or b"")
            if isinstance(tick, dict) and tick.get("type") == CLOCK_PROBE:
                return  # it measured the broker's clock: nothing to apply
            now_us = parse_time_us(tick["now"])
        except (orjson.JSONDecodeError, TimeFormatError, KeyError, TypeError) as exc:
            self._dead_letter(record, edge.Refusal("schema", f"not a tick: {exc}"[:300]), batch)
            return
        self.clock = self.clock.tick(now_us)
        now = self.clock.now_us
        while self._due and self._due[0][0] <= now:
            if slicer.over():
                yield
                slicer.restart()
            deadline, tenant_id = heapq.heappop(self._due)
            if self._scheduled.get(tenant_id) != deadline:
                continue  # stale: the tenant's deadline moved since it was pushed
            del self._scheduled[tenant_id]
            state = self._state_of(tenant_id)  # outside containment: the store's failure stops the worker
            if state is None:
                continue
            try:
                step = on_time(state, self.ctx, now)
                encoded = self._encoded(tenant_id, step)
            except Exception as exc:  # noqa: BLE001 - containment: this tenant's time work only
                # its time work is tried again with its next input (not at every tick)
                self._internal_error(record, batch, exc, tenant_id, reschedule=False)
                continue
            self._journal.setdefault(tenant_id, []).append((None, now, record.position))
            self._took(tenant_id, step, encoded, batch)

    def _encoded(self, tenant_id: str, step: Step) -> tuple[list[Produced], int | None]:
        """A step's outputs as records and its tenant's next deadline (if the state
        changed) — everything of a step that can fail, done before any of it is kept."""
        key = tenant_id.encode()
        outputs = [Produced(out.stream, key, edge.encode(out.payload)) for out in step.outputs]
        deadline = next_deadline(step.state, self.ctx) if step.changed and step.state is not None else None
        return outputs, deadline

    def _took(self, tenant_id: str, step: Step, encoded: tuple[list[Produced], int | None], batch: Batch) -> None:
        """Keep what a step changed and emitted (``encoded``: :meth:`_encoded` of it)."""
        state = step.state
        if state is None:
            return
        outputs, deadline = encoded
        if step.changed:
            self._keep(tenant_id, state, deadline)
        batch.outputs.extend(outputs)
        if step.usage is not None:
            self._usage.setdefault(tenant_id, []).append(step.usage)
        if self.counting:
            tally.count_events(batch.counts, step.outputs)  # their payloads are made: encoded above
        if step.balance_cause is not None:
            self._balances[tenant_id] = (step.now_us, step.balance_cause)

    def _keep(self, tenant_id: str, state: TenantState, deadline: int | None) -> None:
        """A tenant's state changed in this batch: it is written with the batch, and
        scheduled for its next ``deadline``."""
        if state.ids.reader is None:  # a new tenant: its ids go to the store too
            state.ids.reader = self._reader(tenant_id)
        self.states[tenant_id] = state
        self._touched[tenant_id] = state
        self._schedule_at(tenant_id, deadline)

    # -- containment -------------------------------------------------------------------------
    def _internal_error(self, record: edge.Record, batch: Batch, exc: Exception, tenant_id: str | None, *,
                        reschedule: bool = True) -> None:
        """Deciding ``record`` raised (a bug, never bad input: bad input is a refusal): the
        record becomes an ``internal_error`` dead letter with its bytes, and the tenant's
        state goes back to where it was before the record, its outputs from it dropped."""
        log.error("partition %d: %s raised deciding %s (tenant %s): the record is dead-lettered"
                  " internal_error", self.partition, type(exc).__name__, record.position, tenant_id,
                  exc_info=exc)
        if tenant_id is not None:
            self._roll_back(tenant_id, reschedule=reschedule)
        message = f"the rater failed deciding this input ({type(exc).__name__}: {exc})"
        self._dead_letter(record, edge.Refusal("internal_error", message[:500], tenant_id), batch)

    def _roll_back(self, tenant_id: str, *, reschedule: bool) -> None:
        """Rebuild a tenant's state as it was before the input that failed: its committed
        state (the store) with its inputs of this batch applied again — the core is
        deterministic, so they decide as before; their outputs are already in the batch.
        Costs the tenant's inputs so far in this batch, and only when something failed."""
        self.states.pop(tenant_id, None)  # ``_touched`` and ``_balances`` keep their order: overwritten below
        state = self._state_of(tenant_id)
        for inp, now_us, position in self._journal.get(tenant_id, []):
            if inp is None:
                if state is None:
                    continue
                step = on_time(state, self.ctx, now_us)
            else:
                step = apply(state, inp, self.ctx, now_us, position)
            if step.state is not None and step.changed:
                state = step.state
                self._keep(tenant_id, state, next_deadline(state, self.ctx))
            if step.balance_cause is not None:
                self._balances[tenant_id] = (step.now_us, step.balance_cause)
        if reschedule:
            self._schedule(tenant_id, state)
        else:
            self._scheduled.pop(tenant_id, None)

    def _dead_letter(self, record: edge.Record, refusal: edge.Refusal, batch: Batch) -> None:
        event: dict[str, Any] = edge.dead_letter(record, self.topic_prefix + record.topic, refusal)
        batch.outputs.append(Produced("dead-letters", record.key, edge.encode(event)))
        if self.counting:
            tally.count_dead_letter(batch.counts, refusal.reason, record.topic)
