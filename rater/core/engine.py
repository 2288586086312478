"""The rating core: ``apply(state, input, ctx, now_us, position) -> Step``, plus the
time-driven pair ``next_deadline(state, ctx)`` / ``on_time(state, ctx, now_us)``.

Pure and deterministic: no I/O, no clock, no randomness. "Now" is an argument (the
partition's time, SPEC §1.5); every output carries it as ``occurred_at`` and every event
id derives from input ids, so the same inputs give byte-identical outputs. Expected
outcomes (unknown tenant, no rate, a duplicate, a late CDR) are data — a
:class:`Rejection` or a ``duplicate`` rated CDR; a broken invariant is a bug and raises.

``apply`` changes the given state in place and returns it in the :class:`Step`; a
rejected input leaves it as it was (nothing is changed before every check passed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rater.core.context import US_PER_HOUR, RatingContext
from rater.core.deadlines import advance
from rater.core.destinations import Destination
from rater.core.inputs import (
    INBOUND,
    USER_OUT,
    AutoRechargeConfigured,
    Cdr,
    FundsAdded,
    Input,
    LicensesAssigned,
    RechargeResult,
    TenantUpserted,
    UserRemoved,
    fingerprint,
)
from rater.core.ledger import (
    POSTPAID,
    PREPAID,
    add_lot,
    balance_moved,
    debit_fifo,
    expire_lots,
    first_expiry,
    lot_fits,
    low_balance_threshold_minor,
    parse_amount,
    recharge_failed,
    request_recharge,
    wants_recharge,
)
from rater.core.money import format_decimal
from rater.core.pools import draw_pools, pool_report
from rater.core.state import (
    AutoRecharge,
    PoolKey,
    PoolUse,
    TenantState,
    User,
    applied_key,
    is_request_id,
    usage_key,
)
from rater.core.steps import SCHEMA_VERSION, Output, Rejection, Step, Work, finish
from rater.core.tariff import Tariff, charged_seconds, usage_cost_minor
from rater.core.times import (
    format_time_us,
    month_end_us,
    month_of_fast,
    previous_month,
)

CREDITS = "MCOPSTNPP"
OVERAGE = "OVERAGE"


# --- entry points -----------------------------------------------------------------------


def apply(state: TenantState | None, inp: Input, ctx: RatingContext, now_us: int, position: str) -> Step:
    """Apply one input to a tenant's state at the partition's time ``now_us``.

    ``position`` names the input message (topic/partition/offset): the id of an event
    that must not repeat another's (a ``duplicate`` rated CDR) derives from it. Work
    that fell due by ``now_us`` (lot expiry, recharge time-outs and back-off) is done
    first, so its outputs precede the input's.
    """
    if not isinstance(inp, Cdr | RechargeResult) and is_request_id(inp.tenant_id, inp.command_id):
        # one id space for commands and the rater's own requests: a funds lot named like a
        # request would make the succeeded result of that request an ``id_conflict``
        return Step(None, rejection=Rejection("schema", f"command_id {inp.command_id!r} has the form of the"
                                                        f" rater's recharge request ids ({inp.tenant_id}/recharge/N)"))
    if state is None:
        if isinstance(inp, TenantUpserted):
            return _new_tenant(inp, ctx, now_us)
        return Step(None, rejection=Rejection("unknown_tenant",
                                              f"tenant {inp.tenant_id!r} has no tenant_upserted yet"))
    now_us = max(now_us, state.now_us)
    events = Work(state, ctx, now_us)
    if isinstance(inp, Cdr):
        # An accepted CDR advances time to its end itself, before it moves money.
        rejection = _rate_cdr(events, inp, position)
        if rejection is None:  # the hot path: finish, inlined
            events.changed = True
            return events
        advance(events, now_us)
        return finish(events, rejection, False)
    advance(events, now_us)
    changed = events.changed
    input_id = inp.request_id if isinstance(inp, RechargeResult) else inp.command_id
    digest = fingerprint(inp)
    key = applied_key(input_id)
    seen = state.ids.get(key)
    if seen is not None:
        if seen == digest:
            return finish(events, None, changed)
        conflict = Rejection("id_conflict", f"id {input_id!r} was applied with other content")
        return finish(events, conflict, changed)
    rejection = _COMMANDS[type(inp)](events, inp)
    if rejection is None:
        state.ids.put(key, digest)
        expire_lots(events)  # a lot bought over 12 months ago
    return finish(events, rejection, changed or rejection is None)


def next_deadline(state: TenantState, ctx: RatingContext) -> int | None:
    """The earliest event time at which :func:`on_time` has work for this tenant
    (a lot expires, a recharge request times out, a back-off ends), or None."""
    deadlines = []
    if state.lots:
        deadlines.append(first_expiry(state))
    ar = state.auto_recharge
    if ar.pending_request_id is not None:
        deadlines.append(ar.pending_since_us + ctx.recharge_timeout_us)
    elif ar.retry_at_us is not None and wants_recharge(state):
        deadlines.append(ar.retry_at_us)
    return min(deadlines) if deadlines else None


def on_time(state: TenantState, ctx: RatingContext, now_us: int) -> Step:
    """Do the work that fell due by ``now_us`` (driven by the shell's ticks)."""
    now_us = max(now_us, state.now_us)
    events = Work(state, ctx, now_us)
    advance(events, now_us)
    return finish(events, None, False)


def balance_event(state: TenantState, ctx: RatingContext, now_us: int, caused_by: str) -> Output:
    """The ``balance`` snapshot of a tenant: balance, lots, pools and auto-recharge."""
    work = Work(state, ctx, now_us)
    money = work.money
    ar = state.auto_recharge
    balance = state.balance_minor
    work.emit("balances", "balance", f"balance/{caused_by}", {
        "balance": money(balance),
        "currency": state.currency,
        "status": "active" if balance > 0 or state.billing_model == POSTPAID else "depleted",
        "lots": [
            {
                "lot_id": lot.lot_id,
                "remaining": money(lot.remaining_minor),
                "purchased_at": format_time_us(lot.purchased_us),
                "expires_at": format_time_us(lot.expires_us),
            }
            for lot in state.lots
        ],
        "pools": pool_report(state, ctx),
        "auto_recharge": {
            "enabled": ar.enabled,
            "trigger_amount": money(ar.trigger_minor),
            "recharge_amount": money(ar.recharge_minor),
            "pending_request_id": ar.pending_request_id,
        },
        "caused_by": caused_by,
    })
    return work.outputs[0]


# --- commands ---------------------------------------------------------------------------
# Each handler applies an input whose id is new and returns a Rejection or None; nothing
# is changed before every check passed.


def _new_tenant(cmd: TenantUpserted, ctx: RatingContext, now_us: int) -> Step:
    exponent = ctx.exponents.get(cmd.currency)
    if exponent is None:
        return Step(None, rejection=Rejection("schema", f"unknown ISO 4217 currency {cmd.currency!r}"))
    open_month = month_of_fast(now_us)
    # The month before is still rateable for a while (its grace): it is remembered — with
    # no licences, so its pools are empty — and forgotten like any closed month. Without
    # it, a usage id of that month would be looked up nowhere and charged again.
    state = TenantState(cmd.tenant_id, cmd.country, cmd.currency, exponent, cmd.billing_model,
                        now_us=now_us, open_month=open_month, frozen={previous_month(open_month): {}})
    events = Work(state, ctx, now_us)
    rejection = _tenant_upserted(events, cmd)
    if rejection is not None:
        return Step(None, rejection=rejection)
    state.ids.put(applied_key(cmd.command_id), fingerprint(cmd))
    return finish(events, None, True)


def _tenant_upserted(events: Work, cmd: TenantUpserted) -> Rejection | None:
    state = events.tenant
    if cmd.currency != state.currency:
        return Rejection("currency_mismatch", f"tenant currency is {state.currency}, command says {cmd.currency}")
    threshold = None
    if cmd.low_balance_threshold is not None:
        parsed = parse_amount(state, cmd.low_balance_threshold, "low_balance_threshold")
        if isinstance(parsed, Rejection):
            return parsed
        threshold = parsed
    state.country = cmd.country
    state.billing_model = cmd.billing_model
    state.low_balance_threshold_minor = threshold
    if state.balance_minor > low_balance_threshold_minor(state):
        state.low_armed = True
    events.balance(cmd.command_id)
    return None


def _funds_added(events: Work, cmd: FundsAdded) -> Rejection | None:
    state = events.tenant
    if cmd.currency != state.currency:
        return Rejection("currency_mismatch", f"tenant currency is {state.currency}, funds are in {cmd.currency}")
    amount = parse_amount(state, cmd.amount, "amount")
    if isinstance(amount, Rejection):
        return amount
    too_large = lot_fits(state, amount, f"funds {cmd.command_id!r}")
    if too_large is not None:
        return too_large
    add_lot(events, cmd.command_id, amount, cmd.purchased_us)
    events.balance(cmd.command_id)
    return None


def _licenses_assigned(events: Work, cmd: LicensesAssigned) -> Rejection | None:
    state, ctx = events.tenant, events.ctx
    unknown = [cap for cap in cmd.capabilities if cap not in ctx.catalog.by_id]
    if unknown:
        return Rejection("schema", f"capabilities not in catalog {ctx.catalog.version}: {', '.join(unknown)}")
    state.set_user(cmd.user_id, User(cmd.usage_location, tuple(dict.fromkeys(cmd.capabilities))))
    events.balance(cmd.command_id)
    return None


def _user_removed(events: Work, cmd: UserRemoved) -> Rejection | None:
    state = events.tenant
    user = state.users.get(cmd.user_id)
    if user is None:
        return None  # never licensed: nothing to remove, they stay unknown
    # The user stays known (their later CDRs are ``blocked``, not ``unknown_user``) but
    # holds nothing, so their licences stop counting in pool sizes at once.
    state.set_user(cmd.user_id, User(user.usage_location, ()))
    events.balance(cmd.command_id)
    return None


def _auto_recharge_configured(events: Work, cmd: AutoRechargeConfigured) -> Rejection | None:
    state = events.tenant
    trigger = parse_amount(state, cmd.trigger_amount, "trigger_amount")
    if isinstance(trigger, Rejection):
        return trigger
    recharge = parse_amount(state, cmd.recharge_amount, "recharge_amount")
    if isinstance(recharge, Rejection):
        return recharge
    old = state.auto_recharge
    state.auto_recharge = AutoRecharge(cmd.enabled, trigger, recharge, old.pending_request_id,
                                       old.pending_since_us, old.sequence, old.retry_at_us)
    if state.balance_minor > low_balance_threshold_minor(state):
        state.low_armed = True
    # Turning auto-recharge on while already below the trigger asks for money at once.
    request_recharge(events)
    events.balance(cmd.command_id)
    return None


def _recharge_result(events: Work, res: RechargeResult) -> Rejection | None:
    state = events.tenant
    if res.currency != state.currency:
        return Rejection("currency_mismatch",
                         f"tenant currency is {state.currency}, result {res.request_id!r} is in {res.currency}")
    amount = parse_amount(state, res.amount, "amount")
    if isinstance(amount, Rejection):
        return amount
    ar = state.auto_recharge
    if res.status == "succeeded" and (too_large := lot_fits(state, amount, f"recharge {res.request_id!r}")):
        return too_large
    if res.status == "succeeded":
        # The card was charged: the lot is added even if the request timed out or a
        # newer one is pending.
        if ar.pending_request_id == res.request_id:
            ar.pending_request_id = None
            ar.retry_at_us = None
        add_lot(events, res.request_id, amount, res.processed_us)
        events.notify("recharge_succeeded", res.request_id, {
            "request_id": res.request_id,
            "amount": events.money(amount),
            "balance": events.money(state.balance_minor),
            "currency": state.currency,
        })
        events.balance(res.request_id)
    elif ar.pending_request_id == res.request_id:
        recharge_failed(events, res.request_id, res.reason or "failed")
    # A failure for a request that is no longer pending (it timed out, and was already
    # reported as failed) only claims its id.
    return None


_COMMANDS: dict[type, Callable[[Work, Any], Rejection | None]] = {
    TenantUpserted: _tenant_upserted,
    FundsAdded: _funds_added,
    LicensesAssigned: _licenses_assigned,
    UserRemoved: _user_removed,
    AutoRechargeConfigured: _auto_recharge_configured,
    RechargeResult: _recharge_result,
}


# --- pools ------------------------------------------------------------------------------


def _may_pay_from_credits(cdr: Cdr, user: User | None, ctx: RatingContext) -> bool:
    if cdr.call_type in INBOUND or cdr.call_type == "ucap_out":
        return True  # toll-free inbound and bots: the tenant's own numbers, no user licence
    family = "conf_out" if cdr.call_type == "conf_out" else "user_out"
    return user is not None and ctx.catalog.may_pay_from_credits(user.capabilities, family)


# --- rating -----------------------------------------------------------------------------


class _Outcome:
    """What rating decided for one CDR, before any of it is applied."""

    __slots__ = ("billed_s", "cost", "credit_s", "dest", "digest", "draws", "end_us", "fee", "month", "reason",
                 "status", "tariff")

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


def _rate_cdr(work: Work, cdr: Cdr, position: str) -> Rejection | None:
    """Rate a CDR. Every check runs before anything changes; a CDR that passes them
    moves "now" to its end time (a rejected one does not: SPEC §1.6)."""
    state, ctx = work.tenant, work.ctx
    end_us = cdr.end_us if cdr.end_us > work.now_us else work.now_us
    month = month_of_fast(cdr.start_us)
    if month_end_us(month) + ctx.grace_us <= end_us:
        return Rejection("late", f"billing month {month} closed more than {ctx.grace_us // US_PER_HOUR} h"
                                 f" before {format_time_us(end_us)}")
    digest = fingerprint(cdr)
    seen = _seen(state, cdr.usage_id, month)
    if seen is not None:
        if seen != digest:
            return Rejection("id_conflict", f"usage_id {cdr.usage_id!r} was rated with other content")
        advance(work, work.now_us)  # no time from a duplicate, but what fell due before it
        tariff, destination = ctx.destination_at(cdr.start_us, cdr.destination_number)
        duplicate = _Outcome(month, digest, end_us, destination, tariff, status="duplicate")
        _emit_rated(work, cdr, duplicate, [],
                    f"rated_cdr/{cdr.usage_id}/duplicate/{position}")
        return None
    emergency = cdr.destination_number in ctx.catalog.emergency and cdr.call_type not in INBOUND
    if not emergency and not cdr.destination_number.startswith("+"):
        return Rejection("schema", f"destination {cdr.destination_number!r} is not E.164 and not an emergency"
                                   f" number of catalog {ctx.catalog.version}")
    tariff, destination = ctx.destination_at(cdr.start_us, cdr.destination_number)
    outcome = _Outcome(month, digest, end_us, destination, tariff)
    if cdr.call_type in INBOUND and cdr.number_type != "toll_free":
        _commit(work, cdr, outcome)  # free, recorded
        return None
    if emergency:
        outcome.reason = "emergency"
        _commit(work, cdr, outcome)
        return None
    user = None
    if cdr.call_type in USER_OUT or cdr.call_type == "conf_out":
        user = state.users.get(cdr.user_id) if cdr.user_id is not None else None
        if user is None:
            return Rejection("unknown_user", f"user {cdr.user_id!r} was never licensed in tenant {state.tenant_id!r}")
    left = draw_pools(work, cdr, user, outcome.dest, outcome.month, draws=outcome.draws) if cdr.duration_s else 0
    if left and not _may_pay_from_credits(cdr, user, ctx):
        # Nothing may pay (the rest): ``blocked``, or ``partially_funded`` when a pool
        # paid a part; the unpaid seconds show as duration − pool seconds, uncharged.
        outcome.status = "partially_funded" if outcome.draws else "blocked"
        outcome.reason = "no_license"
    elif left:
        rejection = _price_credit_part(work, cdr, outcome, left)
        if rejection is not None:
            return rejection
    _commit(work, cdr, outcome)
    return None


def _price_credit_part(work: Work, cdr: Cdr, outcome: _Outcome, seconds: int) -> Rejection | None:
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
    outcome.credit_s = seconds
    outcome.billed_s = charged_seconds(seconds, rate.first_s, rate.next_s)
    outcome.fee = rate.connection_fee_minor
    outcome.cost = usage_cost_minor(rate, outcome.billed_s, state.exponent) + outcome.fee
    return None


def _commit(work: Work, cdr: Cdr, outcome: _Outcome) -> None:
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
    debits: list[tuple[str, int]] = []
    if outcome.cost and state.billing_model == PREPAID:
        debits = debit_fifo(state, outcome.cost)
    if state.balance_minor + outcome.cost > before and state.billing_model == PREPAID:
        outcome.status, outcome.reason = "partially_funded", "no_funds"
    _emit_rated(work, cdr, outcome, debits, None)
    for key in exhausted:
        work.notify("pool_exhausted", f"{'/'.join(key)}/{cdr.usage_id}", {
            "capability": key[0], "location": key[1], "scope": key[2], "month": key[3],
        })
    if outcome.draws or debits:
        work.balance(cdr.usage_id)
    if debits:
        balance_moved(work, before, cdr.usage_id)


def _paid_most(postpaid: bool, outcome: _Outcome) -> str | None:
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


def _emit_rated(work: Work, cdr: Cdr, outcome: _Outcome, debits: list[tuple[str, int]],
                event_id: str | None) -> None:
    """A ``rated_cdr`` event (``event_id`` None: the rating's own, ``rated_cdr/{usage_id}``)."""
    state = work.tenant
    work.outputs.append(Output("rated-cdrs", None, _rated_payload, (
        state.tenant_id, state.currency, state.exponent, state.billing_model == POSTPAID,
        work.now_us, event_id, cdr, outcome, debits, state.balance_minor)))


def _rated_payload(tenant_id: str, currency: str, exponent: int, postpaid: bool, now_us: int,  # noqa: PLR0917
                   event_id: str | None, cdr: Cdr, outcome: _Outcome,
                   debits: list[tuple[str, int]], balance_after: int) -> dict[str, Any]:
    """The wire form of a rated CDR, from the values decided when it was rated."""
    capability = None if outcome.status == "duplicate" else _paid_most(postpaid, outcome)
    country = outcome.dest.country
    cost = outcome.cost
    overage = cost if postpaid else 0
    uncollected = cost - overage - sum(amount for _, amount in debits)
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
        "scope": None if country is None else ("domestic" if country == cdr.user_location else "international"),
        "pool_usage": [
            {"capability": key[0], "location": key[1], "scope": key[2], "seconds": seconds}
            for key, seconds, _size in outcome.draws
        ],
        "credit_seconds": outcome.credit_s,
        "charged_seconds": outcome.billed_s,
        "connection_fee": format_decimal(outcome.fee, exponent),
        "charge": format_decimal(cost, exponent),
        "uncollected": format_decimal(uncollected, exponent),
        "overage": format_decimal(overage, exponent),
        "currency": currency,
        "capability": capability,
        "lot_debits": [{"lot_id": lot_id, "amount": format_decimal(amount, exponent)} for lot_id, amount in debits],
        "balance_after": format_decimal(balance_after, exponent),
    }
