"""SPEC §1.1 (capabilities), §1.2 (which call is paid by what) and §1.3 (tariff), rule by
rule. Test names carry the SPEC section and the rule they prove."""

from __future__ import annotations

from rater.core.pools import pool_size_s
from rater.core.tariff import Rate, charged_seconds, usage_cost_minor

from .kit import GB, GB_MOBILE, IN, US, US_PREMIUM, US_TOLL_FREE, Tenant, events, pools, rated

MONTH = "2026-11"

# --- §1.1 capabilities --------------------------------------------------------------------


def test_1_1_pool_size_is_minutes_per_user_times_users_holding_it_in_that_location() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN1")
    x.license("u2", "US", "MCOPSTN1")
    x.license("u3", "GB", "MCOPSTN1")
    x.license("u4", "US", "MCOPSTN5")
    assert pools(x)[("MCOPSTN1", "US", "domestic", MONTH)] == (2 * 3000 * 60, 0)
    assert pools(x)[("MCOPSTN1", "GB", "domestic", MONTH)] == (1200 * 60, 0)
    assert pools(x)[("MCOPSTN5", "US", "domestic", MONTH)] == (120 * 60, 0)


def test_1_1_mcopstn6_brings_240_minutes_and_mcomeetadd_60_minutes_per_licence() -> None:
    x = Tenant()
    x.license("u1", "DE", "MCOPSTN6", "MCOMEETADD")
    x.license("u2", "US", "MCOMEETADD")
    assert pools(x)[("MCOPSTN6", "DE", "domestic", MONTH)] == (240 * 60, 0)
    assert pools(x)[("MCOMEETADD", "*", "zone_a", MONTH)] == (2 * 60 * 60, 0)


def test_1_1_mcopstn2_has_a_domestic_pool_and_a_separate_600_minute_international_pool() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN2")
    assert pools(x)[("MCOPSTN2", "US", "domestic", MONTH)] == (3000 * 60, 0)
    assert pools(x)[("MCOPSTN2", "US", "international", MONTH)] == (600 * 60, 0)
    x.call(100, US)
    x.call(50, GB)
    assert pools(x)[("MCOPSTN2", "US", "domestic", MONTH)] == (3000 * 60, 100)
    assert pools(x)[("MCOPSTN2", "US", "international", MONTH)] == (600 * 60, 50)


def test_1_1_minutes_do_not_roll_over_into_the_next_month() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN5")
    x.call(100 * 60, US, start="2026-11-10T10:00:00Z")
    x.at("2026-12-01T00:00:00Z")
    assert pools(x)[("MCOPSTN5", "US", "domestic", "2026-12")] == (120 * 60, 0)
    step = x.call(150 * 60, US, start="2026-12-02T10:00:00Z")
    assert rated(step)["pool_usage"][0]["seconds"] == 120 * 60  # not 120 + 20 unused


def test_1_1_pools_are_drawn_per_second() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN5")
    x.call(61, US)
    x.call(1, US)
    assert pools(x)[("MCOPSTN5", "US", "domestic", MONTH)] == (7200, 62)


def test_1_1_payg_pays_every_outbound_minute_from_credits() -> None:
    x = Tenant()
    x.license("u1", "US", "PAYG")
    x.fund("10.00")
    out = rated(x.call(60, US))
    assert (out["status"], out["pool_usage"], out["charge"], out["capability"]) == ("rated", [], "0.01", "MCOPSTNPP")


# --- §1.2 which call is paid by what ----------------------------------------------------


def test_1_2_1_inbound_to_a_geographic_number_is_free_and_recorded() -> None:
    x = Tenant()
    x.fund("1.00")
    for call_type in ("user_in", "conf_in", "ucap_in"):
        out = rated(x.call(600, US, call_type=call_type, user=None))
        assert (out["status"], out["charge"], out["pool_usage"], out["capability"]) == ("rated", "0.00", [], None)
    assert x.balance == 100


def test_1_2_2_inbound_toll_free_is_paid_from_credits_at_its_toll_free_rate_with_no_licence() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN1")  # a pool exists, but never covers toll-free inbound
    x.fund("1.00")
    out = rated(x.call(120, US_TOLL_FREE, call_type="user_in", number_type="toll_free", user="nobody"))
    assert (out["status"], out["pool_usage"], out["charge"], out["capability"]) == ("rated", [], "0.06", "MCOPSTNPP")
    assert x.balance == 94


def test_1_2_2_inbound_toll_free_with_no_balance_is_partially_funded() -> None:
    x = Tenant()
    out = rated(x.call(120, US_TOLL_FREE, call_type="conf_in", number_type="toll_free", user=None))
    assert (out["status"], out["reason"], out["charge"], out["uncollected"]) == (
        "partially_funded", "no_funds", "0.06", "0.06")


