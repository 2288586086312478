"""SPEC §1.5 (time, order, duplicates) and the decided edge cases of §1.6, rule by rule."""

from __future__ import annotations

import dataclasses

import pytest

from rater.core.clock import PartitionClock
from rater.core.context import US_PER_DAY
from rater.core.engine import apply
from rater.core.inputs import Cdr, FundsAdded, TenantUpserted
from rater.core.times import add_months_clamped, format_time_us

from .kit import CTX, GB, US, IdStore, Tenant, events, pools, rated, t

# --- §1.5 time, order, duplicates -----------------------------------------------------------


def test_1_5_a_cdr_is_rated_in_the_billing_month_of_its_start_time_utc() -> None:
    x = Tenant(now="2026-11-30T23:00:00Z")
    x.license("u1", "US", "MCOPSTN5")
    out = rated(x.call(7200, US, start="2026-11-30T23:30:00+00:00"))  # ends in December
    assert out["billing_month"] == "2026-11"
    assert pools(x)[("MCOPSTN5", "US", "domestic", "2026-11")] == (7200, 7200)
    late_evening = rated(x.call(60, US, start="2026-12-01T00:30:00+01:00"))  # 23:30 UTC on 30 Nov
    assert late_evening["billing_month"] == "2026-11"


def test_1_5_a_closed_month_is_rated_against_its_own_pool_within_the_grace_period() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN5")
    x.call(7000, US, start="2026-11-20T10:00:00Z")
    x.at("2026-12-05T00:00:00Z")
    out = rated(x.call(300, US, start="2026-11-30T10:00:00Z"))
    assert (out["billing_month"], out["pool_usage"][0]["seconds"]) == ("2026-11", 200)


def test_1_5_a_cdr_after_the_grace_period_is_a_late_dead_letter() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN5")
    x.at("2026-12-08T00:00:00Z")  # November closed 7 days ago
    step = x.call(60, US, start="2026-11-30T10:00:00Z")
    assert step.rejection is not None
    assert step.rejection.reason == "late"
    assert step.outputs == []


def test_1_5_a_tenant_created_in_a_month_keeps_the_month_before_with_no_licences() -> None:
    # created on 3 November: October is still in its grace, so its calls are rated — but
    # the tenant had no licences then, so October's pools are empty and credits pay
    x = Tenant(now="2026-11-03T00:00:00Z")
    x.license("u1", "US", "MCOPSTN1", "MCOPSTNPP")
    x.fund("1.00", at="2026-11-03T00:00:00Z")
    october = rated(x.call(60, US, usage_id="oct-1", start="2026-10-31T10:00:00Z"))
    assert (october["billing_month"], october["pool_usage"], october["charge"]) == ("2026-10", [], "0.01")
    assert rated(x.call(60, US, usage_id="oct-1", start="2026-10-31T10:00:00Z"))["status"] == "duplicate"
    november = rated(x.call(60, US, usage_id="nov-1", start="2026-11-03T10:00:00Z"))
    assert (november["pool_usage"][0]["seconds"], november["charge"]) == (60, "0.00")


def test_1_5_a_repeated_usage_id_is_a_duplicate_no_second_charge() -> None:
    x = Tenant()
    x.license("u1", "US", "PAYG")
    x.fund("1.00")
    first = rated(x.call(60, US, usage_id="call-1"))
    step = x.call(60, US, usage_id="call-1")
    dup = rated(step)
    assert (dup["status"], dup["charge"], dup["lot_debits"], x.balance) == ("duplicate", "0.00", [], 99)
    assert dup["event_id"] != first["event_id"]
    assert dup["event_id"] == f"t1/rated_cdr/call-1/duplicate/cdrs/0/{x.position}"
    assert len(step.outputs) == 1  # reported, nothing else


