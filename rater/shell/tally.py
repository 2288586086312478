"""What a batch did, counted for the worker's metrics (no Prometheus in here).

A :class:`~rater.shell.task.PartitionTask` counts, while it decides a batch, the events
it keeps for the batch's outputs: ``counts`` maps a key — a kind (one of the constants
below) and its labels — to a number, and the ends of the rated calls are kept for the
latency from a call's end to its commit. The driver adds a batch's counts to the
worker's metrics (:mod:`rater.shell.metrics`) once its unit committed: an aborted unit
counts nothing, so the metrics say what Kafka holds.

Counting reads the events' wire fields (the payload the shell encodes anyway); money is
counted in the tenant's minor units, read back from the decimal strings the core
formatted with exactly its currency's digits (so ``"12.34"`` is 1234 cents, ``"5"`` 5 yen).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

OUTPUT = "output"
"""(OUTPUT, topic, type): records produced per logical topic and event type."""
RATED = "rated"
"""(RATED, status, capability): rated CDRs ("none" when no capability paid)."""
DEAD_LETTER = "dead_letter"
"""(DEAD_LETTER, reason, source topic)."""
CHARGED = "charged"
DEBITED = "debited"
OVERAGE = "overage"
UNCOLLECTED = "uncollected"
"""(CHARGED | DEBITED | OVERAGE | UNCOLLECTED, currency): money in minor units."""
RECHARGE_REQUESTED = "recharge_requested"
"""(RECHARGE_REQUESTED, currency)."""

Counts = dict[tuple[str, ...], int]

OUTPUT_TYPES = (
    ("rated-cdrs", "rated_cdr"), ("balances", "balance"), ("low-balance", "low_balance"),
    ("recharge-requests", "recharge_request"), ("notifications", "pool_exhausted"),
    ("notifications", "credits_expired"), ("notifications", "balance_depleted"),
    ("notifications", "recharge_failed"), ("notifications", "recharge_succeeded"),
    ("dead-letters", "dead_letter"),
)
"""Every (logical output topic, event type) the worker produces (a test holds it to the
schemas and to what the core emits)."""
MONEY = (CHARGED, DEBITED, OVERAGE, UNCOLLECTED)


def expected(statuses: Iterable[str], capabilities: Iterable[str], reasons: Iterable[str],
             source_topics: Iterable[str], currencies: Iterable[str]) -> list[tuple[str, ...]]:
    """The keys a worker can count, to be shown at 0 before their first event: a
    counter that appears only with its first increment hides that increment from
    ``rate()`` and ``increase()`` (Prometheus sees no earlier sample to start from)."""
    capabilities, source_topics, currencies = list(capabilities), list(source_topics), list(currencies)
    keys: list[tuple[str, ...]] = [(OUTPUT, topic, kind) for topic, kind in OUTPUT_TYPES]
    keys += [(RATED, status, capability) for status in statuses for capability in capabilities]
    keys += [(DEAD_LETTER, reason, topic) for reason in reasons for topic in source_topics]
    keys += [(kind, currency) for kind in (*MONEY, RECHARGE_REQUESTED) for currency in currencies]
    return keys


class _Event(Protocol):
    stream: str

    @property
    def payload(self) -> dict[str, Any]: ...


ZEROS = frozenset(("0", "0.0", "0.00", "0.000", "0.0000"))
"""Zero as the core formats it, in currencies of 0 to 4 digits."""


def minor_units(amount: str) -> int:
    """A decimal string the core formatted (``format_decimal``: always its currency's
    number of digits) as an integer of minor units."""
    return int(amount.replace(".", "", 1))


def count_events(counts: Counts, events: Iterable[_Event]) -> None:
    """Count the output events of one step (or a batch's steps) of the core.

    It runs for every output of every batch (the metrics may cost 5 % of throughput):
    rated CDRs, nearly all of the outputs, are counted with no key built for what they
    do not carry (most move no money in some of the four kinds), and added to the
    output count once a call."""
    get = counts.get
    rated = 0
    for event in events:
        payload = event.payload
        kind = payload["type"]
        if kind == "rated_cdr":
            rated += 1
            key: tuple[str, ...] = (RATED, payload["status"], payload["capability"] or "none")
            counts[key] = get(key, 0) + 1
            charge, overage, uncollected = payload["charge"], payload["overage"], payload["uncollected"]
            debits = payload["lot_debits"]
            if charge in ZEROS and overage in ZEROS and uncollected in ZEROS and not debits:
                continue
            currency = payload["currency"]
            if charge not in ZEROS:
                key = (CHARGED, currency)
                counts[key] = get(key, 0) + minor_units(charge)
            if overage not in ZEROS:
                key = (OVERAGE, currency)
                counts[key] = get(key, 0) + minor_units(overage)
            if uncollected not in ZEROS:
                key = (UNCOLLECTED, currency)
                counts[key] = get(key, 0) + minor_units(uncollected)
            if debits:
                total = 0
                for debit in debits:
                    total += minor_units(debit["amount"])
                key = (DEBITED, currency)
                counts[key] = get(key, 0) + total
            continue
        key = (OUTPUT, event.stream, kind)
        counts[key] = get(key, 0) + 1
        if kind == "recharge_request":
            key = (RECHARGE_REQUESTED, payload["currency"])
            counts[key] = get(key, 0) + 1
    if rated:
        counts[_RATED_OUTPUT] = get(_RATED_OUTPUT, 0) + rated


_RATED_OUTPUT = (OUTPUT, "rated-cdrs", "rated_cdr")


def count_dead_letter(counts: Counts, reason: str, source_topic: str) -> None:
    """Count a dead letter (and the record it is on ``dead-letters``)."""
    key = (DEAD_LETTER, reason, source_topic)
    counts[key] = counts.get(key, 0) + 1
    key = (OUTPUT, "dead-letters", "dead_letter")
    counts[key] = counts.get(key, 0) + 1


def count_output(counts: Counts, topic: str, kind: str) -> None:
    """Count one output record the core did not make as an event (a balance snapshot)."""
    key = (OUTPUT, topic, kind)
    counts[key] = counts.get(key, 0) + 1
