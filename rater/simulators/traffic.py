"""CDR traffic: the seeded call mix of :mod:`rater.workload`, sent live at a chosen rate.

The workload's times start at a fixed date; here each CDR ends when it is sent (its start
is the end minus its duration), because the worker dead-letters CDRs far from its
partition's clock (``late``, ``future``). Usage ids carry a run id, so a second run with the
same seed sends new calls instead of ``id_conflict`` dead letters.

``--setup`` first sends every tenant's account commands (tenant, licences, funds,
auto-recharge) dated the first instant of the current UTC month: a second run in the same
month repeats them exactly, which the worker ignores (SPEC §1.6, ids are idempotency keys).
Then it waits until a worker has applied them, because the topics are not ordered against
each other: a CDR read before its tenant exists would be dead-lettered ``unknown_tenant``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from rater.core.times import US_PER_S, format_time_us
from rater.simulators.display import RateMeter, Rows, per_s, show, wait_or_stop
from rater.simulators.kafka import EXIT_KAFKA, EXIT_NOT_READY, EXIT_OK, SimulatorError, start_producer
from rater.simulators.pacing import TokenBucket
from rater.workload import Workload

SETUP_TOPIC = "account-commands"


@dataclass(frozen=True)
class TrafficPlan:
    """What to send: the workload, how fast, and for how long (either limit, or none)."""

    rate_per_s: float
    tenants: int
    users: int
    seed: int
    run_id: str
    tenant_prefix: str | None = None
    """Tenant ids are ``{tenant_prefix}{n:05d}``; by default the prefix names the seed and the
    sizes (``s1t10u100-``), because a tenant's country, users and licences depend on all
    three: another mix under the same ids would be ``id_conflict`` dead letters."""
    duration_s: float | None = None
    count: int | None = None
    notify_domain: str | None = None
    """Give every tenant a contact for the notifier (docs/notifications.md):
    ``admin@{tenant}.{notify_domain}``, in its country's language."""
    setup: bool = True
    setup_timeout_s: float = 120.0


@dataclass
class TrafficTotals:
    """What was sent so far; ``acked`` counts the broker's acknowledgements."""

    started_s: float
    sending_s: float | None = None
    """When the first CDR was sent (after the setup)."""
    made: int = 0
    acked: int = 0
    failed: int = 0
    first_error: str | None = None
    by_call_type: Counter[str] = field(default_factory=Counter)

    def average_per_s(self, now_s: float) -> float:
        """CDRs acknowledged per second since sending began."""
        if self.sending_s is None or now_s <= self.sending_s:
            return 0.0
        return self.acked / (now_s - self.sending_s)

    def done(self, future: asyncio.Future[Any]) -> None:
        """The producer's answer for one message."""
        if future.cancelled() or future.exception() is not None:
            self.failed += 1
            self.first_error = self.first_error or repr(future.exception())
        else:
            self.acked += 1


def setup_time_us(now_us: int) -> int:
    """The first instant of ``now_us``'s UTC month: when the setup commands say they happened."""
    moment = datetime.fromtimestamp(now_us / US_PER_S, UTC)
    return int(moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()) * US_PER_S


LOCALE_OF_COUNTRY = {"BR": "pt-BR", "PT": "pt-BR", "ES": "es", "MX": "es", "AR": "es", "CO": "es", "CL": "es",
                     "RU": "ru", "CN": "zh-CN", "IT": "it"}
"""The language a simulated tenant's notifications are written in (others: English)."""


def dated_setup(workload: Workload, at_us: int, notify_domain: str | None = None) -> list[dict[str, Any]]:
    """The workload's account commands, dated ``at_us`` (funds bought then); with
    ``notify_domain``, each tenant's contact (:attr:`TrafficPlan.notify_domain`)."""
    at = format_time_us(at_us)
    events = []
    for _topic, command in workload.setup():
        dated = {**command, "occurred_at": at}
        if "purchased_at" in dated:
            dated["purchased_at"] = at
        if notify_domain is not None and dated["type"] == "tenant_upserted":
            dated["notify"] = {"emails": [f"admin@{dated['tenant_id']}.{notify_domain}".lower()],
                               "locale": LOCALE_OF_COUNTRY.get(dated["country"], "en")}
        events.append(dated)
    return events