def test_1_5_a_tenant_created_in_the_grace_of_the_month_before_charges_that_months_calls_once() -> None:
    """Found by review: a tenant created on 2 December remembered only December, so a
    repeated November CDR (still in grace) was charged again and again."""
    x = Tenant(now="2026-12-02T00:00:00Z")
    x.license("u1", "US", "PAYG")
    x.fund("1.00", at="2026-12-01T00:00:00Z")
    store = IdStore()
    first = rated(x.call(60, US, usage_id="nov-1", start="2026-11-30T10:00:00Z"))
    assert (first["status"], first["billing_month"]) == ("rated", "2026-11")
    balance = x.balance
    assert rated(x.call(60, US, usage_id="nov-1", start="2026-11-30T10:00:00Z"))["status"] == "duplicate"
    x.state = store.save_and_load(x.s)  # the id now only in the store, as after a restart
    assert rated(x.call(60, US, usage_id="nov-1", start="2026-11-30T10:00:00Z"))["status"] == "duplicate"
    assert x.balance == balance
    # November is forgotten when its grace ends, like any closed month
    x.call(60, US, usage_id="dec-1", start="2026-12-08T10:00:00Z")
    x.state = store.save_and_load(x.s)
    assert [key for key in store.ids if key.startswith("u/")] == ["u/2026-12/dec-1"]


def test_1_5_the_core_never_reads_the_clock_time_is_an_input() -> None:
    x = Tenant(now="2030-01-01T00:00:00Z")
    step = x.fund("1.00", at="2029-12-31T00:00:00Z")
    assert events(step, "balance")[0]["occurred_at"] == "2030-01-01T00:00:00Z"


# --- §1.6 money and licences ----------------------------------------------------------------


def test_1_6_pools_are_drawn_per_exact_second_increments_apply_only_to_the_credit_part() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN5", "MCOPSTNPP")
    x.fund("1.00")
    out = rated(x.call(7200 + 61, US))  # 60/60 increments on the credit part only
    assert (out["pool_usage"][0]["seconds"], out["credit_seconds"], out["charged_seconds"]) == (7200, 61, 120)


def test_1_6_a_call_that_a_pool_covers_needs_no_rate() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN2")
    out = rated(x.call(60, "+33123456789"))  # FR has no rate, MCOPSTN2's international pool covers it
    assert out["status"] == "rated"
    assert out["pool_usage"][0]["scope"] == "international"


def test_1_6_a_user_with_several_plans_draws_them_in_catalog_order() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN6", "MCOPSTN5")  # catalog order: MCOPSTN5 before MCOPSTN6
    out = rated(x.call(7200 + 100, US))
    assert [(p["capability"], p["seconds"]) for p in out["pool_usage"]] == [("MCOPSTN5", 7200), ("MCOPSTN6", 100)]


def test_1_6_location_and_scope_come_from_the_cdr_user_location() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN1")
    x.license("u2", "GB", "MCOPSTN1")
    out = rated(x.call(60, GB, user="u1", location="GB"))  # u1 travelling, recorded in GB
    assert out["scope"] == "domestic"
    assert out["pool_usage"] == [{"capability": "MCOPSTN1", "location": "GB", "scope": "domestic", "seconds": 60}]


def test_1_6_a_licence_change_mid_month_resizes_the_open_pool_at_once_never_negative() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN5")
    x.license("u2", "US", "MCOPSTN5")
    x.call(10_000, US)
    x.remove("u2")
    assert pools(x)[("MCOPSTN5", "US", "domestic", "2026-11")] == (7200, 10_000)
    (report,) = [p for p in events(x.license("u3", "DE", "MCOPSTN5"), "balance")[0]["pools"]
                 if p["location"] == "US"]
    assert report["available_seconds"] == 0
    assert rated(x.call(60, US))["status"] == "blocked"


def test_1_6_when_a_month_ends_its_pool_sizes_freeze_for_late_cdrs() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN5")
    x.license("u2", "US", "MCOPSTN5")
    x.at("2026-12-01T00:00:00Z")
    x.remove("u2")  # December shrinks; November keeps two licences
    out = rated(x.call(10_000, US, start="2026-11-29T10:00:00Z"))
    assert out["pool_usage"][0]["seconds"] == 10_000
    assert pools(x)[("MCOPSTN5", "US", "domestic", "2026-12")] == (7200, 0)


