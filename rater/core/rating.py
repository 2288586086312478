"""Rating one CDR: check it, decide what pays (pools, credits, overage) and at what
price, then commit the decision — seconds drawn, lots debited, the ``rated_cdr`` event
and what follows from it.

Every check runs before anything changes (:func:`rate_cdr`); what rating decided is an
:class:`Outcome`, made by :func:`decide` without changing the state and applied by
:func:`_commit`. The rated CDR's wire fields are formatted later, from the values decided
here (:func:`_rated_payload`). Authorize (:mod:`rater.core.authorize`) asks :func:`decide`,
:func:`late` and :func:`unfunded` the same questions about a call that has not happened:
one rule set for both.
"""

from __future__ import annotations

from typing import Any

from rater.core.context import US_PER_HOUR, RatingContext
from rater.core.deadlines import advance
from rater.core.destinations import Destination
from rater.core.inputs import INBOUND, USER_OUT, Cdr, fingerprint
from rater.core.ledger import POSTPAID, PREPAID, balance_moved, debit_fifo
from rater.core.money import format_decimal
from rater.core.pools import draw_pools
from rater.core.state import PoolKey, PoolUse, TenantState, User, usage_key
from rater.core.steps import SCHEMA_VERSION, Output, Rejection, Work
from rater.core.tariff import Rate, Tariff, charged_seconds, usage_cost_minor
from rater.core.times import format_time_us, month_end_us, month_of_fast
from rater.core.usage import call_usage

CREDITS = "MCOPSTNPP"
"""The ``capability`` of a prepaid rated CDR whose credit part paid the most seconds."""
OVERAGE = "OVERAGE"
"""The ``capability`` of a postpaid rated CDR whose charged part paid the most seconds."""


class Outcome:
    """What rating decided for one CDR, before any of it is applied: a ``rejection``
    (the CDR is a dead letter), or what pays it — pools, then credits (or overage) — and
    at what price. Whether the balance covers the price is known only when the money
    moves (:func:`unfunded`)."""

    __slots__ = ("billed_s", "cost", "credit_s", "dest", "digest", "draws", "end_us", "fee", "month", "rate",
                 "reason", "rejection", "status", "tariff")

    def __init__(self, month: str, digest: str, end_us: int, dest: Destination, tariff: Tariff | None,
                 *, status: str = "rated") -> None:
        self.month = month
        self.digest = digest
        self.end_us = end_us
        self.dest = dest
        """The destination's country, premium flag and rates (one longest-prefix lookup)."""
        self.tariff = tariff
        self.status = status
        self.reason: str | None = None
        self.draws: list[tuple[PoolKey, int, int]] = []
        """(pool, seconds drawn, pool size) in drawing order."""
        self.credit_s = 0
        self.billed_s = 0
        self.fee = 0
        self.cost = 0
        self.rate: Rate | None = None
        """The rate of the part paid from credits (or overage), when there is one."""
        self.rejection: Rejection | None = None
        """Why the CDR is a dead letter (nothing else in the outcome counts then)."""


def _seen(state: TenantState, usage_id: str, month: str) -> str | None:
    """The fingerprint a usage id was rated with, if any. Ids are unique across every
    remembered month (the open one and the closed one in grace), not only the month a
    CDR starts in: the same id in another month is the same call sent again with other
    content, never a new call. The CDR's own billing ``month`` is always looked at too
    (it is one of those whenever its ids can exist: a guard, not a rule)."""
    ids = state.ids
    seen = ids.get(usage_key(state.open_month, usage_id))
    if seen is None:
        for remembered in state.frozen:
            seen = ids.get(usage_key(remembered, usage_id))
            if seen is not None:
                return seen
        if month != state.open_month and month not in state.frozen:
            seen = ids.get(usage_key(month, usage_id))
    return seen


