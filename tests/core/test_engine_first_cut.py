"""The first cut of the core: credits-paid calls by the tariff, FIFO lots, duplicates."""

from __future__ import annotations

from rater.core.countries import CountryPrefixes
from rater.core.engine import RatingContext, apply
from rater.core.inputs import Cdr, FundsAdded, TenantUpserted
from rater.core.state import TenantState, check_invariants
from rater.core.tariff import Rate, Tariff, charged_seconds, usage_cost_minor
from rater.core.times import parse_time_us

CTX = RatingContext(
    Tariff("t", 0, {("USD", "outbound"): {"": Rate(20_000, 60, 60), "44": Rate(10_000, 30, 6, 5)}}),
    {"USD": 2, "JPY": 0},
    CountryPrefixes.of({"1": "US", "1416": "CA", "44": "GB"}),
)


def _tenant() -> TenantState:
    step = apply(None, TenantUpserted("t1", "c1", "US", "USD", "prepaid_credits", None), CTX, "p/0/0")
    assert step.state is not None
    return step.state


def _fund(state: TenantState, lot: str, amount: str, at: str) -> TenantState:
    step = apply(state, FundsAdded("t1", lot, amount, "USD", parse_time_us(at)), CTX, "p/0/1")
    assert step.rejection is None
    assert step.state is not None
    return step.state


def _cdr(usage_id: str, seconds: int, destination: str = "+12125550123") -> Cdr:
    start = parse_time_us("2026-11-02T10:00:00Z")
    return Cdr("t1", usage_id, "c", None, "u", "US", "user_out", "geographic", "+14155550100", destination,
               start, start + seconds * 1_000_000, seconds)


def test_charged_seconds_follow_first_and_next_increments() -> None:
    assert charged_seconds(0, 60, 60) == 0
    assert charged_seconds(1, 60, 60) == 60
    assert charged_seconds(61, 60, 60) == 120
    assert charged_seconds(31, 30, 6) == 36
    assert charged_seconds(7, 1, 1) == 7


def test_usage_cost_rounds_half_up_once_per_call() -> None:
    # 0.437 USD/min for 125 s = 0.910416.. USD → 91 cents; 0.012 USD/min for 25 s = 0.5 cent → 1 cent
    assert usage_cost_minor(Rate(437_000, 1, 1), 125, 2) == 91
    assert usage_cost_minor(Rate(12_000, 1, 1), 25, 2) == 1


def test_longest_prefix_wins_and_connection_fee_is_added_once() -> None:
    state = _fund(_tenant(), "lot1", "10.00", "2026-11-01T00:00:00Z")
    step = apply(state, _cdr("u1", 31, "+442071838750"), CTX, "p/0/2")
    rated = step.outputs[0].payload
    assert rated["charged_seconds"] == 36
    assert rated["charge"] == "0.06"  # 0.01/min * 36 s = 0.6 cent → 1 cent, + 5 cent fee
    assert rated["connection_fee"] == "0.05"


def test_debits_take_lots_oldest_first_and_the_ledger_balances() -> None:
    state = _fund(_tenant(), "new", "1.00", "2026-10-05T00:00:00Z")
    state = _fund(state, "old", "0.03", "2026-09-01T00:00:00Z")
    step = apply(state, _cdr("u1", 300), CTX, "p/0/3")  # 5 min * 0.02 = 0.10
    assert step.outputs[0].payload["lot_debits"] == [
        {"lot_id": "old", "amount": "0.03"}, {"lot_id": "new", "amount": "0.07"}]
    assert step.state is not None
    check_invariants(step.state)
    assert step.state.balance_minor == 93