def test_1_6_post_paid_keeps_the_licence_checks() -> None:
    x = Tenant(model="postpaid_overage")
    x.license("u1", "US", "MCOPSTN5")
    out = rated(x.call(60, GB))
    assert (out["status"], out["reason"], out["overage"]) == ("blocked", "no_license", "0.00")


def test_1_6_blocked_only_when_nothing_may_pay_permitted_but_unfunded_is_partially_funded() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTNPP")
    out = rated(x.call(60, US))
    assert (out["status"], out["reason"], out["charge"], out["uncollected"]) == (
        "partially_funded", "no_funds", "0.01", "0.01")


def test_1_6_a_pool_part_with_no_licence_for_the_rest_is_partially_funded_no_license() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN5")
    out = rated(x.call(7200 + 60, US))
    assert (out["status"], out["reason"], out["pool_usage"][0]["seconds"], out["charge"]) == (
        "partially_funded", "no_license", 7200, "0.00")


def test_1_6_partial_funding_debits_the_balance_and_records_the_rest_as_uncollected() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTNPP")
    x.fund("0.04")
    out = rated(x.call(31, GB))  # 30/6: 36 s × 0.02/min = 1.2 ¢ → 1 ¢ + 5 ¢ fee = 6 ¢
    assert (out["charge"], out["uncollected"], out["overage"]) == ("0.06", "0.02", "0.00")
    assert sum(int(d["amount"].replace(".", "")) for d in out["lot_debits"]) == 4


def test_1_6_emergency_calls_are_never_blocked_charged_or_dead_lettered() -> None:
    x = Tenant()
    for destination in ("911", "112", "+1911", "+44999"):
        out = rated(x.call(300, destination, user="never-licensed"))
        assert (out["status"], out["reason"], out["charge"]) == ("rated", "emergency", "0.00")
    assert rated(x.call(300, "911", call_type="ucap_out", user=None))["reason"] == "emergency"


def test_2_only_the_catalogs_emergency_numbers_may_be_short_codes() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTNPP")
    x.fund("1.00")
    step = x.call(60, "9110")  # a short code, but not an emergency number: never priced by a prefix
    assert step.rejection is not None
    assert step.rejection.reason == "schema"
    inbound = x.call(60, "911", call_type="user_in")  # the tenant's own number is never a short code
    assert inbound.rejection is not None
    assert inbound.rejection.reason == "schema"
    assert x.balance == 100


def test_1_6_outbound_destination_type_comes_from_prefixes_not_number_type() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN1")
    out = rated(x.call(60, US, number_type="toll_free"))  # the caller id is toll-free; the call is not
    assert out["pool_usage"][0]["seconds"] == 60


def test_1_6_an_amount_with_more_decimals_than_the_currency_allows_is_a_schema_error() -> None:
    x = Tenant(currency="JPY")
    step = x.fund("1.5")
    assert step.rejection is not None
    assert step.rejection.reason == "schema"
    y = Tenant("t2", currency="BHD")
    assert y.fund("1.234").rejection is None
    z = Tenant("t3", currency="CLF")  # ISO 4217's widest: 4 minor digits, and the events say so
    (balance,) = events(z.fund("1.2345"), "balance")
    assert balance["balance"] == "1.2345"


def test_1_6_a_rate_only_in_another_currency_is_a_currency_mismatch_none_at_all_is_no_rate() -> None:
    x = Tenant(currency="EUR")
    x.license("u1", "US", "PAYG")
    x.fund("5.00")
    step = x.call(60, US)  # +1 has USD, JPY and BHD rates, no EUR one
    assert step.rejection is not None
    assert step.rejection.reason == "currency_mismatch"
    assert "BHD, JPY, USD" in step.rejection.message
    y = Tenant("t2")
    y.license("u1", "US", "PAYG")
    y.fund("5.00")
    assert y.call(60, "+33123456789").rejection.reason == "no_rate"  # type: ignore[union-attr]