def live_cdr(cdr: dict[str, Any], end_us: int, run_id: str, n: int) -> dict[str, Any]:
    """``cdr`` ending at ``end_us``, with ids of this run (``{tenant}/sim-{run}/{n}``)."""
    usage_id = f"{cdr['tenant_id']}/sim-{run_id}/{n}"
    end = format_time_us(end_us)
    return cdr | {
        "event_id": usage_id, "occurred_at": end, "usage_id": usage_id, "call_id": f"call-{run_id}-{n}",
        "conference_id": None if cdr["conference_id"] is None else f"conf-{run_id}-{n}",
        "start_time": format_time_us(end_us - cdr["duration_seconds"] * US_PER_S), "end_time": end,
    }


def wall_clock_us() -> int:
    """Now, in µs UTC (milliseconds are enough for a CDR)."""
    return time.time_ns() // 1_000_000 * 1_000


def ready_tenant(balance: dict[str, Any], setup_ids: set[str]) -> str | None:
    """The tenant whose setup a balance snapshot shows applied: one caused by its last
    setup command, or by anything that is not one of its setup commands (a later input:
    on a compacted topic the setup's own snapshots may be gone)."""
    tenant = balance.get("tenant_id")
    cause = balance.get("caused_by")
    if not isinstance(tenant, str) or cause == f"{tenant}/ar":
        return tenant if isinstance(tenant, str) else None
    return None if cause in setup_ids else tenant


