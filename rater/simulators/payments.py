"""A simulated payment processor: answers each ``recharge_request`` with a
``recharge_result`` (SPEC §2), succeeding unless the tenant is told to fail.

At least once: a request's offset is committed only after its result is acknowledged, so a
crash answers some requests twice. The rater applies a ``request_id`` once, and a repeat
with the same content changes nothing (SPEC §1.6) — so every result here is a function of
the request alone: its ``event_id`` comes from the ``request_id``, its ``processed_at`` is
the request's ``occurred_at`` (plus ``--delay``), never the wall clock at answering time.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, KafkaError

from rater import schemas
from rater.core.times import US_PER_S, format_time_us, parse_time_us_rfc3339
from rater.simulators.display import RateMeter, Rows, per_s, show, wait_or_stop
from rater.simulators.kafka import EXIT_KAFKA, EXIT_OK, SimulatorError, start_producer

DEFAULT_REASON = "card_expired"


@dataclass(frozen=True)
class PaymentRules:
    """How the processor answers: ``failing`` maps a tenant to its failure reason."""

    failing: Mapping[str, str]
    delay_s: float = 0.0


def parse_fail(option: str) -> tuple[str, str]:
    """``TENANT[:REASON]`` → (tenant, reason); the reason defaults to ``card_expired``."""
    tenant, _, reason = option.partition(":")
    return tenant, reason or DEFAULT_REASON


def answer(request: dict[str, Any], rules: PaymentRules) -> dict[str, Any]:
    """The ``recharge_result`` for a valid ``recharge_request``: the same tenant, amount and
    currency; ``failed`` with the tenant's reason if it is told to fail."""
    tenant = request["tenant_id"]
    reason = rules.failing.get(tenant)
    processed_us = parse_time_us_rfc3339(request["occurred_at"]) + round(rules.delay_s * US_PER_S)
    processed_at = format_time_us(processed_us)
    return {
        "type": "recharge_result", "schema_version": 1, "event_id": f"{request['request_id']}/result",
        "tenant_id": tenant, "occurred_at": processed_at, "request_id": request["request_id"],
        "status": "failed" if reason is not None else "succeeded", "amount": request["amount"],
        "currency": request["currency"], "reason": reason, "processed_at": processed_at,
    }


def result_for(value: bytes | None, rules: PaymentRules) -> tuple[dict[str, Any] | None, str | None]:
    """(the result to send, None) for a message of ``recharge-requests``, or (None, why it
    is skipped): not JSON, not a valid request, or a result that would break its schema."""
    try:
        request = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None, "not JSON"
    kind = request.get("type") if isinstance(request, dict) else None
    if kind != "recharge_request":
        return None, f"not a recharge_request (type {kind!r})"
    if error := schemas.first_error("recharge_request", request):
        return None, f"invalid recharge_request: {error}"
    result = answer(request, rules)
    if error := schemas.first_error("recharge_result", result):
        return None, f"its result would be invalid: {error}"
    return result, None


@dataclass
class PaymentTotals:
    """What was answered so far."""

    started_s: float
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    commits_lost: int = 0


class Payments:
    """The payment processor: one consumer (its own group) and one producer."""

    def __init__(self, bootstrap: str, prefix: str, rules: PaymentRules, group: str) -> None:
        self.bootstrap, self.prefix, self.rules, self.group = bootstrap, prefix, rules, group
        self.totals = PaymentTotals(time.monotonic())
        self.meter = RateMeter()
        self.consumer: Any = None

    def rows(self) -> Rows:
        """What the display shows."""
        t = self.totals
        now_s = time.monotonic()
        return [
            ("elapsed", f"{now_s - t.started_s:.1f} s"),
            ("partitions", str(len(self.consumer.assignment())) if self.consumer is not None else "…"),
            ("requests", str(t.requests)),
            ("succeeded", str(t.succeeded)),
            ("failed", str(t.failed)),
            ("skipped", str(t.skipped)),
            ("answers now", per_s(self.meter.rate(now_s, t.succeeded + t.failed))),
            ("failing tenants", ", ".join(f"{k}:{v}" for k, v in sorted(self.rules.failing.items())) or "none"),
        ]

    def summary(self) -> str:
        """The last line."""
        t = self.totals
        return (f"payments: {t.requests} requests, {t.succeeded} succeeded, {t.failed} failed, {t.skipped} skipped"
                f" in {time.monotonic() - t.started_s:.1f} s (group {self.group})")

    async def run(self, stop: asyncio.Event, *, interval_s: float) -> int:
        """Answer requests until ``stop``; the exit code."""
        shown = asyncio.Event()
        display = asyncio.create_task(show("rater simulate payments", self.rows, shown, interval_s=interval_s))
        try:
            producer = await start_producer(self.bootstrap, self.prefix + "recharge-results",
                                            self.prefix + "recharge-requests")
            try:
                consumer = self.consumer = AIOKafkaConsumer(
                    self.prefix + "recharge-requests", bootstrap_servers=self.bootstrap, group_id=self.group,
                    isolation_level="read_committed", enable_auto_commit=False, auto_offset_reset="earliest")
                await consumer.start()
                try:
                    while not stop.is_set():
                        await self._answer_batch(consumer, producer, stop)
                finally:
                    self.consumer = None
                    await consumer.stop()
            finally:
                await producer.stop()
        finally:
            shown.set()
            await display
        print(self.summary(), flush=True)
        return EXIT_OK

    async def _answer_batch(self, consumer: Any, producer: Any, stop: asyncio.Event) -> None:
        """Answer what one fetch brought, then commit what was answered (at least once)."""
        batches = await consumer.getmany(timeout_ms=500)
        due_s = time.monotonic() + self.rules.delay_s
        offsets: dict[Any, int] = {}
        futures = []
        for tp, records in batches.items():
            for record in records:
                if due_s > time.monotonic():
                    await wait_or_stop(stop, due_s - time.monotonic())
                if stop.is_set():
                    break
                self.totals.requests += 1
                result, why = result_for(record.value, self.rules)
                if result is None:
                    self.totals.skipped += 1
                    print(f"payments: skipped {tp.topic}[{tp.partition}]@{record.offset}: {why}",
                          file=sys.stderr, flush=True)
                else:
                    key = record.key or result["tenant_id"].encode()
                    futures.append(await producer.send(self.prefix + "recharge-results", orjson.dumps(result),
                                                       key=key))
                    if result["status"] == "succeeded":
                        self.totals.succeeded += 1
                    else:
                        self.totals.failed += 1
                offsets[tp] = record.offset + 1
        try:
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise SimulatorError(f"a recharge result was not acknowledged: {exc!r}") from None
        if offsets:
            try:
                await consumer.commit(offsets)
            except CommitFailedError:  # partitions moved to another member: it answers them again, same bytes
                self.totals.commits_lost += 1


async def run_payments(bootstrap: str, prefix: str, rules: PaymentRules, group: str, *, interval_s: float,
                       stop: asyncio.Event) -> int:
    """Run the payment processor; the process's exit code."""
    try:
        return await Payments(bootstrap, prefix, rules, group).run(stop, interval_s=interval_s)
    except SimulatorError as exc:
        print(f"payments: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KafkaError as exc:
        print(f"payments: Kafka error: {exc!r}", file=sys.stderr, flush=True)
        return EXIT_KAFKA
