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


class _Event(Protocol):
    stream: str

    @property
    def payload(self) -> dict[str, Any]: ...


def minor_units(amount: str) -> int:
    """A decimal string the core formatted (``format_decimal``: always its currency's
    number of digits) as an integer of minor units."""
    return int(amount.replace(".", "", 1))


def count_events(counts: Counts, events: Iterable[_Event]) -> None:
    """Count the output events of one step of the core."""
    for event in events:
        payload = event.payload
        kind = payload["type"]
        key: tuple[str, ...] = (OUTPUT, event.stream, kind)
        counts[key] = counts.get(key, 0) + 1
        if kind == "rated_cdr":
            key = (RATED, payload["status"], payload["capability"] or "none")
            counts[key] = counts.get(key, 0) + 1
            currency = payload["currency"]
            for name, field in ((CHARGED, "charge"), (OVERAGE, "overage"), (UNCOLLECTED, "uncollected")):
                amount = minor_units(payload[field])
                if amount:
                    key = (name, currency)
                    counts[key] = counts.get(key, 0) + amount
            debits = payload["lot_debits"]
            if debits:
                key = (DEBITED, currency)
                counts[key] = counts.get(key, 0) + sum(minor_units(debit["amount"]) for debit in debits)
        elif kind == "recharge_request":
            key = (RECHARGE_REQUESTED, payload["currency"])
            counts[key] = counts.get(key, 0) + 1


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