def test_1_2_3_domestic_user_out_draws_from_the_users_domestic_pool() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN1")
    out = rated(x.call(125, US))
    assert out["pool_usage"] == [{"capability": "MCOPSTN1", "location": "US", "scope": "domestic", "seconds": 125}]
    assert (out["scope"], out["charge"], out["capability"]) == ("domestic", "0.00", "MCOPSTN1")


def test_1_2_3_every_user_out_kind_draws_like_user_out() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN1")
    for call_type in ("user_out_conf", "user_out_transfer", "user_out_forwarding"):
        assert rated(x.call(10, US, call_type=call_type))["pool_usage"][0]["seconds"] == 10


def test_1_2_3_international_user_out_draws_only_from_the_mcopstn2_international_pool() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN1", "MCOPSTN2")
    out = rated(x.call(30, GB))
    assert out["pool_usage"] == [{"capability": "MCOPSTN2", "location": "US", "scope": "international", "seconds": 30}]
    y = Tenant("t2")
    y.license("u1", "US", "MCOPSTN1")
    assert rated(y.call(30, GB))["status"] == "blocked"  # a domestic plan never pays international


def test_1_2_3_premium_destinations_never_draw_from_pools() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN1", "MCOPSTNPP")
    x.fund("5.00")
    out = rated(x.call(60, US_PREMIUM))
    assert (out["pool_usage"], out["charge"], out["capability"]) == ([], "1.00", "MCOPSTNPP")


def test_1_2_3_what_no_pool_covers_is_paid_from_credits_with_mcopstnpp() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN1", "MCOPSTNPP")
    x.fund("5.00")
    out = rated(x.call(60, IN))
    assert (out["status"], out["credit_seconds"], out["charge"]) == ("rated", 60, "0.05")


def test_1_2_4_conf_out_to_zone_a_draws_the_tenant_mcomeetadd_pool_whatever_the_organiser_location() -> None:
    x = Tenant()
    x.license("org", "IN", "MCOPSTN1")  # the organiser holds no conferencing licence, in a non-Zone-A country
    x.license("u2", "GB", "MCOMEETADD")
    out = rated(x.call(90, GB, call_type="conf_out", user="org", location="IN"))
    assert out["pool_usage"] == [{"capability": "MCOMEETADD", "location": "*", "scope": "zone_a", "seconds": 90}]


def test_1_2_4_conf_out_beyond_zone_a_or_after_exhaustion_is_paid_from_credits_with_mcomeetacpea() -> None:
    x = Tenant()
    x.license("org", "US", "MCOMEETADD", "MCOMEETACPEA")
    x.fund("5.00")
    out = rated(x.call(60, IN, call_type="conf_out", user="org"))  # IN is not in Zone A
    assert (out["pool_usage"], out["charge"], out["capability"]) == ([], "0.06", "MCOPSTNPP")
    split = rated(x.call(3600 + 60, US, call_type="conf_out", user="org"))
    assert split["pool_usage"][0]["seconds"] == 3600
    assert (split["credit_seconds"], split["charge"]) == (60, "0.01")  # 0.012/min conf dial-out → 1.2 ¢ → 1 ¢


def test_1_2_4_conf_out_without_a_pay_per_minute_licence_is_blocked_beyond_zone_a() -> None:
    x = Tenant()
    x.license("org", "US", "MCOMEETADD")
    x.fund("5.00")
    out = rated(x.call(60, IN, call_type="conf_out", user="org"))
    assert (out["status"], out["reason"], out["charge"]) == ("blocked", "no_license", "0.00")
    assert rated(x.call(60, IN, call_type="conf_out", user="org"))["status"] == "blocked"
    x.license("org", "US", "MCOMEETADD", "MCOPSTNPP")
    assert rated(x.call(60, IN, call_type="conf_out", user="org"))["charge"] == "0.06"


def test_1_2_5_bot_outbound_calls_are_paid_from_credits_with_no_user_licence() -> None:
    x = Tenant()
    x.fund("1.00")
    out = rated(x.call(60, US, call_type="ucap_out", user=None))
    assert (out["status"], out["charge"], out["capability"]) == ("rated", "0.01", "MCOPSTNPP")


def test_1_2_6_a_call_is_split_between_what_the_pool_has_left_and_credits() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN5", "MCOPSTNPP")
    x.fund("5.00")
    x.call(7000, US)
    out = rated(x.call(500, US))  # 200 s left in the pool
    assert out["pool_usage"][0]["seconds"] == 200
    assert (out["credit_seconds"], out["charged_seconds"], out["charge"]) == (300, 300, "0.05")
    assert out["capability"] == "MCOPSTNPP"  # credits paid more seconds than the pool


def test_1_2_7_nothing_can_pay_the_call_is_blocked_with_no_license() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN5")
    x.fund("5.00")
    x.call(7200, US)
    out = rated(x.call(60, US))
    assert (out["status"], out["reason"], out["charge"], out["pool_usage"]) == ("blocked", "no_license", "0.00", [])
    assert x.balance == 500