async def await_accounts(bootstrap: str, prefix: str, tenants: set[str], setup_ids: set[str], *,
                         timeout_s: float, stop: asyncio.Event) -> set[str]:
    """Read ``balances`` from the start until every tenant's setup shows applied (or the
    time runs out, or ``stop``); returns the tenants still missing."""
    missing = set(tenants)
    consumer = AIOKafkaConsumer(prefix + "balances", bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while missing and time.monotonic() < deadline and not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for record in records:
                    missing.discard(ready_tenant(orjson.loads(record.value), setup_ids) or "")
    finally:
        await consumer.stop()
    return missing


class Traffic:
    """One run of the traffic simulator."""

    def __init__(self, bootstrap: str, prefix: str, plan: TrafficPlan) -> None:
        self.bootstrap, self.prefix, self.plan = bootstrap, prefix, plan
        self.workload = Workload(plan.tenants, plan.users, plan.seed)
        for n, tenant in enumerate(self.workload.tenants):
            tenant.tenant_id = f"{self.tenant_prefix}{n:05d}"
        # drawn now whether sent or not: the same seed gives the same calls either way
        self.setup_events = dated_setup(self.workload, setup_time_us(wall_clock_us()), plan.notify_domain)
        self.totals = TrafficTotals(time.monotonic())
        self.meter = RateMeter()
        self.phase = "starting"

    @property
    def tenant_prefix(self) -> str:
        """What every tenant id of this run starts with."""
        plan = self.plan
        default = f"s{plan.seed}t{plan.tenants}u{plan.users}-"
        return default if plan.tenant_prefix is None else plan.tenant_prefix

    def rows(self) -> Rows:
        """What the display shows."""
        t = self.totals
        now_s = time.monotonic()
        elapsed_s = now_s - t.started_s
        rows = [
            ("phase", self.phase),
            ("elapsed", f"{elapsed_s:.1f} s"),
            ("sent (acked)", f"{t.acked}"),
            ("rate now", per_s(self.meter.rate(now_s, t.acked))),
            ("rate average", f"{t.average_per_s(now_s):.1f}/s"),
            ("target", f"{self.plan.rate_per_s:g}/s"),
            ("failed", f"{t.failed}"),
        ]
        rows += [(f"  {kind}", str(n)) for kind, n in sorted(t.by_call_type.items())]
        return rows

    def summary(self) -> str:
        """The last line: what was sent, how fast."""
        t = self.totals
        now_s = time.monotonic()
        sending_s = now_s - (t.sending_s or now_s)
        return (f"traffic: sent {t.acked} CDRs in {sending_s:.1f} s ({t.average_per_s(now_s):.1f}/s,"
                f" target {self.plan.rate_per_s:g}/s), failed {t.failed}, tenants {self.tenant_prefix}00000.."
                f"{self.tenant_prefix}{self.plan.tenants - 1:05d}, run {self.plan.run_id}, topic {self.prefix}cdrs")

    async def run(self, stop: asyncio.Event, *, interval_s: float) -> int:
        """Set up (if asked), send until the count, the duration or ``stop``; the exit code."""
        shown = asyncio.Event()  # the display outlives ``stop``: it shows the flush too
        display = asyncio.create_task(show("rater simulate traffic", self.rows, shown, interval_s=interval_s))
        try:
            producer = await start_producer(self.bootstrap, self.prefix + "cdrs", self.prefix + SETUP_TOPIC)
            try:
                if self.plan.setup and not stop.is_set():
                    await self._setup(producer, stop)
                self.phase = "sending"
                await self._send(producer, stop)
                self.phase = "flushing"
                await producer.flush()
            finally:
                await producer.stop()
        finally:
            shown.set()
            await display
        print(self.summary(), flush=True)
        if self.totals.failed:
            raise SimulatorError(f"{self.totals.failed} CDRs were not acknowledged: {self.totals.first_error}")
        return EXIT_OK

    async def _setup(self, producer: Any, stop: asyncio.Event) -> None:
        self.phase = f"setup: sending {len(self.setup_events)} account commands"
        futures = [await producer.send(self.prefix + SETUP_TOPIC, orjson.dumps(e), key=e["tenant_id"].encode())
                   for e in self.setup_events]
        try:
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise SimulatorError(f"the account commands were not acknowledged: {exc}") from None
        tenants = {t.tenant_id for t in self.workload.tenants}
        self.phase = f"setup: waiting for a worker to apply {len(tenants)} tenants"
        ids = {e["command_id"] for e in self.setup_events}
        missing = await await_accounts(self.bootstrap, self.prefix, tenants, ids, timeout_s=self.plan.setup_timeout_s,
                                       stop=stop)
        if missing and not stop.is_set():
            raise SimulatorError(
                f"no worker applied the accounts of {len(missing)} of {len(tenants)} tenants within"
                f" {self.plan.setup_timeout_s:g} s (is a worker running on {self.prefix or 'unprefixed '}topics?)",
                EXIT_NOT_READY)

    def _calls(self) -> Iterator[dict[str, Any]]:
        count = self.plan.count
        return self.workload.cdrs(count if count is not None else 1 << 62)

    async def _send(self, producer: Any, stop: asyncio.Event) -> None:
        plan, totals = self.plan, self.totals
        calls = self._calls()
        topic = self.prefix + "cdrs"
        start_s = totals.sending_s = time.monotonic()
        end_s = start_s + plan.duration_s if plan.duration_s is not None else float("inf")
        bucket = TokenBucket(plan.rate_per_s, max(1.0, plan.rate_per_s), start_s)  # at most 1 s of catch-up
        remaining = plan.count if plan.count is not None else 1 << 62
        while remaining > 0 and not stop.is_set():
            now_s = time.monotonic()
            if now_s >= end_s:
                break
            allowed = bucket.take(now_s, remaining)
            end_us = wall_clock_us()
            for _ in range(allowed):
                cdr = live_cdr(next(calls), end_us, plan.run_id, totals.made)
                future = await producer.send(topic, orjson.dumps(cdr), key=cdr["tenant_id"].encode())
                future.add_done_callback(totals.done)
                totals.made += 1
                totals.by_call_type[cdr["call_type"]] += 1
            remaining -= allowed
            if remaining > 0:
                await wait_or_stop(stop, min(bucket.wait_s(time.monotonic()), max(0.0, end_s - time.monotonic())))


async def run_traffic(bootstrap: str, prefix: str, plan: TrafficPlan, *, interval_s: float,
                      stop: asyncio.Event) -> int:
    """Run the traffic simulator; the process's exit code."""
    try:
        return await Traffic(bootstrap, prefix, plan).run(stop, interval_s=interval_s)
    except SimulatorError as exc:
        print(f"traffic: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KafkaError as exc:
        print(f"traffic: Kafka error: {exc!r}", file=sys.stderr, flush=True)
        return EXIT_KAFKA
