"""A tenant's usage by month: calls, seconds and money per capability, scope and
destination country — what an admin's monthly report shows (``GET /v1/tenants/{t}/usage``).

Rating makes one :class:`UsageDelta` per call it rates (not for a duplicate, not for a
dead letter): :func:`call_usage`, from the same decided values as the rated CDR, so the
aggregates are the sums of the rated CDRs of the month. The shell keeps each bucket as a
record of its own beside the tenant's state (like the ids): a state write costs the same
whatever the tenant's traffic, and a month's report reads only that month's buckets.
:func:`add` folds a delta into a bucket's totals and :func:`usage_report` makes the
report; both are pure.

A bucket is (billing month, capability, scope, destination country); an empty string
stands for "none" (a free call has no capability that paid; an unknown destination has
no country and no scope).
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

Bucket = tuple[str, str, str, str]
"""(billing month, capability, scope, destination country); ``""`` for none."""
Totals = tuple[int, ...]
"""A bucket's totals, one per :data:`COUNTS`."""
NO_USAGE: Totals = (0,) * len(COUNTS)


class UsageDelta:
    """One rated call's contribution to its bucket."""

    __slots__ = ("bucket", "counts")

    def __init__(self, bucket: Bucket, counts: Totals) -> None:
        self.bucket = bucket
        self.counts = counts

    def __repr__(self) -> str:
        return f"UsageDelta({self.bucket!r}, {self.counts!r})"


def call_usage(month: str, capability: str | None, scope: str | None, country: str | None,  # noqa: PLR0917
               duration_s: int, pool_s: int, credit_s: int, charged_s: int, charge: int,
               uncollected: int) -> UsageDelta:
    """A rated call (``rated``, ``partially_funded`` or ``blocked``) as a usage delta."""
    return UsageDelta((month, capability or "", scope or "", country or ""),
                      (1, duration_s, pool_s, credit_s, charged_s, charge, uncollected))


def add(totals: Sequence[int] | None, delta: Sequence[int]) -> Totals:
    """A bucket's totals with ``delta`` added (``totals`` None: a bucket with no usage yet)."""
    if totals is None:
        return tuple(delta)
    if len(totals) != len(COUNTS) or len(delta) != len(COUNTS):
        raise ValueError(f"usage totals have {len(COUNTS)} counts, got {len(totals)} and {len(delta)}")
    return tuple(a + b for a, b in zip(totals, delta, strict=True))


def first_kept(forgotten: str) -> str:
    """The oldest month whose usage is kept once the duplicate memory forgot billing
    month ``forgotten``: the month after it is open by then, and usage is kept for that
    one and the 12 before it (:data:`KEPT_MONTHS`); older months' buckets are deleted."""
    index = int(forgotten[:4]) * 12 + int(forgotten[5:7]) - 1 + 1 - (KEPT_MONTHS - 1)
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def usage_report(buckets: Iterable[tuple[Bucket, Sequence[int]]], exponent: int) -> dict[str, Any]:
    """A month's usage: its ``totals`` and one entry per bucket (capability, scope,
    destination country, sorted), money as decimal strings in the tenant's currency."""
    total = NO_USAGE
    rows: list[dict[str, Any]] = []
    for (_month, capability, scope, country), counts in sorted(buckets, key=lambda item: item[0]):
        total = add(total, counts)
        row: dict[str, Any] = {"capability": capability or None, "scope": scope or None,
                               "destination_country": country or None}
        row.update(_shown(counts, exponent))
        rows.append(row)
    return {"totals": _shown(total, exponent), "usage": rows}


def _shown(counts: Sequence[int], exponent: int) -> dict[str, Any]:
    return {name: format_decimal(value, exponent) if name in MONEY else value
            for name, value in zip(COUNTS, counts, strict=True)}
