"""A tenant's usage by month: calls, seconds and money per capability, scope and
destination country — what an admin's monthly report shows (``GET /v1/tenants/{t}/usage``).

Rating makes one :class:`UsageDelta` per call it rates (not for a duplicate, not for a
dead letter): :func:`call_usage`, from the same decided values as the rated CDR, so the
aggregates are the sums of the rated CDRs of the month. The shell keeps each tenant's
month as a record of its own beside the tenant's state (like the ids): a state write
costs the same whatever the tenant's traffic, a batch writes one record per tenant and
month it rated calls of, and a month's report reads one record. :func:`fold` adds a
batch's deltas to a month and :func:`usage_report` makes the report; both are pure.

A month's buckets are keyed ``capability/scope/country`` (:func:`bucket_key`; the wire
contract's capabilities are ``[A-Z0-9_]``, scopes and countries letters, so ``/`` never
appears in one); an empty part stands for "none" (a free call has no capability that
paid; an unknown destination has no country and no scope).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rater.core.money import format_decimal

COUNTS = ("calls", "seconds", "pool_seconds", "credit_seconds", "charged_seconds", "charge", "uncollected")
"""What a bucket totals, in this order: calls rated; their duration; the seconds pools
paid; the seconds credits (or overage) paid; those seconds as billed (increments); the
charge and the part of it no lot paid (minor units)."""
MONEY = frozenset({"charge", "uncollected"})
"""The totals in minor units (decimal strings in a report)."""
KEPT_MONTHS = 13
"""A tenant's usage is kept for the current month and the 12 before it (the life of a lot
of credits): :func:`first_kept` says which months the shell deletes, when the duplicate
memory forgets a month (:class:`rater.core.state.IdMemory`)."""

Totals = tuple[int, ...]
"""A bucket's totals, one per :data:`COUNTS`."""
NO_USAGE: Totals = (0,) * len(COUNTS)
MonthUsage = dict[str, Totals]
"""A tenant's month: bucket key (:func:`bucket_key`) → totals."""


class UsageDelta:
    """One rated call's contribution to its bucket of its billing month."""

    __slots__ = ("counts", "key", "month")

    def __init__(self, month: str, key: str, counts: Totals) -> None:
        self.month = month
        self.key = key
        self.counts = counts

    def __repr__(self) -> str:
        return f"UsageDelta({self.month!r}, {self.key!r}, {self.counts!r})"


def bucket_key(capability: str | None, scope: str | None, country: str | None) -> str:
    """A bucket's key in its month: ``capability/scope/country``, an empty part for none."""
    return f"{capability or ''}/{scope or ''}/{country or ''}"


def bucket_of(key: str) -> tuple[str | None, str | None, str | None]:
    """(capability, scope, destination country) of a bucket key, None for an empty part."""
    capability, scope, country = key.split("/")
    return capability or None, scope or None, country or None


def call_usage(month: str, capability: str | None, scope: str | None, country: str | None,  # noqa: PLR0917
               duration_s: int, pool_s: int, credit_s: int, charged_s: int, charge: int,
               uncollected: int) -> UsageDelta:
    """A rated call (``rated``, ``partially_funded`` or ``blocked``) as a usage delta."""
    return UsageDelta(month, bucket_key(capability, scope, country),
                      (1, duration_s, pool_s, credit_s, charged_s, charge, uncollected))


def add(totals: Sequence[int] | None, delta: Sequence[int]) -> Totals:
    """A bucket's totals with ``delta`` added (``totals`` None: a bucket with no usage yet)."""
    if len(delta) != 7 or (totals is not None and len(totals) != 7):  # 7: len(COUNTS), spelled out below
        raise ValueError(f"usage totals have {len(COUNTS)} counts, got {len(delta)} and {totals and len(totals)}")
    if totals is None:
        return tuple(delta)
    return (totals[0] + delta[0], totals[1] + delta[1], totals[2] + delta[2], totals[3] + delta[3],
            totals[4] + delta[4], totals[5] + delta[5], totals[6] + delta[6])


def fold(month: MonthUsage, deltas: Iterable[UsageDelta]) -> MonthUsage:
    """``month`` (changed in place) with ``deltas`` (of that month) added."""
    for delta in deltas:
        key = delta.key
        month[key] = add(month.get(key), delta.counts)
    return month


def by_month(deltas: list[UsageDelta]) -> dict[str, list[UsageDelta]]:
    """``deltas`` grouped by their billing month, each in order."""
    months: dict[str, list[UsageDelta]] = {}
    for delta in deltas:
        months.setdefault(delta.month, []).append(delta)
    return months


def first_kept(open_month: str) -> str:
    """The oldest month whose usage is kept while ``open_month`` is a tenant's open month:
    usage is kept for it and the 12 before it (:data:`KEPT_MONTHS`); older months are
    deleted (the shell does it when the duplicate memory forgets a month)."""
    index = int(open_month[:4]) * 12 + int(open_month[5:7]) - 1 - (KEPT_MONTHS - 1)
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def usage_report(month: MonthUsage, exponent: int) -> dict[str, Any]:
    """A month's usage: its ``totals`` and one entry per bucket (capability, scope,
    destination country, sorted), money as decimal strings in the tenant's currency."""
    total = NO_USAGE
    rows: list[dict[str, Any]] = []
    for key, counts in sorted(month.items()):
        total = add(total, counts)
        capability, scope, country = bucket_of(key)
        row: dict[str, Any] = {"capability": capability, "scope": scope, "destination_country": country}
        row.update(_shown(counts, exponent))
        rows.append(row)
    return {"totals": _shown(total, exponent), "usage": rows}


def _shown(counts: Sequence[int], exponent: int) -> dict[str, Any]:
    return {name: format_decimal(value, exponent) if name in MONEY else value
            for name, value in zip(COUNTS, counts, strict=True)}
