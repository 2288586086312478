"""The rating core: ``apply(state, input, context, position) -> Step``.

Pure and deterministic: no I/O, no clock, no randomness. "Now" is the latest event time
the tenant's inputs have carried. Expected outcomes (unknown tenant, no rate, a
duplicate) are data — a :class:`Rejection` or a ``duplicate`` rated CDR; a broken
invariant is a bug and raises.

This first cut rates every chargeable call from credits with the tariff (no pools or
licence checks yet: SPEC §1.2's waterfall arrives with the full core).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rater.core.countries import CountryPrefixes
from rater.core.inputs import (
    AutoRechargeConfigured,
    Cdr,
    Command,
    FundsAdded,
    Input,
    LicensesAssigned,
    TenantUpserted,
    UserRemoved,
    fingerprint,
)
from rater.core.money import MoneyFormatError, format_decimal, parse_decimal
from rater.core.state import AutoRecharge, Lot, TenantState, User
from rater.core.tariff import Tariff, charged_seconds, usage_cost_minor
from rater.core.times import add_months_clamped, format_time_us, month_of

SCHEMA_VERSION = 1
LOT_LIFETIME_MONTHS = 12
INBOUND = frozenset({"user_in", "conf_in", "ucap_in"})
PREPAID = "prepaid_credits"
POSTPAID = "postpaid_overage"


@dataclass(frozen=True, slots=True)
class RatingContext:
    """What rating reads but never changes: the tariff, ISO 4217 minor units and the
    E.164 country table."""

    tariff: Tariff
    exponents: Mapping[str, int]
    countries: CountryPrefixes = field(default_factory=lambda: CountryPrefixes.of({}))


@dataclass(frozen=True, slots=True)
class Output:
    """An event for one of the output streams (``rated-cdrs``, ``balances``, ...)."""

    stream: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejection:
    """An input the core refuses; the shell turns it into a dead letter."""

    reason: str
    message: str


@dataclass(slots=True)
class Step:
    """The result of applying one input."""

    state: TenantState | None
    outputs: list[Output] = field(default_factory=list)
    rejection: Rejection | None = None
    changed: bool = False
    """Whether the state must be written back."""


def apply(state: TenantState | None, inp: Input, ctx: RatingContext, position: str) -> Step:
    """Apply one input to a tenant's state. ``position`` names the input message
    (topic/partition/offset) for the ids of events that must not repeat another's."""
    if state is None:
        if isinstance(inp, TenantUpserted):
            return _remember(_tenant_upserted(None, inp, ctx), inp.command_id, inp)
        return Step(None, rejection=Rejection("unknown_tenant", f"tenant {inp.tenant_id!r} has no tenant_upserted yet"))
    if isinstance(inp, Cdr):
        return _rate_cdr(state, inp, ctx, position)
    seen = state.applied.get(inp.command_id)
    if seen is not None:
        return _repeat(state, inp.command_id, seen, fingerprint(inp))
    return _remember(_COMMANDS[type(inp)](state, inp, ctx), inp.command_id, inp)


def _remember(step: Step, command_id: str, cmd: Command) -> Step:
    """Record an applied command's id with its fingerprint, in the same state change."""
    if step.changed and step.state is not None:
        step.state.applied[command_id] = fingerprint(cmd)
    return step


# --- commands ---------------------------------------------------------------------------
# Each handler applies a command whose id is new; ``apply`` deals with repeats.


def _tenant_upserted(state: TenantState | None, cmd: TenantUpserted, ctx: RatingContext) -> Step:
    exponent = ctx.exponents.get(cmd.currency)
    if exponent is None:
        return Step(state, rejection=Rejection("schema", f"unknown ISO 4217 currency {cmd.currency!r}"))
    if state is not None and cmd.currency != state.currency:
        return Step(state, rejection=Rejection(
            "currency_mismatch", f"tenant currency is {state.currency}, command says {cmd.currency}"))
    try:
        threshold = parse_decimal(cmd.low_balance_threshold, exponent) if cmd.low_balance_threshold else None
    except MoneyFormatError as exc:
        return Step(state, rejection=Rejection("schema", f"low_balance_threshold: {exc}"))
    if state is None:
        state = TenantState(cmd.tenant_id, cmd.country, cmd.currency, exponent, cmd.billing_model)
    state.country = cmd.country
    state.billing_model = cmd.billing_model
    state.low_balance_threshold_minor = threshold
    return Step(state, [_balance_event(state, cmd.command_id)], changed=True)