def test_1_2_8_post_paid_tenants_pay_what_credits_would_have_paid_as_overage() -> None:
    x = Tenant(model="postpaid_overage")
    x.license("u1", "US", "MCOPSTN5", "MCOPSTNPP")
    x.call(7200, US)
    out = rated(x.call(600, US))
    assert (out["status"], out["overage"], out["charge"], out["capability"]) == ("rated", "0.10", "0.10", "OVERAGE")
    assert (out["lot_debits"], out["uncollected"]) == ([], "0.00")


# --- §1.3 tariff --------------------------------------------------------------------------


def test_1_3_charged_seconds_follow_first_and_next_increments() -> None:
    assert charged_seconds(0, 60, 60) == 0
    assert charged_seconds(1, 60, 60) == 60
    assert charged_seconds(61, 60, 60) == 120
    assert charged_seconds(30, 30, 6) == 30
    assert charged_seconds(31, 30, 6) == 36
    assert charged_seconds(7, 1, 1) == 7


def test_1_3_the_longest_prefix_wins() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTNPP")
    x.fund("5.00")
    assert rated(x.call(60, GB_MOBILE))["charge"] == "0.10"  # +447 mobile, not +44
    assert rated(x.call(60, GB))["charge"] == "0.07"  # +44: 0.02/min for 60 s + 0.05 fee


def test_1_3_the_connection_fee_is_charged_once_when_a_part_goes_to_credits() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN2", "MCOPSTNPP")
    x.fund("5.00")
    x.call(36000 - 10, GB)  # 10 s left in the international pool
    out = rated(x.call(40, GB))
    assert (out["credit_seconds"], out["charged_seconds"], out["connection_fee"]) == (30, 30, "0.05")
    assert out["charge"] == "0.06"  # 0.02 * 30/60 = 1 ¢, + 5 ¢ once
    covered = rated(x.call(0, GB))
    assert (covered["connection_fee"], covered["charge"]) == ("0.00", "0.00")


def test_1_3_the_charge_is_rounded_half_up_once_to_the_minor_unit() -> None:
    assert usage_cost_minor(Rate(437_000, 1, 1), 125, 2) == 91  # 0.9104 → 91
    assert usage_cost_minor(Rate(12_000, 1, 1), 25, 2) == 1  # 0.5 ¢ → 1 ¢
    assert usage_cost_minor(Rate(11_999, 1, 1), 25, 2) == 0  # 0.49995 ¢ → 0
    assert usage_cost_minor(Rate(3_500, 1, 1), 60, 3) == 4  # BHD: 3.5 fils → 4
    x = Tenant(currency="JPY")
    x.license("u1", "US", "MCOPSTNPP")
    x.fund("100")
    assert rated(x.call(90, "+81312345678"))["charge"] == "5"  # 3 JPY/min × 90 s = 4.5 → 5


def test_1_3_the_tariff_version_in_force_at_the_call_start_rates_it() -> None:
    x = Tenant(now="2026-12-31T23:00:00Z")
    x.license("u1", "US", "MCOPSTNPP")
    x.fund("5.00", at="2026-12-01T00:00:00Z")
    before = rated(x.call(120, US, start="2026-12-31T23:59:00Z"))  # ends in 2027, started in 2026
    after = rated(x.call(120, US, start="2027-01-01T00:00:00Z"))
    assert (before["charge"], after["charge"]) == ("0.02", "0.04")


def test_1_3_a_destination_with_no_rate_is_a_no_rate_dead_letter_never_a_free_call() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTNPP")
    x.fund("5.00")
    step = x.call(60, "+33123456789")
    assert step.rejection is not None
    assert step.rejection.reason == "no_rate"
    assert step.outputs == []
    assert x.balance == 500


def test_1_3_before_the_first_tariff_version_there_is_no_rate() -> None:
    x = Tenant(now="2025-06-01T00:00:00Z")
    x.license("u1", "US", "MCOPSTNPP")
    x.fund("5.00", at="2025-06-01T00:00:00Z")
    step = x.call(60, US, start="2025-06-02T00:00:00Z")
    assert step.rejection is not None
    assert step.rejection.reason == "no_rate"
    assert "none in force" in step.rejection.message


def test_1_3_every_debit_and_balance_is_an_integer_of_minor_units() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTNPP")
    x.fund("0.05")
    x.call(61, GB_MOBILE)
    assert isinstance(x.balance, int)
    assert all(isinstance(lot.remaining_minor, int) for lot in x.s.lots)


def test_1_3_a_zero_second_call_is_never_charged() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTNPP")
    x.fund("1.00")
    out = rated(x.call(0, GB))
    assert (out["charge"], out["connection_fee"], out["charged_seconds"]) == ("0.00", "0.00", 0)


def test_pool_size_of_an_unknown_capability_is_zero() -> None:
    x = Tenant()
    assert pool_size_s(x.s, x.ctx, ("NOPE", "US", "domestic", MONTH)) == 0
    assert events(x.license("u1", "US", "MCOPSTN1"), "balance")
