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

from rater.core.context import RatingContext
from rater.core.deadlines import advance
from rater.core.inputs import (
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
    add_lot,
    expire_lots,
    first_expiry,
    lot_fits,
    low_balance_threshold_minor,
    parse_amount,
    recharge_failed,
    request_recharge,
    wants_recharge,
)
from rater.core.pools import pool_report
from rater.core.rating import rate_cdr
from rater.core.state import (
    AutoRecharge,
    TenantState,
    User,
    applied_key,
    is_request_id,
)
from rater.core.steps import Output, Rejection, Step, Work, finish
from rater.core.times import (
    format_time_us,
    month_of_fast,
    previous_month,
)

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
        rejection = rate_cdr(events, inp, position)
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