def test_1_6_a_rate_may_price_some_currencies_and_its_longest_prefix_decides_in_any_currency() -> None:
    # the test tariff prices JPY only at +1 and +81: a JPY tenant's call to Japan is
    # rated in JPY, and its call to a premium +1 900 number — whose longest prefix, 1900,
    # is priced in USD only — is a currency_mismatch: +1's JPY rate does not stand in
    x = Tenant(currency="JPY")
    x.license("u1", "US", "MCOPSTNPP")
    x.fund("1000")
    assert rated(x.call(60, "+81312345678"))["charge"] == "3"
    assert rated(x.call(60, US))["charge"] == "2"
    step = x.call(60, "+19005550100")
    assert step.rejection is not None
    assert step.rejection.reason == "currency_mismatch"
    assert "outbound rate for +19005550100 is in USD, tenant currency is JPY" in step.rejection.message
    # the USD tenant next to it still gets the 1900 rate
    y = Tenant("t2")
    y.license("u1", "US", "MCOPSTNPP")
    y.fund("5.00")
    assert rated(y.call(60, "+19005550100"))["charge"] == "1.00"


def test_1_6_currency_is_fixed_by_the_first_tenant_upserted() -> None:
    x = Tenant()
    step = x.send(TenantUpserted("t1", "again", "US", "EUR", "prepaid_credits", None))
    assert step.rejection is not None
    assert step.rejection.reason == "currency_mismatch"
    assert x.fund("1.00", currency="EUR").rejection.reason == "currency_mismatch"  # type: ignore[union-attr]


def test_1_6_lot_expiry_is_clamped_to_the_end_of_a_shorter_month() -> None:
    assert format_time_us(add_months_clamped(t("2028-02-29T10:00:00Z"), 12)) == "2029-02-28T10:00:00Z"
    assert format_time_us(add_months_clamped(t("2026-11-23T19:00:00.5Z"), 12)) == "2027-11-23T19:00:00.500000Z"


# --- §1.6 identity, time and order ----------------------------------------------------------


def test_1_6_the_same_usage_id_with_different_content_is_an_id_conflict() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN1")
    x.call(60, US, usage_id="c1")
    step = x.call(61, US, usage_id="c1")
    assert step.rejection is not None
    assert step.rejection.reason == "id_conflict"


def test_1_6_a_usage_id_is_unique_across_billing_months_never_charged_twice() -> None:
    x = Tenant(now="2026-11-30T00:00:00Z")
    x.license("u1", "US", "PAYG")
    x.fund("5.00")
    first = rated(x.call(60, US, usage_id="c1", start="2026-11-30T23:59:00Z"))
    assert first["billing_month"] == "2026-11"
    again = x.call(60, US, usage_id="c1", start="2026-12-01T00:00:30Z")  # other content, next month
    assert again.rejection is not None
    assert again.rejection.reason == "id_conflict"
    assert x.balance == 500 - int(first["charge"].replace(".", ""))
    same = rated(x.call(60, US, usage_id="c1", start="2026-11-30T23:59:00Z"))
    assert same["status"] == "duplicate"


def test_1_6_a_duplicate_of_a_blocked_call_is_a_duplicate() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN5")
    assert rated(x.call(60, GB, usage_id="c1"))["status"] == "blocked"
    assert rated(x.call(60, GB, usage_id="c1"))["status"] == "duplicate"


def test_1_6_a_dead_lettered_cdr_claims_no_id() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTNPP")
    x.fund("1.00")
    assert x.call(60, "+33123456789", usage_id="c1").rejection is not None  # no_rate
    assert rated(x.call(60, US, usage_id="c1"))["status"] == "rated"  # the corrected CDR


def test_1_6_a_repeated_command_id_changes_nothing_and_other_content_is_an_id_conflict() -> None:
    x = Tenant()
    x.fund("1.00", lot="buy-1")
    again = x.fund("1.00", lot="buy-1")
    assert (again.rejection, again.outputs, x.balance) == (None, [], 100)
    assert x.fund("2.00", lot="buy-1").rejection.reason == "id_conflict"  # type: ignore[union-attr]