def test_no_funds_leaves_the_rest_uncollected_and_never_goes_below_zero() -> None:
    state = _fund(_tenant(), "lot1", "0.05", "2026-11-01T00:00:00Z")
    step = apply(state, _cdr("u1", 600), CTX, "p/0/2")
    rated = step.outputs[0].payload
    assert (rated["status"], rated["reason"], rated["charge"], rated["uncollected"]) == (
        "partially_funded", "no_funds", "0.20", "0.15")
    assert step.state is not None
    check_invariants(step.state)


def test_a_repeated_usage_id_is_a_duplicate_and_moves_no_money() -> None:
    state = _fund(_tenant(), "lot1", "1.00", "2026-11-01T00:00:00Z")
    first = apply(state, _cdr("u1", 60), CTX, "p/0/2")
    assert first.state is not None
    balance = first.state.balance_minor
    again = apply(first.state, _cdr("u1", 60), CTX, "p/0/3")
    assert again.outputs[0].payload["status"] == "duplicate"
    assert again.changed is False
    assert again.state is not None
    assert again.state.balance_minor == balance
    conflict = apply(again.state, _cdr("u1", 61), CTX, "p/0/4")
    assert conflict.rejection is not None
    assert conflict.rejection.reason == "id_conflict"


def test_a_destination_without_a_rate_is_refused_never_free() -> None:
    ctx = RatingContext(Tariff("t", 0, {("USD", "outbound"): {"1": Rate(1, 1, 1)}}), {"USD": 2})
    state = _fund(_tenant(), "lot1", "1.00", "2026-11-01T00:00:00Z")
    step = apply(state, _cdr("u1", 60, "+33123456789"), ctx, "p/0/2")
    assert step.rejection is not None
    assert step.rejection.reason == "no_rate"


def test_a_cdr_for_an_unknown_tenant_is_refused() -> None:
    step = apply(None, _cdr("u1", 60), CTX, "p/0/0")
    assert step.rejection is not None
    assert step.rejection.reason == "unknown_tenant"


def test_the_same_inputs_give_byte_identical_outputs() -> None:
    def run() -> list[object]:
        state = _fund(_tenant(), "lot1", "1.00", "2026-11-01T00:00:00Z")
        step = apply(state, _cdr("u1", 95), CTX, "p/0/2")
        return [o.payload for o in step.outputs]

    assert run() == run()


def test_state_survives_its_storage_form() -> None:
    state = _fund(_tenant(), "lot1", "1.00", "2026-11-01T00:00:00Z")
    step = apply(state, _cdr("u1", 95), CTX, "p/0/2")
    assert step.state is not None
    assert TenantState.from_dict(step.state.to_dict()) == step.state


def test_destination_country_and_scope_come_from_the_longest_prefix_against_user_location() -> None:
    state = _fund(_tenant(), "lot1", "10.00", "2026-11-01T00:00:00Z")
    for usage_id, number, expected in (("a", "+12125550123", ("US", "domestic")),
                                       ("b", "+14165550100", ("CA", "international")),
                                       ("c", "+442071838750", ("GB", "international")),
                                       ("d", "+81312345678", (None, None))):
        step = apply(state, _cdr(usage_id, 60, number), CTX, "p/0/9")
        payload = step.outputs[0].payload
        assert (payload["destination_country"], payload["scope"]) == expected


def test_a_repeated_funds_command_adds_no_second_lot_and_other_content_is_an_id_conflict() -> None:
    state = _fund(_tenant(), "lot1", "1.00", "2026-11-01T00:00:00Z")
    again = apply(state, FundsAdded("t1", "lot1", "1.00", "USD", parse_time_us("2026-11-01T00:00:00Z")), CTX, "p/0/5")
    assert (again.changed, again.outputs, again.rejection) == (False, [], None)
    assert again.state is not None
    assert again.state.balance_minor == 100
    other = apply(state, FundsAdded("t1", "lot1", "2.00", "USD", parse_time_us("2026-11-01T00:00:00Z")), CTX, "p/0/6")
    assert other.rejection is not None
    assert other.rejection.reason == "id_conflict"
    assert state.funded_minor == 100
