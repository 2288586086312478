"""Authorize: before a call starts, may it start, and for how long (SPEC §3, §1.6)?

A platform asks :func:`authorize` with what the call's CDR will say (tenant, user, call
type, number type, destination, usage location, start time); the answer is whether a
call of one second would be fully paid, the longest duration that still would be
(``max_duration_s``; None when nothing limits it), what would pay it — the pools in the
order rating draws them, then credits (or overage) at which rate — and the balance.

**One rule set.** Nothing here prices or routes a call: every answer is what rating
itself decides (:func:`rater.core.rating.decide`, :func:`~rater.core.rating.late`,
:func:`~rater.core.rating.unfunded`, :func:`rater.core.ledger.balance_at`) for a
hypothetical CDR of that call starting at ``start_us``. "Fully paid" is what a rated
CDR of that duration would show as ``status = rated`` with nothing ``uncollected``
(overage on a post-paid tenant is paid: it is billed). Paid-ness is monotonic in the
duration (pools draw more, increments and fee only add, lots only expire as the end
moves later, a later end is only later for ``late``), so the longest paid duration is
found by bisection between 1 s and :data:`MAX_CALL_S`.

**It reserves nothing**: it reads the state and changes none of it (the pool sizes it
computes land in ``state.sizes``, a derived cache that is never stored). Two calls
authorized at the same moment may each be given the whole balance or the whole pool;
whatever the second one cannot pay shows on its rated CDR as ``uncollected``
(``partially_funded``, ``no_funds``). A reservation protocol is future work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rater.core.context import US_PER_HOUR, RatingContext
from rater.core.inputs import Cdr
from rater.core.ledger import POSTPAID, balance_at
from rater.core.money import MICRO_DIGITS, format_decimal
from rater.core.rating import CREDITS, OVERAGE, Outcome, decide, late, unfunded
from rater.core.state import TenantState
from rater.core.steps import Work
from rater.core.times import US_PER_S, format_time_us, month_of_fast

MAX_CALL_S = 604_800
"""The longest call a CDR may carry (``duration_seconds`` ≤ a week in schemas/common.json;
longer is a ``schema`` dead letter). A call fully paid for this long has no
``max_duration_s`` (None): money does not limit it."""

CALL_TYPES = frozenset({"user_out", "user_out_conf", "user_out_transfer", "user_out_forwarding", "user_in",
                        "conf_out", "conf_in", "ucap_out", "ucap_in"})
"""The CDR's call types (SPEC §1.2, schemas/common.json)."""
NUMBER_TYPES = frozenset({"geographic", "toll_free", "service"})
"""The CDR's number types (schemas/common.json)."""

_BEYOND_POOLS_S = 1 << 62
"""A duration longer than any pool (minutes × licences × 60): rating such a call draws
every pool that has seconds left, in order, and shows what would pay after them."""


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    """A call about to start, described as its CDR will describe it.

    ``number_type`` is the CDR's (the tenant's own number on the call): an inbound call
    to a ``toll_free`` number is paid from credits, to a ``geographic`` one it is free.
    ``start_us`` is when the call starts (the shell gives "now" when the platform does not
    say); ``user_id`` is None for bots (``ucap_*``)."""

    tenant_id: str
    user_id: str | None
    call_type: str
    number_type: str
    destination: str
    """E.164, or one of the catalog's emergency short codes."""
    user_location: str
    start_us: int


@dataclass(frozen=True, slots=True)
class AvailablePool:
    """A pool that would pay the call, with the seconds it has left."""

    capability: str
    location: str
    scope: str
    month: str
    available_s: int


@dataclass(frozen=True, slots=True)
class CreditTerms:
    """What the part of the call no pool covers would cost (the tariff in force at the
    call's start): paid from credits (``paid_as`` ``MCOPSTNPP``) or, on a post-paid
    tenant, billed as overage (``OVERAGE``). The connection fee is charged once, when any
    part of the call goes to credits; seconds are billed ``first_s`` then by ``next_s``."""

    paid_as: str
    rate_micro_per_min: int
    connection_fee_minor: int
    first_s: int
    next_s: int
    tariff_version: str