def test_1_6_now_is_the_later_of_the_latest_tick_and_the_latest_accepted_cdr_end() -> None:
    clock = PartitionClock().tick(t("2026-11-10T00:00:00Z"))
    clock = clock.accept(t("2026-11-10T01:00:00Z"))
    assert clock.now_us == t("2026-11-10T01:00:00Z")
    clock = clock.tick(t("2026-11-10T00:30:00Z"))  # a tick behind: time never goes back
    assert clock.now_us == t("2026-11-10T01:00:00Z")
    assert clock.tick(t("2026-11-11T00:00:00Z")).now_us == t("2026-11-11T00:00:00Z")


def test_1_6_a_cdr_ending_more_than_a_day_after_the_latest_tick_is_future() -> None:
    clock = PartitionClock().tick(t("2026-11-10T00:00:00Z"))
    assert clock.refuses(t("2026-11-11T00:00:00Z"), CTX) is None
    reason = clock.refuses(t("2026-11-11T00:00:01Z"), CTX)
    assert reason is not None
    assert "after the partition's latest tick" in reason


def test_1_6_a_rejected_cdr_does_not_move_now() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTNPP")
    x.fund("1.00", at="2025-11-20T00:00:00Z")  # expires 2026-11-20
    step = x.call(60, "+33123456789", start="2026-11-25T00:00:00Z")  # no_rate
    assert step.rejection is not None
    assert step.outputs == []
    assert x.s.now_us < t("2026-11-20T00:00:00Z")
    assert x.balance == 100


def test_1_6_outputs_carry_now_as_occurred_at() -> None:
    x = Tenant(now="2026-11-10T00:00:00Z")
    x.license("u1", "US", "MCOPSTN1")
    step = x.call(90, US, start="2026-11-10T08:00:00Z")
    assert {o.payload["occurred_at"] for o in step.outputs} == {"2026-11-10T08:01:30Z"}


def test_1_6_inputs_apply_to_the_state_as_it_is_when_processed() -> None:
    x = Tenant()
    x.license("u1", "US", "PAYG")
    early = rated(x.call(60, US, start="2026-11-10T10:00:00Z"))  # the funds arrive after the CDR
    x.fund("1.00", at="2026-11-01T00:00:00Z")
    assert (early["status"], x.balance) == ("partially_funded", 100)


def test_1_6_an_unknown_tenant_is_an_unknown_tenant_dead_letter() -> None:
    cdr = Cdr("ghost", "c1", "c", None, "u1", "US", "user_out", "geographic", "+1", US, 0, 1_000_000, 1)
    for inp in (cdr, FundsAdded("ghost", "f1", "1.00", "USD", 0)):
        step = apply(None, inp, CTX, 0, "p/0/0")
        assert (step.state, step.rejection.reason if step.rejection else None) == (None, "unknown_tenant")


def test_1_6_a_user_never_licensed_is_unknown_user_a_known_one_without_licence_is_blocked() -> None:
    x = Tenant()
    step = x.call(60, US, user="stranger")
    assert step.rejection is not None
    assert step.rejection.reason == "unknown_user"
    assert x.call(60, US, call_type="conf_out", user=None).rejection.reason == "unknown_user"  # type: ignore[union-attr]
    x.license("u1", "US", "MCOPSTN5")
    x.remove("u1")
    assert rated(x.call(60, US))["status"] == "blocked"
    removed = x.remove("stranger")  # removing a user who was never licensed makes them no one
    assert removed.rejection is None
    assert x.call(60, US, user="stranger").rejection.reason == "unknown_user"  # type: ignore[union-attr]


def test_1_5_a_grace_period_of_28_days_or_more_is_refused_at_start() -> None:
    # The state keeps one closed month beside the open one: a grace that outlives the
    # next month's end would forget a month still in grace (February has 28 days).
    with pytest.raises(ValueError, match="under 28 days"):
        dataclasses.replace(CTX, grace_us=28 * US_PER_DAY)
    assert dataclasses.replace(CTX, grace_us=28 * US_PER_DAY - 1).grace_us == 28 * US_PER_DAY - 1