def _funds_added(state: TenantState, cmd: FundsAdded, _ctx: RatingContext) -> Step:
    if cmd.currency != state.currency:
        return Step(state, rejection=Rejection(
            "currency_mismatch", f"tenant currency is {state.currency}, funds are in {cmd.currency}"))
    try:
        amount = parse_decimal(cmd.amount, state.exponent)
    except MoneyFormatError as exc:
        return Step(state, rejection=Rejection("schema", f"amount: {exc}"))
    state.now_us = max(state.now_us, cmd.purchased_us)
    expires = add_months_clamped(cmd.purchased_us, LOT_LIFETIME_MONTHS)
    state.lots.append(Lot(cmd.command_id, amount, amount, cmd.purchased_us, expires))
    state.lots.sort(key=lambda lot: (lot.purchased_us, lot.lot_id))
    state.funded_minor += amount
    return Step(state, [_balance_event(state, cmd.command_id)], changed=True)


def _licenses_assigned(state: TenantState, cmd: LicensesAssigned, _ctx: RatingContext) -> Step:
    state.users[cmd.user_id] = User(cmd.usage_location, cmd.capabilities)
    return Step(state, changed=True)


def _user_removed(state: TenantState, cmd: UserRemoved, _ctx: RatingContext) -> Step:
    state.users.pop(cmd.user_id, None)
    return Step(state, changed=True)


def _auto_recharge_configured(state: TenantState, cmd: AutoRechargeConfigured, _ctx: RatingContext) -> Step:
    try:
        trigger = parse_decimal(cmd.trigger_amount, state.exponent)
        recharge = parse_decimal(cmd.recharge_amount, state.exponent)
    except MoneyFormatError as exc:
        return Step(state, rejection=Rejection("schema", str(exc)))
    pending = state.auto_recharge.pending_request_id
    state.auto_recharge = AutoRecharge(cmd.enabled, trigger, recharge, pending)
    return Step(state, [_balance_event(state, cmd.command_id)], changed=True)


_COMMANDS: dict[type, Callable[[TenantState, Any, RatingContext], Step]] = {
    TenantUpserted: _tenant_upserted,
    FundsAdded: _funds_added,
    LicensesAssigned: _licenses_assigned,
    UserRemoved: _user_removed,
    AutoRechargeConfigured: _auto_recharge_configured,
}


def _repeat(state: TenantState, input_id: str, seen: str, content: str) -> Step:
    """A command id seen before: nothing changes if the content is the same."""
    if seen == content:
        return Step(state)
    return Step(state, rejection=Rejection("id_conflict", f"id {input_id!r} was applied with other content"))


# --- rating -----------------------------------------------------------------------------


def _call_class(cdr: Cdr) -> str | None:
    """Which rate applies to the call, or None for a free inbound geographic call."""
    if cdr.call_type in INBOUND:
        return "toll_free_inbound" if cdr.number_type == "toll_free" else None
    return "conf_dialout" if cdr.call_type == "conf_out" else "outbound"


def _rate_cdr(state: TenantState, cdr: Cdr, ctx: RatingContext, position: str) -> Step:
    digest = fingerprint(cdr)
    seen = state.applied.get(cdr.usage_id)
    if seen is not None:
        if seen != digest:
            return Step(state, rejection=Rejection(
                "id_conflict", f"usage_id {cdr.usage_id!r} was rated with other content"))
        return Step(state, [_duplicate_event(state, cdr, ctx, position)])

    call_class = _call_class(cdr)
    rate = None
    if call_class is not None and cdr.duration_s > 0:
        rate = ctx.tariff.rate_for(state.currency, call_class, cdr.destination_number)
        if rate is None:
            return Step(state, rejection=Rejection(
                "no_rate", f"no {call_class} rate in {state.currency} for {cdr.destination_number}"))

    now_us = max(state.now_us, cdr.end_us)
    billed_s = charged_seconds(cdr.duration_s, rate.first_s, rate.next_s) if rate else 0
    fee = rate.connection_fee_minor if rate and billed_s else 0
    cost = (usage_cost_minor(rate, billed_s, state.exponent) if rate else 0) + fee
    overage = cost if state.billing_model == POSTPAID else 0
    debits = [] if state.billing_model == POSTPAID else _debit_fifo(state, cost, now_us)
    debited = sum(amount for _, amount in debits)
    uncollected = cost - overage - debited

    state.now_us = now_us
    state.debited_minor += debited
    state.applied[cdr.usage_id] = digest
    status, reason = ("partially_funded", "no_funds") if uncollected else ("rated", None)
    paid_by = None
    if cost:
        paid_by = "OVERAGE" if overage else "MCOPSTNPP"
    rated = _rated_event(state, cdr, f"{state.tenant_id}/rated_cdr/{cdr.usage_id}", {
        **_destination(ctx, cdr),
        "status": status,
        "reason": reason,
        "credit_seconds": cdr.duration_s if rate else 0,
        "charged_seconds": billed_s,
        "connection_fee": _money(state, fee),
        "charge": _money(state, cost),
        "uncollected": _money(state, uncollected),
        "overage": _money(state, overage),
        "capability": paid_by,
        "lot_debits": [{"lot_id": lot_id, "amount": _money(state, amount)} for lot_id, amount in debits],
    })
    outputs = [rated]
    if debited or overage:
        outputs.append(_balance_event(state, cdr.usage_id))
    return Step(state, outputs, changed=True)


