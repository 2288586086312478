"""The account commands and recharge results: one handler per input type.

Each handler applies an input whose id is new and returns a :class:`Rejection` or None;
nothing is changed before every check passed. :func:`new_tenant` makes a tenant from its
first ``tenant_upserted``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rater.core.context import RatingContext
from rater.core.inputs import (
    AutoRechargeConfigured,
    FundsAdded,
    LicensesAssigned,
    RechargeResult,
    TenantUpserted,
    UserRemoved,
    fingerprint,
)
from rater.core.ledger import (
    add_lot,
    lot_fits,
    low_balance_threshold_minor,
    parse_amount,
    recharge_failed,
    request_recharge,
)
from rater.core.state import AutoRecharge, TenantState, User, applied_key, is_request_id, request_sequence
from rater.core.steps import Rejection, Step, Work, finish
from rater.core.times import month_of_fast, previous_month


def new_tenant(cmd: TenantUpserted, ctx: RatingContext, now_us: int) -> Step:
    """A tenant made by its first ``tenant_upserted`` at ``now_us`` (or the rejection)."""
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
    ar = state.auto_recharge
    sequence = request_sequence(state.tenant_id, res.request_id)
    if is_request_id(state.tenant_id, res.request_id) and not (sequence is not None and sequence <= ar.sequence):
        # the form of the rater's own request ids, but not one it made (yet): applied, it
        # would claim the id of a request still to come, whose true result would then be
        # an id_conflict — the card charged, the lot never added
        return Rejection("unknown_request", f"request_id {res.request_id!r} was never requested (the last request"
                                            f" of tenant {state.tenant_id!r} is number {ar.sequence})")
    if res.currency != state.currency:
        return Rejection("currency_mismatch",
                         f"tenant currency is {state.currency}, result {res.request_id!r} is in {res.currency}")
    amount = parse_amount(state, res.amount, "amount")
    if isinstance(amount, Rejection):
        return amount
    if res.status == "succeeded" and (too_large := lot_fits(state, amount, f"recharge {res.request_id!r}",
                                                            counted=sequence is None)):
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


COMMANDS: dict[type, Callable[[Work, Any], Rejection | None]] = {
    TenantUpserted: _tenant_upserted,
    FundsAdded: _funds_added,
    LicensesAssigned: _licenses_assigned,
    UserRemoved: _user_removed,
    AutoRechargeConfigured: _auto_recharge_configured,
    RechargeResult: _recharge_result,
}
"""The handler of each input type but ``Cdr`` (rated by :mod:`rater.core.rating`)."""
