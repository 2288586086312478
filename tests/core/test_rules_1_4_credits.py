"""SPEC §1.4 (communications credits) and the auto-recharge rules of §1.6, rule by rule."""

from __future__ import annotations

from rater.core.engine import next_deadline
from rater.core.state import request_id

from .kit import US, Tenant, events, rated, t


def _payg(**kw: object) -> Tenant:
    x = Tenant(**kw)  # type: ignore[arg-type]
    x.license("u1", "US", "PAYG")
    return x


# --- lots ---------------------------------------------------------------------------------


def test_1_4_each_funding_is_a_lot_that_expires_12_months_after_purchase() -> None:
    x = Tenant()
    step = x.fund("10.00", at="2026-11-01T08:30:00Z", lot="buy-1")
    (balance,) = events(step, "balance")
    assert balance["lots"] == [{"lot_id": "buy-1", "remaining": "10.00", "purchased_at": "2026-11-01T08:30:00Z",
                                "expires_at": "2027-11-01T08:30:00Z"}]


def test_1_4_debits_consume_lots_oldest_first() -> None:
    x = _payg()
    x.fund("0.05", at="2026-11-02T00:00:00Z", lot="newer")
    x.fund("0.03", at="2026-11-01T00:00:00Z", lot="older")  # bought earlier, arrives later
    out = rated(x.call(5 * 60, US))
    assert out["lot_debits"] == [{"lot_id": "older", "amount": "0.03"}, {"lot_id": "newer", "amount": "0.02"}]
    assert [lot.lot_id for lot in x.s.lots] == ["newer"]


def test_1_4_a_lot_past_its_expiry_is_forfeited_with_a_credits_expired_notification() -> None:
    x = Tenant(now="2026-11-01T00:00:00Z")
    x.fund("3.00", at="2026-01-15T00:00:00Z", lot="old")
    x.fund("2.00", at="2026-10-01T00:00:00Z", lot="new")
    assert next_deadline(x.s, x.ctx) == t("2027-01-15T00:00:00Z")
    assert x.at("2027-01-14T23:59:59Z").outputs == []
    step = x.at("2027-01-15T00:00:00Z")
    (expired,) = events(step, "credits_expired")
    assert (expired["lot_id"], expired["amount"], expired["balance"]) == ("old", "3.00", "2.00")
    assert expired["occurred_at"] == "2027-01-15T00:00:00Z"
    assert (x.s.expired_minor, x.balance) == (300, 200)
    assert next_deadline(x.s, x.ctx) == t("2027-10-01T00:00:00Z")


def test_1_4_an_expired_lot_never_pays_even_without_a_tick() -> None:
    x = _payg(now="2027-01-14T00:00:00Z")
    x.fund("3.00", at="2026-01-15T00:00:00Z", lot="old")
    x.fund("2.00", at="2026-12-01T00:00:00Z", lot="new")
    step = x.call(60, US, start="2027-01-16T00:00:00Z")
    assert [e["lot_id"] for e in events(step, "credits_expired")] == ["old"]
    assert rated(step)["lot_debits"] == [{"lot_id": "new", "amount": "0.02"}]  # the 2027 rate
    kinds = [o.payload["type"] for o in step.outputs]
    assert kinds.index("credits_expired") < kinds.index("rated_cdr")  # due work comes first


def test_1_4_a_lot_bought_on_29_february_expires_before_an_older_one_and_never_pays_late() -> None:
    # 12 months after 2028-02-29 is clamped to 2029-02-28, so the newer lot's expiry
    # (00:00) comes before the older lot's (12:00): expiry is not in purchase order.
    x = _payg(now="2028-02-27T00:00:00Z")
    x.fund("1.00", at="2028-02-28T12:00:00Z", lot="older")
    x.fund("2.00", at="2028-02-29T00:00:00Z", lot="leap")
    assert [lot.lot_id for lot in x.s.lots] == ["older", "leap"]
    assert next_deadline(x.s, x.ctx) == t("2029-02-28T00:00:00Z")
    step = x.at("2029-02-28T06:00:00Z")
    (expired,) = events(step, "credits_expired")
    assert (expired["lot_id"], expired["amount"], expired["balance"]) == ("leap", "2.00", "1.00")
    assert [lot.lot_id for lot in x.s.lots] == ["older"]
    assert next_deadline(x.s, x.ctx) == t("2029-02-28T12:00:00Z")
    step = x.at("2029-02-28T12:00:00Z")
    assert [e["lot_id"] for e in events(step, "credits_expired")] == ["older"]
    assert (x.s.expired_minor, x.balance) == (300, 0)


def test_1_4_an_expired_leap_day_lot_never_pays_even_without_a_tick() -> None:
    x = _payg(now="2028-02-27T00:00:00Z")
    x.fund("1.00", at="2028-02-28T12:00:00Z", lot="older")
    x.fund("2.00", at="2028-02-29T00:00:00Z", lot="leap")
    x.fund("1.00", at="2028-03-01T00:00:00Z", lot="newest")
    step = x.call(5 * 60, US, start="2029-02-28T06:00:00Z")
    assert [e["lot_id"] for e in events(step, "credits_expired")] == ["leap"]
    assert [d["lot_id"] for d in rated(step)["lot_debits"]] == ["older"]