@dataclass(frozen=True, slots=True)
class Authorization:
    """The answer of :func:`authorize`.

    ``allowed`` False: a call of one second would not be fully paid, for ``reason`` — a
    rated CDR's (``no_license``, ``no_funds``) or a dead letter's (``unknown_tenant``,
    ``unknown_user``, ``no_rate``, ``currency_mismatch``, ``late``, ``future``,
    ``schema``) — explained for a person in ``message``. ``allowed`` True: ``reason`` is
    None, or ``emergency`` for an emergency call (as on its rated CDR).

    ``max_duration_s``: the longest call that would be fully paid; None when a call of
    :data:`MAX_CALL_S` would be (free and emergency calls, post-paid overage, pools or a
    balance larger than a week of calling). ``limited_by`` is the reason rating would
    give a call one second longer (None when ``max_duration_s`` is None).

    ``pools``: the pools that would pay, in the order rating draws them, with the seconds
    each has left; ``credits``: the terms of what would pay after them, None when nothing
    would (no licence lets credits pay, no rate, a free call). ``balance_minor``: the
    balance at the call's start (lots that expire before then left out); a lot that
    expires while the call runs does not pay for it (rating expires lots at the CDR's end
    first), which ``max_duration_s`` counts. Amounts are in the currency's minor units
    (``exponent`` digits); nothing is reserved."""

    allowed: bool
    reason: str | None
    message: str | None
    max_duration_s: int | None
    limited_by: str | None
    billing_month: str
    pools: tuple[AvailablePool, ...]
    credits: CreditTerms | None
    balance_minor: int | None
    """None for an unknown tenant."""
    currency: str | None
    exponent: int

    def payload(self) -> dict[str, Any]:
        """The answer as JSON (SPEC §2 conventions: money as decimal strings, a rate with
        6 decimals, the increment as ``first/next``)."""
        credits = self.credits
        return {
            "allowed": self.allowed,
            "reason": self.reason,
            "message": self.message,
            "max_duration_seconds": self.max_duration_s,
            "limited_by": self.limited_by,
            "billing_month": self.billing_month,
            "pools": [{"capability": p.capability, "location": p.location, "scope": p.scope, "month": p.month,
                       "available_seconds": p.available_s} for p in self.pools],
            "credits": None if credits is None else {
                "paid_as": credits.paid_as,
                "rate_per_min": format_decimal(credits.rate_micro_per_min, MICRO_DIGITS),
                "connection_fee": format_decimal(credits.connection_fee_minor, self.exponent),
                "increment": f"{credits.first_s}/{credits.next_s}",
                "tariff_version": credits.tariff_version,
            },
            "balance": None if self.balance_minor is None else format_decimal(self.balance_minor, self.exponent),
            "currency": self.currency,
        }