def _destination(ctx: RatingContext, cdr: Cdr) -> dict[str, str | None]:
    """The destination's country (longest E.164 prefix) and the call's scope: domestic
    when that country is the CDR's ``user_location`` (SPEC §1.2)."""
    country = ctx.countries.country_of(cdr.destination_number)
    scope = None if country is None else ("domestic" if country == cdr.user_location else "international")
    return {"destination_country": country, "scope": scope}


def _debit_fifo(state: TenantState, cost_minor: int, now_us: int) -> list[tuple[str, int]]:
    """Take up to ``cost_minor`` from the unexpired lots, oldest first."""
    debits: list[tuple[str, int]] = []
    left = cost_minor
    for lot in state.lots:
        if left == 0:
            break
        if lot.remaining_minor == 0 or lot.expires_us <= now_us:
            continue
        take = min(left, lot.remaining_minor)
        lot.remaining_minor -= take
        left -= take
        debits.append((lot.lot_id, take))
    return debits


# --- events -----------------------------------------------------------------------------


def _money(state: TenantState, minor: int) -> str:
    return format_decimal(minor, state.exponent)


def _envelope(state: TenantState, kind: str, event_id: str) -> dict[str, Any]:
    return {
        "type": kind,
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id,
        "tenant_id": state.tenant_id,
        "occurred_at": format_time_us(state.now_us),
    }


def _cdr_fields(cdr: Cdr) -> dict[str, Any]:
    return {
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
    }


def _rated_event(state: TenantState, cdr: Cdr, event_id: str, outcome: dict[str, Any]) -> Output:
    payload = _envelope(state, "rated_cdr", event_id)
    payload.update(_cdr_fields(cdr))
    payload.update({
        "billing_month": month_of(cdr.start_us),
        "pool_usage": [],
        "currency": state.currency,
        "balance_after": _money(state, state.balance_minor),
    })
    payload.update(outcome)
    return Output("rated-cdrs", payload)


def _duplicate_event(state: TenantState, cdr: Cdr, ctx: RatingContext, position: str) -> Output:
    zero = _money(state, 0)
    return _rated_event(state, cdr, f"{state.tenant_id}/rated_cdr/{cdr.usage_id}/duplicate/{position}", {
        **_destination(ctx, cdr),
        "status": "duplicate",
        "reason": None,
        "credit_seconds": 0,
        "charged_seconds": 0,
        "connection_fee": zero,
        "charge": zero,
        "uncollected": zero,
        "overage": zero,
        "capability": None,
        "lot_debits": [],
    })


def _balance_event(state: TenantState, caused_by: str) -> Output:
    payload = _envelope(state, "balance", f"{state.tenant_id}/balance/{caused_by}")
    balance = state.balance_minor
    recharge = state.auto_recharge
    payload.update({
        "balance": _money(state, balance),
        "currency": state.currency,
        "status": "active" if balance > 0 or state.billing_model == POSTPAID else "depleted",
        "lots": [
            {
                "lot_id": lot.lot_id,
                "remaining": _money(state, lot.remaining_minor),
                "purchased_at": format_time_us(lot.purchased_us),
                "expires_at": format_time_us(lot.expires_us),
            }
            for lot in state.lots
        ],
        "pools": [],
        "auto_recharge": {
            "enabled": recharge.enabled,
            "trigger_amount": _money(state, recharge.trigger_minor),
            "recharge_amount": _money(state, recharge.recharge_minor),
            "pending_request_id": recharge.pending_request_id,
        },
        "caused_by": caused_by,
    })
    return Output("balances", payload)