def test_1_4_the_balance_never_goes_below_zero_the_rest_is_uncollected() -> None:
    x = _payg()
    x.fund("0.03")
    out = rated(x.call(5 * 60, US))
    assert (out["charge"], out["uncollected"], out["balance_after"]) == ("0.05", "0.02", "0.00")
    assert (out["status"], out["reason"]) == ("partially_funded", "no_funds")
    assert x.balance == 0


# --- auto-recharge -----------------------------------------------------------------------


def test_1_4_auto_recharge_requests_once_when_a_debit_leaves_the_balance_below_the_trigger() -> None:
    x = _payg()
    x.fund("0.10")
    x.auto_recharge("0.05", "20.00")
    assert events(x.call(4 * 60, US), "recharge_request") == []  # 0.06 left: not below 0.05
    step = x.call(2 * 60, US)
    (request,) = events(step, "recharge_request")
    assert request == {**request, "request_id": "t1/recharge/1", "amount": "20.00", "balance": "0.04",
                       "trigger_amount": "0.05", "currency": "USD"}
    assert x.s.auto_recharge.pending_request_id == "t1/recharge/1"


def test_1_4_never_a_second_request_while_one_is_outstanding() -> None:
    x = _payg()
    x.fund("0.10")
    x.auto_recharge("0.08", "20.00")
    assert len(events(x.call(3 * 60, US), "recharge_request")) == 1
    for _ in range(3):
        assert events(x.call(60, US), "recharge_request") == []


def test_1_4_a_succeeded_result_adds_a_lot_and_emits_recharge_succeeded() -> None:
    x = _payg()
    x.fund("0.10")
    x.auto_recharge("0.08", "20.00")
    x.call(3 * 60, US)
    step = x.result("t1/recharge/1", "succeeded", "20.00", at="2026-11-10T12:00:00Z")
    (ok,) = events(step, "recharge_succeeded")
    assert (ok["request_id"], ok["amount"], ok["balance"]) == ("t1/recharge/1", "20.00", "20.07")
    lot = x.s.lots[-1]
    assert (lot.lot_id, lot.purchased_us) == ("t1/recharge/1", t("2026-11-10T12:00:00Z"))  # purchase = processed_at
    assert x.s.auto_recharge.pending_request_id is None


def test_1_4_a_failed_result_emits_recharge_failed_and_backs_off_one_hour_of_event_time() -> None:
    x = _payg()
    x.fund("0.10")
    x.auto_recharge("0.08", "20.00")
    x.call(3 * 60, US, start="2026-11-10T10:00:00Z")  # now = 10:03
    step = x.result("t1/recharge/1", "failed", "20.00", reason="card_expired")
    (failed,) = events(step, "recharge_failed")
    assert (failed["reason"], failed["retry_after"]) == ("card_expired", "2026-11-10T11:03:00Z")
    assert events(x.call(60, US, start="2026-11-10T10:30:00Z"), "recharge_request") == []  # backing off
    assert next_deadline(x.s, x.ctx) == t("2026-11-10T11:03:00Z")
    (again,) = events(x.at("2026-11-10T11:03:00Z"), "recharge_request")
    assert again["request_id"] == "t1/recharge/2"


def test_1_6_after_a_failure_no_new_request_if_the_balance_is_no_longer_below_the_trigger() -> None:
    x = _payg()
    x.fund("0.10")
    x.auto_recharge("0.08", "20.00")
    x.call(3 * 60, US)
    x.result("t1/recharge/1", "failed", "20.00", reason="declined")
    x.fund("5.00")
    assert events(x.at("2026-11-10T12:00:00Z"), "recharge_request") == []


def test_1_6_a_request_with_no_result_after_24_hours_counts_as_failed_timeout() -> None:
    x = _payg()
    x.fund("0.10")
    x.auto_recharge("0.08", "20.00")
    x.call(3 * 60, US, start="2026-11-10T10:00:00Z")
    assert next_deadline(x.s, x.ctx) == t("2026-11-11T10:03:00Z")
    (failed,) = events(x.at("2026-11-11T10:03:00Z"), "recharge_failed")
    assert (failed["request_id"], failed["reason"]) == ("t1/recharge/1", "timeout")
    (again,) = events(x.at("2026-11-11T11:03:00Z"), "recharge_request")
    assert again["request_id"] == "t1/recharge/2"


def test_1_6_a_succeeded_result_is_never_dropped_even_after_timeout_and_a_newer_request() -> None:
    x = _payg()
    x.fund("0.10")
    x.auto_recharge("0.08", "20.00")
    x.call(3 * 60, US, start="2026-11-10T10:00:00Z")
    x.at("2026-11-11T10:03:00Z")
    x.at("2026-11-11T11:03:00Z")  # request 2 is now pending
    step = x.result("t1/recharge/1", "succeeded", "20.00")
    assert events(step, "recharge_succeeded")[0]["request_id"] == "t1/recharge/1"
    assert x.balance == 2007
    assert x.s.auto_recharge.pending_request_id == "t1/recharge/2"  # the newer one stays outstanding