def authorize(state: TenantState | None, request: AuthorizeRequest, ctx: RatingContext,
              now_us: int) -> Authorization:
    """May the call start, and for how long, from the tenant's pools and credits as they
    are at ``now_us`` (the partition's time)? Rating decides, for hypothetical CDRs of
    the call (see the module's docstring). Changes nothing and **reserves nothing**: two
    concurrent calls can each be authorized for the whole balance."""
    month = month_of_fast(request.start_us)
    if state is None:
        return _refused(month, "unknown_tenant", f"tenant {request.tenant_id!r} has no tenant_upserted yet")
    now_us = max(now_us, state.now_us)  # as apply: a tenant's time never goes back
    if request.call_type not in CALL_TYPES or request.number_type not in NUMBER_TYPES:
        return _refused(month, "schema", f"call type {request.call_type!r} or number type"
                                         f" {request.number_type!r} is not one a CDR may carry", state)
    if request.start_us > now_us + ctx.future_us:
        # Its CDR would end over a day past the partition's time (SPEC §1.6). A call's
        # duration is never limited by this: time moves on with the call.
        return _refused(month, "future", f"the call starts at {format_time_us(request.start_us)}, more than"
                                         f" {ctx.future_us // US_PER_HOUR} h after {format_time_us(now_us)}",
                        state)
    work = Work(state, ctx, now_us)
    balance = balance_at(state, max(now_us, request.start_us))
    terms = _rated(work, request, month, _BEYOND_POOLS_S)
    pools = tuple(AvailablePool(*key, available_s=seconds) for key, seconds, _size in terms.draws)
    credits = _credit_terms(state, terms)
    one = _shortfall(work, request, month, 1)
    if one is not None:
        return Authorization(False, one[0], one[1], None, None, month, pools, credits, balance, state.currency,
                             state.exponent)
    reason = _rated(work, request, month, 1).reason  # None, or "emergency"
    longest = _shortfall(work, request, month, MAX_CALL_S)
    if longest is None:
        return Authorization(True, reason, None, None, None, month, pools, credits, balance, state.currency,
                             state.exponent)
    paid, unpaid = 1, MAX_CALL_S  # bisection: ``paid`` s is fully paid, ``unpaid`` s is not
    while unpaid - paid > 1:
        middle = (paid + unpaid) // 2
        shortfall = _shortfall(work, request, month, middle)
        if shortfall is None:
            paid = middle
        else:
            unpaid, longest = middle, shortfall
    return Authorization(True, reason, None, paid, longest[0], month, pools, credits, balance, state.currency,
                         state.exponent)


def _call(request: AuthorizeRequest, duration_s: int) -> Cdr:
    """The CDR a call of ``duration_s`` starting at the request's start would give."""
    return Cdr(request.tenant_id, "", "", None, request.user_id, request.user_location, request.call_type,
               request.number_type, "", request.destination, request.start_us,
               request.start_us + duration_s * US_PER_S, duration_s)


def _rated(work: Work, request: AuthorizeRequest, month: str, duration_s: int) -> Outcome:
    """What rating decides for the call lasting ``duration_s`` (changing nothing)."""
    cdr = _call(request, duration_s)
    return decide(work, cdr, month, "", max(cdr.end_us, work.now_us))


def _shortfall(work: Work, request: AuthorizeRequest, month: str, duration_s: int) -> tuple[str, str] | None:
    """Why a call lasting ``duration_s`` would not be fully paid — (reason, message), the
    checks in rating's order — or None when it would be."""
    end_us = max(request.start_us + duration_s * US_PER_S, work.now_us)  # rating's "now" for the CDR
    too_late = late(work.ctx, month, end_us)
    if too_late is not None:
        return too_late.reason, too_late.message
    outcome = _rated(work, request, month, duration_s)
    if outcome.rejection is not None:
        return outcome.rejection.reason, outcome.rejection.message
    if outcome.status != "rated":
        return outcome.reason or outcome.status, f"no licence of user {request.user_id!r} lets this call be paid"
    state = work.tenant
    balance = balance_at(state, end_us)
    if unfunded(state, outcome.cost, balance):
        return "no_funds", (f"a call of {duration_s} s costs {format_decimal(outcome.cost, state.exponent)}"
                            f" {state.currency}; the balance is {format_decimal(balance, state.exponent)}")
    return None


def _credit_terms(state: TenantState, outcome: Outcome) -> CreditTerms | None:
    """What would pay after the pools, from rating a call longer than every pool."""
    rate = outcome.rate
    if outcome.rejection is not None or rate is None or outcome.tariff is None:
        return None
    return CreditTerms(OVERAGE if state.billing_model == POSTPAID else CREDITS, rate.rate_micro_per_min,
                       rate.connection_fee_minor, rate.first_s, rate.next_s, outcome.tariff.version)


def _refused(month: str, reason: str, message: str, state: TenantState | None = None) -> Authorization:
    """A call that may not start before rating is asked anything."""
    if state is None:
        return Authorization(False, reason, message, None, None, month, (), None, None, None, 0)
    return Authorization(False, reason, message, None, None, month, (), None, balance_at(state, state.now_us),
                         state.currency, state.exponent)
