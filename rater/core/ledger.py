"""A tenant's ledger: lots of credits in, money out, and what a moved balance sets off.

Lots are added by purchases and recharges (:func:`add_lot`), debited oldest first by
rated calls (:func:`debit_fifo`) and forfeited when they expire (:func:`expire_lots`,
SPEC §1.4). After the balance moved, :func:`balance_moved` emits low-balance and
depletion and asks for an auto-recharge; a recharge request's failure or time-out backs
off (:func:`recharge_failed`). Amounts arrive as decimal strings (:func:`parse_amount`)
and must fit the wire and the tenant's bounds (:func:`lot_fits`).
"""

from __future__ import annotations

import bisect

from rater.core.money import MoneyFormatError, parse_decimal
from rater.core.state import Lot, TenantState, request_id
from rater.core.steps import Rejection, Work
from rater.core.times import add_months_clamped, format_time_us

LOT_LIFETIME_MONTHS = 12
MAX_WIRE_DIGITS = 18
"""Integer digits an amount may have on the wire (common.json ``money``)."""
MAX_LOTS = 1_000
"""Lots with money left a tenant may hold (a year of daily purchases, three times over):
one more is a ``tenant_limit`` dead letter."""
PREPAID = "prepaid_credits"
"""The billing model whose calls are paid from lots (a call past the balance is ``partially_funded``)."""
POSTPAID = "postpaid_overage"
"""The billing model whose calls are charged as overage; no lots are debited."""


def parse_amount(state: TenantState, text: str, what: str) -> int | Rejection:
    """A wire amount in the tenant's minor units, or a ``schema`` rejection naming ``what``."""
    try:
        return parse_decimal(text, state.exponent)
    except MoneyFormatError as exc:
        return Rejection("schema", f"{what}: {exc} (currency {state.currency})")


def lot_fits(state: TenantState, amount: int, what: str, *, counted: bool = True) -> Rejection | None:
    """Every amount on the wire has at most 18 integer digits (common.json ``money``):
    a lot that would take the balance past that is refused, not emitted as a balance no
    consumer can read. A tenant holds at most :data:`MAX_LOTS` lots with money left:
    every balance snapshot lists them, and a debit walks them. ``counted`` False: the
    result of one of the rater's own requests, which is never refused for the count (the
    card was charged; the rater asks only while the balance is below the trigger, so
    such lots stay few)."""
    if state.balance_minor + amount >= 10 ** (MAX_WIRE_DIGITS + state.exponent):
        return Rejection("schema", f"{what} would take the balance past {MAX_WIRE_DIGITS} integer digits")
    if counted and amount and len(state.lots) >= MAX_LOTS:
        return Rejection("tenant_limit", f"{what} would be lot {len(state.lots) + 1} with money left;"
                                         f" a tenant holds at most {MAX_LOTS}")
    return None


def add_lot(events: Work, lot_id: str, amount: int, purchased_us: int) -> None:
    """Fund the tenant with a lot of ``amount`` bought at ``purchased_us`` (it expires
    :data:`LOT_LIFETIME_MONTHS` later); lots stay in purchase order."""
    state = events.tenant
    before = state.balance_minor
    expires = add_months_clamped(purchased_us, LOT_LIFETIME_MONTHS)
    state.funded_minor += amount
    if amount:
        lot = Lot(lot_id, amount, amount, purchased_us, expires)
        keys = [(x.purchased_us, x.lot_id) for x in state.lots]
        state.lots.insert(bisect.bisect(keys, (purchased_us, lot_id)), lot)
        state.due_us = min(state.due_us, expires)
        state.balance_minor += amount
    else:  # an empty lot holds nothing; the ledger still counts the (zero) funding
        pass
    balance_moved(events, before, lot_id)


def debit_fifo(state: TenantState, cost_minor: int) -> list[tuple[str, int]]:
    """Take up to ``cost_minor`` from the lots, oldest first; emptied lots leave the list
    (the rated CDRs keep their history)."""
    debits: list[tuple[str, int]] = []
    left = cost_minor
    lots = state.lots
    while left and lots:
        lot = lots[0]
        take = min(left, lot.remaining_minor)
        lot.remaining_minor -= take
        left -= take
        debits.append((lot.lot_id, take))
        if lot.remaining_minor == 0:
            lots.pop(0)
    taken = cost_minor - left
    state.balance_minor -= taken
    state.debited_minor += taken
    return debits


