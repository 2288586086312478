"""SPEC §2 limits: events derived from the longest ids still match their schemas.

Every step's events are schema-checked by the kit; these tests feed it the longest ids
the input schemas allow and the longest Kafka position."""

from __future__ import annotations

from rater.core.inputs import AutoRechargeConfigured, TenantUpserted
from rater.core.ledger import MAX_LOTS

from .kit import US, Tenant, events, rated

LONG_TENANT = "t" * 64  # common.json tenant_id: at most 64


def test_2_events_derived_from_the_longest_ids_still_match_their_schemas() -> None:
    x = Tenant(LONG_TENANT, now="2026-01-01T00:00:00Z")
    user, lot, usage = "u" * 200, "L" * 200, "c" * 200
    x.license(user, "US", "PAYG")
    x.auto_recharge("1.00", "5.00")
    x.fund("0.50", at="2026-01-01T00:00:00Z", lot=lot)
    first = x.call(60, US, user=user, usage_id=usage, start="2026-01-02T00:00:00Z")
    assert rated(first)["event_id"] == f"{LONG_TENANT}/rated_cdr/{usage}"
    # Kafka's longest topic name, partition and offset in a duplicate's own event id
    x.topic, x.partition, x.position = "p" * 249, 2**31 - 1, 2**63 - 2
    duplicate = rated(x.call(60, US, user=user, usage_id=usage, start="2026-01-02T00:00:00Z"))
    assert duplicate["status"] == "duplicate"
    assert duplicate["event_id"].endswith(f"/{'p' * 249}/{2**31 - 1}/{2**63 - 1}")
    step = x.at("2027-01-01T00:00:00Z")  # the lot expires: the balance is caused by its long id
    (balance,) = events(step, "balance")
    assert balance["caused_by"] == f"expired/{lot}"
    assert len(balance["event_id"]) > 200


def test_2_a_lot_that_would_take_the_balance_past_18_integer_digits_is_refused() -> None:
    x = Tenant()
    assert x.fund("999999999999999999.00").rejection is None
    step = x.fund("1.00")
    assert step.rejection is not None
    assert (step.rejection.reason, x.balance) == ("schema", 99999999999999999900)
    assert "18 integer digits" in step.rejection.message
    assert x.fund("0.99").rejection is None  # the largest balance the wire can carry


def test_2_a_command_id_of_the_form_of_the_raters_request_ids_is_refused_so_a_recharge_always_lands() -> None:
    x = Tenant("acme")
    x.license("u1", "US", "PAYG")
    step = x.fund("5.00", lot="acme/recharge/1")
    assert step.rejection is not None
    assert (step.rejection.reason, x.balance) == ("schema", 0)
    assert "acme/recharge/N" in step.rejection.message
    assert x.fund("5.00", lot="other/recharge/1").rejection is None  # another tenant's form is an ordinary id
    x.auto_recharge("5.00", "10.00")
    (request,) = events(x.call(60, US), "recharge_request")
    assert request["request_id"] == "acme/recharge/1"
    landed = x.result("acme/recharge/1", "succeeded", "10.00")
    assert landed.rejection is None
    assert events(landed, "recharge_succeeded")
    for bad in (AutoRechargeConfigured("acme", "acme/recharge/7", True, "1.00", "1.00"),
                TenantUpserted("acme", "acme/recharge/", "US", "USD", "prepaid_credits", None)):
        refused = x.send(bad)
        assert refused.rejection is not None
        assert refused.rejection.reason == "schema"


def test_a_tenant_holds_at_most_max_lots_lots_with_money_and_one_more_is_a_tenant_limit() -> None:
    x = Tenant()
    for n in range(MAX_LOTS):
        assert x.fund("0.01", lot=f"lot-{n}").rejection is None
    step = x.fund("0.01", lot="one-too-many")
    assert step.rejection is not None
    assert (step.rejection.reason, len(x.s.lots)) == ("tenant_limit", MAX_LOTS)
    foreign = x.result("processor-9", "succeeded", "1.00")  # not a request of the rater's: counted
    assert foreign.rejection is not None
    assert foreign.rejection.reason == "tenant_limit"
    # the rater's own request is never refused for the count: its card was charged
    (request,) = events(x.auto_recharge("20.00", "50.00"), "recharge_request")
    landed = x.result(request["request_id"], "succeeded", "50.00")
    assert landed.rejection is None
    assert len(x.s.lots) == MAX_LOTS + 1
    assert x.s.auto_recharge.pending_request_id is None
    assert x.fund("0.00", lot="empty").rejection is None  # an empty lot holds nothing
    x.license("u1", "US", "PAYG")
    x.call(600, US)  # spends a few cents, oldest lots first: some are gone
    assert len(x.s.lots) < MAX_LOTS
    assert x.fund("0.01", lot="fits-again").rejection is None


def test_a_result_for_a_request_the_rater_never_made_claims_no_id_and_the_true_one_lands() -> None:
    # review finding: a result naming t1/recharge/1 before the rater asked for it took
    # the id; the processor's true result for the request was then an id_conflict
    x = Tenant()
    x.fund("1.00")
    for rid in ("t1/recharge/1", "t1/recharge/01", "t1/recharge/x", "t1/recharge/", "t1/recharge/1/2"):
        early = x.result(rid, "succeeded", "10.00")
        assert early.rejection is not None
        assert (early.rejection.reason, x.balance) == ("unknown_request", 100)
        assert x.result(rid, "failed", "10.00").rejection.reason == "unknown_request"  # type: ignore[union-attr]
    (request,) = events(x.auto_recharge("5.00", "10.00"), "recharge_request")
    assert request["request_id"] == "t1/recharge/1"
    landed = x.result("t1/recharge/1", "succeeded", "10.00")
    assert landed.rejection is None
    assert x.balance == 1_100
    assert x.result("t2/recharge/1", "succeeded", "1.00").rejection is None  # another tenant's form: a plain id