def rate_cdr(work: Work, cdr: Cdr, position: str) -> Rejection | None:
    """Rate a CDR. Every check runs before anything changes; a CDR that passes them
    moves "now" to its end time (a rejected one does not: SPEC §1.6)."""
    state, ctx = work.tenant, work.ctx
    end_us = cdr.end_us if cdr.end_us > work.now_us else work.now_us
    month = month_of_fast(cdr.start_us)
    too_late = late(ctx, month, end_us)
    if too_late is not None:
        return too_late
    digest = fingerprint(cdr)
    seen = _seen(state, cdr.usage_id, month)
    if seen is not None:
        if seen != digest:
            return Rejection("id_conflict", f"usage_id {cdr.usage_id!r} was rated with other content")
        advance(work, work.now_us)  # no time from a duplicate, but what fell due before it
        tariff, destination = ctx.destination_at(cdr.start_us, cdr.destination_number)
        duplicate = Outcome(month, digest, end_us, destination, tariff, status="duplicate")
        _emit_rated(work, cdr, duplicate, [],
                    f"rated_cdr/{cdr.usage_id}/duplicate/{position}")
        return None
    outcome = decide(work, cdr, month, digest, end_us)
    if outcome.rejection is not None:
        return outcome.rejection
    _commit(work, cdr, outcome)
    return None


def late(ctx: RatingContext, month: str, end_us: int) -> Rejection | None:
    """Why a CDR of billing ``month`` rated at ``end_us`` (its end, or "now" if later) is
    ``late``: its month closed more than the grace period before; else None."""
    if month_end_us(month) + ctx.grace_us <= end_us:
        return Rejection("late", f"billing month {month} closed more than {ctx.grace_us // US_PER_HOUR} h"
                                 f" before {format_time_us(end_us)}")
    return None


def decide(work: Work, cdr: Cdr, month: str, digest: str, end_us: int) -> Outcome:
    """Decide what pays a CDR billed in ``month`` (not late, not a duplicate) and at what
    price, changing nothing in the tenant's state (the pool sizes it computes are cached
    in ``state.sizes``, which is derived, never stored). Its ``rejection`` says why it is
    a dead letter instead."""
    state, ctx = work.tenant, work.ctx
    emergency = cdr.destination_number in ctx.catalog.emergency and cdr.call_type not in INBOUND
    tariff, destination = ctx.destination_at(cdr.start_us, cdr.destination_number)
    outcome = Outcome(month, digest, end_us, destination, tariff)
    if not emergency and not cdr.destination_number.startswith("+"):
        outcome.rejection = Rejection("schema", f"destination {cdr.destination_number!r} is not E.164 and not an"
                                                f" emergency number of catalog {ctx.catalog.version}")
        return outcome
    if cdr.call_type in INBOUND and cdr.number_type != "toll_free":
        return outcome  # free, recorded
    if emergency:
        outcome.reason = "emergency"
        return outcome
    user = None
    if cdr.call_type in USER_OUT or cdr.call_type == "conf_out":
        user = state.users.get(cdr.user_id) if cdr.user_id is not None else None
        if user is None:
            outcome.rejection = Rejection("unknown_user",
                                          f"user {cdr.user_id!r} was never licensed in tenant {state.tenant_id!r}")
            return outcome
    left = draw_pools(work, cdr, user, outcome.dest, outcome.month, draws=outcome.draws) if cdr.duration_s else 0
    if left and not _may_pay_from_credits(cdr, user, ctx):
        # Nothing may pay (the rest): ``blocked``, or ``partially_funded`` when a pool
        # paid a part; the unpaid seconds show as duration − pool seconds, uncharged.
        outcome.status = "partially_funded" if outcome.draws else "blocked"
        outcome.reason = "no_license"
    elif left:
        outcome.rejection = _price_credit_part(work, cdr, outcome, left)
    return outcome


def unfunded(state: TenantState, cost_minor: int, balance_minor: int) -> bool:
    """Whether a call costing ``cost_minor`` finds ``balance_minor`` too low to pay it in
    full: it is then ``partially_funded``, reason ``no_funds`` (SPEC §1.6). Never on
    post-paid, where the cost is overage."""
    return state.billing_model == PREPAID and cost_minor > balance_minor


