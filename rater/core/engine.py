"""The rating core's entry points: ``apply(state, input, ctx, now_us, position) -> Step``,
the time-driven pair ``next_deadline(state, ctx)`` / ``on_time(state, ctx, now_us)``, and
``balance_event``, a tenant's balance snapshot.

Pure and deterministic: no I/O, no clock, no randomness. "Now" is an argument (the
partition's time, SPEC §1.5); every output carries it as ``occurred_at`` and every event
id derives from input ids, so the same inputs give byte-identical outputs. Expected
outcomes (unknown tenant, no rate, a duplicate, a late CDR) are data — a
:class:`~rater.core.steps.Rejection` or a ``duplicate`` rated CDR; a broken invariant is
a bug and raises.

``apply`` changes the given state in place and returns it in the :class:`~rater.core.steps.Step`;
a rejected input leaves it as it was (nothing is changed before every check passed).

The work is done by one module per concept: :mod:`rater.core.rating` rates a CDR,
:mod:`rater.core.commands` applies account commands and recharge results,
:mod:`rater.core.deadlines` passes time, :mod:`rater.core.ledger` moves money,
:mod:`rater.core.pools` sizes and draws pools, and :mod:`rater.core.steps` holds the
step and its outputs.
"""

from __future__ import annotations

from rater.core.commands import COMMANDS, new_tenant
from rater.core.context import RatingContext
from rater.core.deadlines import advance
from rater.core.inputs import Cdr, Input, RechargeResult, TenantUpserted, fingerprint
from rater.core.ledger import POSTPAID, expire_lots, first_expiry, wants_recharge
from rater.core.pools import pool_report
from rater.core.rating import rate_cdr
from rater.core.state import TenantState, applied_key, is_request_id
from rater.core.steps import Output, Rejection, Step, Work, finish
from rater.core.times import format_time_us


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
            return new_tenant(inp, ctx, now_us)
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
    rejection = COMMANDS[type(inp)](events, inp)
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
