"""Time passing for a tenant: what falls due, and doing it.

A tenant has work at a few instants: its open month ends (the month's pools freeze with
the licence counts), a closed month's grace ends (its pools and usage ids are forgotten),
a lot expires, a recharge request times out, a back-off ends. :func:`next_due` says when
the next one is (kept as ``state.due_us``) and :func:`advance` brings the tenant to a
later "now", doing what fell due on the way.
"""

from __future__ import annotations

from rater.core.context import RatingContext
from rater.core.ledger import expire_lots, first_expiry, recharge_failed, request_recharge
from rater.core.state import TenantState
from rater.core.steps import Work
from rater.core.times import month_end_us, month_of_fast, previous_month


def advance(events: Work, now_us: int) -> None:
    """Bring the tenant to ``now_us``: close months, expire lots, time out and retry
    recharges."""
    state, ctx = events.tenant, events.ctx
    if now_us <= state.now_us:
        return  # nothing falls due without time passing (next_deadline > now always)
    events.changed = True
    state.now_us = now_us
    events.now_us = now_us
    events.now = ""
    if now_us < state.due_us:
        return  # the common case: nothing can be due yet
    prune = False
    remembered = [state.open_month, *state.frozen]
    month = month_of_fast(now_us) if now_us >= month_end_us(state.open_month) else state.open_month
    if month > state.open_month:
        # The licence counts have not changed since the tenant last saw time pass (every
        # command advances time first), so they are the counts at the end of the month
        # before ``month``: that month's pools freeze with them.
        state.frozen = {previous_month(month): dict(state.licences)}
        state.open_month = month
        state.sizes = {}
        prune = True
    if state.frozen:
        for closed in [m for m in state.frozen if month_end_us(m) + ctx.grace_us <= now_us]:
            del state.frozen[closed]
            prune = True
    if prune:
        # Months past their grace can no longer be rated (their CDRs are ``late``):
        # forget their pools and usage ids, which bounds the duplicate memory.
        keep = {state.open_month, *state.frozen}
        state.pools = {key: use for key, use in state.pools.items() if key[3] in keep}
        for gone in remembered:
            if gone not in keep:
                state.ids.forget_month(gone)
        state.sizes = {}
    if state.lots and first_expiry(state) <= now_us:
        expire_lots(events)
    ar = state.auto_recharge
    if ar.pending_request_id is not None and ar.pending_since_us + ctx.recharge_timeout_us <= now_us:
        recharge_failed(events, ar.pending_request_id, "timeout")
    elif ar.pending_request_id is None and ar.retry_at_us is not None and ar.retry_at_us <= now_us:
        ar.retry_at_us = None
        request_recharge(events)
    state.due_us = next_due(state, ctx)


def next_due(state: TenantState, ctx: RatingContext) -> int:
    """The next instant :func:`advance` has work: the end of the open month, a closed
    month's grace end, the first lot's expiry, a recharge time-out or back-off end.
    Whatever adds an earlier one lowers ``state.due_us`` itself."""
    due = month_end_us(state.open_month)
    for month in state.frozen:
        due = min(due, month_end_us(month) + ctx.grace_us)
    if state.lots:
        due = min(due, first_expiry(state))
    ar = state.auto_recharge
    if ar.pending_request_id is not None:
        due = min(due, ar.pending_since_us + ctx.recharge_timeout_us)
    if ar.retry_at_us is not None:
        due = min(due, ar.retry_at_us)
    return due