def first_expiry(state: TenantState) -> int:
    """When the next lot expires. Not always the oldest lot's expiry: 12 months after
    29 Feb is clamped to 28 Feb, so a lot bought 2028-02-29T00:00 expires before one
    bought 2028-02-28T12:00."""
    return min(lot.expires_us for lot in state.lots)


def _expired(lot: Lot, now_us: int) -> bool:
    """Whether ``lot`` is past its expiry at ``now_us`` (SPEC §1.4)."""
    return lot.expires_us <= now_us


def balance_at(state: TenantState, when_us: int) -> int:
    """The balance at ``when_us`` (not before the tenant's "now") if nothing but time
    moves it: what :func:`expire_lots` would leave. Changes nothing."""
    return sum(lot.remaining_minor for lot in state.lots if not _expired(lot, when_us))


def expire_lots(events: Work) -> None:
    """Forfeit the remainder of every lot past its expiry (SPEC §1.4), oldest first."""
    state = events.tenant
    now_us = events.now_us
    expired = [lot for lot in state.lots if _expired(lot, now_us)]
    if not expired:
        return
    state.lots = [lot for lot in state.lots if not _expired(lot, now_us)]
    for lot in expired:
        before = state.balance_minor
        state.balance_minor -= lot.remaining_minor
        state.expired_minor += lot.remaining_minor
        events.notify("credits_expired", lot.lot_id, {
            "lot_id": lot.lot_id,
            "amount": events.money(lot.remaining_minor),
            "balance": events.money(state.balance_minor),
            "currency": state.currency,
        })
        events.balance(f"expired/{lot.lot_id}")
        balance_moved(events, before, f"expired/{lot.lot_id}")


def low_balance_threshold_minor(state: TenantState) -> int:
    """The balance below which ``low_balance`` is emitted: the tenant's own threshold,
    else the auto-recharge trigger."""
    own = state.low_balance_threshold_minor
    return state.auto_recharge.trigger_minor if own is None else own


def wants_recharge(state: TenantState) -> bool:
    """Whether auto-recharge is on for a prepaid tenant whose balance is below its trigger."""
    ar = state.auto_recharge
    return state.billing_model == PREPAID and ar.enabled and ar.recharge_minor > 0 and (
        state.balance_minor < ar.trigger_minor)


def balance_moved(events: Work, before: int, cause: str) -> None:
    """Low-balance, depletion and auto-recharge after the balance went from ``before``
    to its current value (SPEC §1.4)."""
    state = events.tenant
    after = state.balance_minor
    threshold = low_balance_threshold_minor(state)
    if after > before:
        if after > threshold:
            state.low_armed = True
        return
    if after == before or state.billing_model != PREPAID:
        return
    if after < threshold and state.low_armed:
        state.low_armed = False
        events.emit("low-balance", "low_balance", f"low_balance/{cause}", {
            "balance": events.money(after),
            "threshold": events.money(threshold),
            "currency": state.currency,
        })
    if after == 0 and before > 0:
        events.notify("balance_depleted", cause, {"currency": state.currency})
    request_recharge(events)


def request_recharge(events: Work) -> None:
    """Emit a recharge request if one is wanted and none is outstanding or backing off."""
    state = events.tenant
    ar = state.auto_recharge
    if ar.pending_request_id is not None or ar.retry_at_us is not None or not wants_recharge(state):
        return
    ar.sequence += 1
    rid = request_id(state.tenant_id, ar.sequence)
    ar.pending_request_id = rid
    ar.pending_since_us = events.now_us
    state.due_us = min(state.due_us, events.now_us + events.ctx.recharge_timeout_us)
    events.emit("recharge-requests", "recharge_request", f"recharge_request/{rid}", {
        "request_id": rid,
        "amount": events.money(ar.recharge_minor),
        "currency": state.currency,
        "balance": events.money(state.balance_minor),
        "trigger_amount": events.money(ar.trigger_minor),
    })


def recharge_failed(events: Work, rid: str, reason: str) -> None:
    """The pending request ``rid`` failed (or timed out): no request is pending, and
    none is made before the back-off ends."""
    ar = events.tenant.auto_recharge
    ar.pending_request_id = None
    ar.retry_at_us = events.now_us + events.ctx.recharge_backoff_us
    events.tenant.due_us = min(events.tenant.due_us, ar.retry_at_us)
    events.notify("recharge_failed", rid, {
        "request_id": rid,
        "reason": reason,
        "retry_after": format_time_us(ar.retry_at_us),
    })
    events.balance(f"{reason}/{rid}" if reason == "timeout" else rid)