def _may_pay_from_credits(cdr: Cdr, user: User | None, ctx: RatingContext) -> bool:
    if cdr.call_type in INBOUND or cdr.call_type == "ucap_out":
        return True  # toll-free inbound and bots: the tenant's own numbers, no user licence
    family = "conf_out" if cdr.call_type == "conf_out" else "user_out"
    return user is not None and ctx.catalog.may_pay_from_credits(user.capabilities, family)


def _price_credit_part(work: Work, cdr: Cdr, outcome: Outcome, seconds: int) -> Rejection | None:
    """Price the part paid from credits (or overage) with the tariff in force at the
    call's start: increments, connection fee, one half-up rounding (SPEC §1.3)."""
    state = work.tenant
    call_class = ("toll_free_inbound" if cdr.call_type in INBOUND
                  else "conf_dialout" if cdr.call_type == "conf_out" else "outbound")
    tariff = outcome.tariff
    rate = outcome.dest.rates.get((state.currency, call_class))
    if rate is None:
        version = tariff.version if tariff else "none in force"
        others = sorted(cur for cur, cls in outcome.dest.rates if cls == call_class)
        if others:  # the destination is priced, only not in the tenant's currency (SPEC §1.6)
            return Rejection("currency_mismatch",
                             f"{call_class} rate for {cdr.destination_number} is in {', '.join(others)},"
                             f" tenant currency is {state.currency} (tariff {version})")
        return Rejection("no_rate", f"no {call_class} rate in {state.currency} for {cdr.destination_number}"
                                    f" (tariff {version})")
    outcome.rate = rate
    outcome.credit_s = seconds
    outcome.billed_s = charged_seconds(seconds, rate.first_s, rate.next_s)
    outcome.fee = rate.connection_fee_minor
    outcome.cost = usage_cost_minor(rate, outcome.billed_s, state.exponent) + outcome.fee
    return None


def _commit(work: Work, cdr: Cdr, outcome: Outcome) -> None:
    """Move the seconds and money the rating decided, and emit what follows (returns
    None: the CDR was accepted)."""
    state = work.tenant
    end_us = outcome.end_us
    if end_us > state.now_us:  # time moves to the CDR's end first (advance, fast path inlined)
        if end_us < state.due_us:
            state.now_us = work.now_us = end_us
            work.now = ""
            work.changed = True
        else:
            advance(work, end_us)  # expiry etc. due by the CDR's end come first
    state.ids.put(usage_key(outcome.month, cdr.usage_id), outcome.digest)
    exhausted: list[PoolKey] = []
    for key, seconds, size in outcome.draws:
        use = state.pools.get(key)
        if use is None:
            use = state.pools[key] = PoolUse()
        use.used_s += seconds
        use.peak_size_s = max(use.peak_size_s, size)
        if use.used_s >= size:
            exhausted.append(key)
    before = state.balance_minor
    if unfunded(state, outcome.cost, before):
        outcome.status, outcome.reason = "partially_funded", "no_funds"
    debits: list[tuple[str, int]] = []
    if outcome.cost and state.billing_model == PREPAID:
        debits = debit_fifo(state, outcome.cost)
    _emit_rated(work, cdr, outcome, debits, None)
    postpaid = state.billing_model == POSTPAID
    country = outcome.dest.country
    work.usage = call_usage(outcome.month, _paid_most(postpaid, outcome), scope_of(country, cdr.user_location),
                            country, cdr.duration_s, sum(seconds for _, seconds, _size in outcome.draws),
                            outcome.credit_s, outcome.billed_s, outcome.cost,
                            _uncollected(postpaid, outcome.cost, debits))
    for key in exhausted:
        work.notify("pool_exhausted", f"{'/'.join(key)}/{cdr.usage_id}", {
            "capability": key[0], "location": key[1], "scope": key[2], "month": key[3],
        })
    if outcome.draws or debits:
        work.balance(cdr.usage_id)
    if debits:
        balance_moved(work, before, cdr.usage_id)