def test_1_6_results_are_applied_by_request_id_exactly_once() -> None:
    x = _payg()
    x.fund("0.10")
    x.auto_recharge("0.08", "20.00")
    x.call(3 * 60, US)
    x.result("t1/recharge/1", "succeeded", "20.00")
    again = x.result("t1/recharge/1", "succeeded", "20.00")
    assert (again.rejection, again.outputs, x.balance) == (None, [], 2007)
    conflict = x.result("t1/recharge/1", "succeeded", "25.00")
    assert conflict.rejection is not None
    assert conflict.rejection.reason == "id_conflict"


def test_1_6_a_result_in_another_currency_is_a_currency_mismatch_dead_letter() -> None:
    x = _payg()
    x.fund("0.10")
    x.auto_recharge("0.08", "20.00")
    x.call(3 * 60, US)
    step = x.result("t1/recharge/1", "succeeded", "20.00", currency="EUR")
    assert step.rejection is not None
    assert step.rejection.reason == "currency_mismatch"
    assert x.balance == 7
    assert events(x.result("t1/recharge/1", "succeeded", "20.00"), "recharge_succeeded")  # the corrected one applies


def test_1_6_request_ids_derive_from_the_tenant_and_its_recharge_sequence() -> None:
    a, b = _payg(), _payg()
    for x in (a, b):
        x.fund("0.10")
        x.auto_recharge("0.08", "20.00")
        x.call(3 * 60, US)
    assert a.s.auto_recharge.pending_request_id == b.s.auto_recharge.pending_request_id == request_id("t1", 1)


def test_1_6_a_funds_lot_id_is_its_command_id() -> None:
    x = Tenant()
    x.fund("1.00", lot="cmd-42")
    assert x.s.lots[0].lot_id == "cmd-42"


def test_1_4_enabling_auto_recharge_below_the_trigger_requests_at_once() -> None:
    x = Tenant()
    x.fund("1.00")
    assert len(events(x.auto_recharge("5.00", "20.00"), "recharge_request")) == 1


def test_1_4_disabled_auto_recharge_never_requests() -> None:
    x = _payg()
    x.fund("0.10")
    x.auto_recharge("0.08", "20.00", enabled=False)
    assert events(x.call(5 * 60, US), "recharge_request") == []


# --- low balance and zero -----------------------------------------------------------------


def test_1_4_low_balance_is_emitted_once_per_crossing_and_re_arms_above_the_threshold() -> None:
    x = _payg(threshold="0.05")
    x.fund("0.10")
    (low,) = events(x.call(6 * 60, US), "low_balance")
    assert (low["balance"], low["threshold"]) == ("0.04", "0.05")
    assert events(x.call(60, US), "low_balance") == []  # still below: no second event
    x.fund("0.01")  # 0.04: still below, not re-armed
    assert events(x.call(60, US), "low_balance") == []
    x.fund("0.10")  # 0.13: above, re-armed
    assert len(events(x.call(9 * 60, US), "low_balance")) == 1


def test_1_4_the_low_balance_threshold_defaults_to_the_trigger_amount() -> None:
    x = _payg()
    x.fund("0.10")
    x.auto_recharge("0.05", "20.00", enabled=False)
    (low,) = events(x.call(6 * 60, US), "low_balance")
    assert low["threshold"] == "0.05"


def test_1_4_balance_depleted_is_emitted_once_when_the_balance_reaches_zero() -> None:
    x = _payg()
    x.fund("0.02")
    step = x.call(2 * 60, US)
    assert len(events(step, "balance_depleted")) == 1
    assert events(step, "balance")[-1]["status"] == "depleted"
    assert events(x.call(60, US), "balance_depleted") == []  # already at zero
    x.fund("0.01")
    assert len(events(x.call(60, US), "balance_depleted")) == 1  # a new crossing


def test_1_4_expiry_that_empties_the_balance_is_a_depletion_too() -> None:
    x = Tenant(now="2026-11-01T00:00:00Z")
    x.fund("3.00", at="2026-01-15T00:00:00Z")
    step = x.at("2027-01-15T00:00:00Z")
    notices = [e.payload["type"] for e in step.outputs if e.stream == "notifications"]
    assert notices == ["credits_expired", "balance_depleted"]


def test_1_6_post_paid_tenants_have_no_low_balance_or_recharge() -> None:
    x = Tenant(model="postpaid_overage", threshold="1.00")
    x.license("u1", "US", "PAYG")
    x.auto_recharge("1.00", "20.00")
    step = x.call(600, US)
    assert events(step, "low_balance") == events(step, "recharge_request") == []
    assert rated(step)["overage"] == "0.10"