def _paid_most(postpaid: bool, outcome: Outcome) -> str | None:
    """The capability that paid the most seconds (the first one on a tie)."""
    draws = outcome.draws
    if not draws:  # the common cases first
        if not outcome.credit_s:
            return None
        return OVERAGE if postpaid else CREDITS
    if len(draws) == 1 and not outcome.credit_s:
        return draws[0][0][0]
    paid: dict[str, int] = {}
    for (cap_id, *_), seconds, _size in outcome.draws:
        paid[cap_id] = paid.get(cap_id, 0) + seconds
    if outcome.credit_s:
        paid[OVERAGE if postpaid else CREDITS] = outcome.credit_s
    return max(paid, key=paid.__getitem__) if paid else None


def scope_of(country: str | None, user_location: str) -> str | None:
    """A call's scope: ``domestic`` to the user's own country, else ``international``;
    none when the destination's country is not known."""
    if country is None:
        return None
    return "domestic" if country == user_location else "international"


def _uncollected(postpaid: bool, cost: int, debits: list[tuple[str, int]]) -> int:
    """The part of a call's charge no lot paid (post-paid: none, it is overage)."""
    return 0 if postpaid else cost - sum(amount for _, amount in debits)


def _emit_rated(work: Work, cdr: Cdr, outcome: Outcome, debits: list[tuple[str, int]],
                event_id: str | None) -> None:
    """A ``rated_cdr`` event (``event_id`` None: the rating's own, ``rated_cdr/{usage_id}``)."""
    state = work.tenant
    work.outputs.append(Output("rated-cdrs", None, _rated_payload, (
        state.tenant_id, state.currency, state.exponent, state.billing_model == POSTPAID,
        work.now_us, event_id, cdr, outcome, debits, state.balance_minor)))


def _rated_payload(tenant_id: str, currency: str, exponent: int, postpaid: bool, now_us: int,  # noqa: PLR0917
                   event_id: str | None, cdr: Cdr, outcome: Outcome,
                   debits: list[tuple[str, int]], balance_after: int) -> dict[str, Any]:
    """The wire form of a rated CDR, from the values decided when it was rated."""
    capability = None if outcome.status == "duplicate" else _paid_most(postpaid, outcome)
    country = outcome.dest.country
    cost = outcome.cost
    overage = cost if postpaid else 0
    return {
        "type": "rated_cdr",
        "schema_version": SCHEMA_VERSION,
        "event_id": f"{tenant_id}/{event_id or 'rated_cdr/' + cdr.usage_id}",
        "tenant_id": tenant_id,
        "occurred_at": format_time_us(now_us),
        "usage_id": cdr.usage_id,
        "call_id": cdr.call_id,
        "conference_id": cdr.conference_id,
        "user_id": cdr.user_id,
        "user_location": cdr.user_location,
        "call_type": cdr.call_type,
        "number_type": cdr.number_type,
        "caller_number": cdr.caller_number,
        "destination_number": cdr.destination_number,
        "start_time": format_time_us(cdr.start_us),
        "end_time": format_time_us(cdr.end_us),
        "duration_seconds": cdr.duration_s,
        "status": outcome.status,
        "reason": outcome.reason,
        "billing_month": outcome.month,
        "destination_country": country,
        "scope": scope_of(country, cdr.user_location),
        "pool_usage": [
            {"capability": key[0], "location": key[1], "scope": key[2], "seconds": seconds}
            for key, seconds, _size in outcome.draws
        ],
        "credit_seconds": outcome.credit_s,
        "charged_seconds": outcome.billed_s,
        "connection_fee": format_decimal(outcome.fee, exponent),
        "charge": format_decimal(cost, exponent),
        "uncollected": format_decimal(_uncollected(postpaid, cost, debits), exponent),
        "overage": format_decimal(overage, exponent),
        "currency": currency,
        "capability": capability,
        "lot_debits": [{"lot_id": lot_id, "amount": format_decimal(amount, exponent)} for lot_id, amount in debits],
        "balance_after": format_decimal(balance_after, exponent),
    }
