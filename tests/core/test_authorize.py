"""SPEC §3 authorize (issue 13): before a call, may it start and for how long — answered
by rating's own decisions, never a second set of rules, and reserving nothing.

Every answer here is checked against rating itself (:func:`agrees_with_rating`): a CDR
of exactly ``max_duration_s`` seconds, applied with ``apply`` to a copy of the state, is
fully paid, and one a second longer is not, for the reason ``limited_by`` gives."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rater.core.authorize import CALL_TYPES as CALL_TYPES_OF_CDRS
from rater.core.authorize import MAX_CALL_S, NUMBER_TYPES, Authorization, AuthorizeRequest, authorize
from rater.core.context import US_PER_DAY, RatingContext
from rater.core.engine import apply
from rater.core.inputs import Cdr
from rater.core.state import IdMemory, TenantState, User, UserDirectory
from rater.core.times import US_PER_S, format_time_us
from rater.resources import data_dir

from .kit import CTX, GB, GB_MOBILE, IN, US, US_PREMIUM, US_TOLL_FREE, Tenant, rated, t

FR = "+33123456789"  # a country with no rate in the kit's tariff
JP = "+81312345678"
CAPS = tuple(cap.id for cap in CTX.catalog.capabilities)
CALL_TYPES = ("user_out", "user_out_forwarding", "user_in", "conf_out", "conf_in", "ucap_out", "ucap_in")




def encoded(state: TenantState) -> tuple[bytes, bytes, bytes]:
    """Everything the shell would store of a tenant: its state, its users, its ids."""
    users = state.users.everyone() or {}
    return (orjson.dumps(state.to_dict()),
            orjson.dumps(sorted((uid, u.usage_location, u.capabilities) for uid, u in users.items())),
            orjson.dumps(sorted(state.ids.recent.items())))


def copy_of(state: TenantState) -> TenantState:
    users = UserDirectory()
    for uid, user in (state.users.everyone() or {}).items():
        users.put(uid, User(user.usage_location, user.capabilities))
    ids = IdMemory()
    ids.recent = dict(state.ids.recent)
    return TenantState.from_dict(orjson.loads(orjson.dumps(state.to_dict())), ids, users)


def rate(state: TenantState | None, request: AuthorizeRequest, ctx: RatingContext, now_us: int,
         seconds: int) -> tuple[bool, str | None]:
    """Whether rating fully pays a CDR of the request's call lasting ``seconds`` (on a copy
    of the state), and the reason it gives: (paid, reason)."""
    cdr = Cdr(request.tenant_id, "authorize-check", "call", None, request.user_id, request.user_location,
              request.call_type, request.number_type, "+14155550100", request.destination, request.start_us,
              request.start_us + seconds * US_PER_S, seconds)
    step = apply(None if state is None else copy_of(state), cdr, ctx, now_us, "cdrs/0/1")
    if step.rejection is not None:
        return False, step.rejection.reason
    out = rated(step)
    return out["status"] == "rated" and Decimal(out["uncollected"]) == 0, out["reason"]


def agrees_with_rating(state: TenantState | None, request: AuthorizeRequest, ctx: RatingContext, now_us: int,
                       answer: Authorization) -> None:
    if not answer.allowed:
        assert answer.max_duration_s is None
        assert rate(state, request, ctx, now_us, 1) == (False, answer.reason), answer
        return
    paid, reason = rate(state, request, ctx, now_us, 1)
    assert (paid, reason) == (True, answer.reason), answer
    if answer.max_duration_s is None:
        assert answer.limited_by is None
        assert rate(state, request, ctx, now_us, MAX_CALL_S)[0], answer
        return
    most = answer.max_duration_s
    assert 1 <= most < MAX_CALL_S
    assert rate(state, request, ctx, now_us, most)[0], answer
    assert rate(state, request, ctx, now_us, most + 1) == (False, answer.limited_by), answer


def ask(x: Tenant, destination: str = US, *, call_type: str = "user_out", user: str | None = "u1",
        location: str = "US", number_type: str = "geographic", start: str | None = None,
        checked: bool = True) -> Authorization:
    """Authorize a call of tenant ``x`` at its "now" and (``checked``) check the answer
    against rating (:func:`agrees_with_rating`)."""
    start_us = x.now_us if start is None else t(start)
    request = AuthorizeRequest(x.tenant_id, user, call_type, number_type, destination, location, start_us)
    answer = authorize(x.state, request, x.ctx, x.now_us)
    if checked:
        agrees_with_rating(x.state, request, x.ctx, x.now_us, answer)
    return answer


def _payg(**kw: object) -> Tenant:
    x = Tenant(**kw)  # type: ignore[arg-type]
    x.license("u1", "US", "PAYG")
    return x


# --- what is free ---------------------------------------------------------------------------


def test_3_an_inbound_call_to_a_geographic_number_is_free_and_nothing_limits_it() -> None:
    x = Tenant()
    answer = ask(x, GB, call_type="user_in", user=None)
    assert (answer.allowed, answer.reason, answer.max_duration_s, answer.pools, answer.credits) == (
        True, None, None, (), None)


def test_3_an_inbound_call_to_a_toll_free_number_is_paid_from_credits_without_a_licence() -> None:
    x = Tenant()
    x.fund("0.30")  # 0.03 a minute, 60/60: ten minutes
    answer = ask(x, US_TOLL_FREE, call_type="user_in", user=None, number_type="toll_free")
    assert (answer.allowed, answer.max_duration_s, answer.limited_by) == (True, 600, "no_funds")
    assert answer.payload()["credits"] == {"paid_as": "MCOPSTNPP", "rate_per_min": "0.030000", "connection_fee": "0.00",
                                           "increment": "60/60", "tariff_version": "2026"}
    assert answer.payload()["balance"] == "0.30"


def test_3_an_emergency_call_is_allowed_with_no_limit_even_for_an_unknown_user() -> None:
    x = Tenant()
    for number in ("911", "+44999"):
        answer = ask(x, number, user="never-licensed")
        assert (answer.allowed, answer.reason, answer.max_duration_s) == (True, "emergency", None)


def test_3_a_post_paid_tenant_is_never_limited_by_money_only_by_licences() -> None:
    x = Tenant(model="postpaid_overage")
    x.license("u1", "US", "MCOPSTN5", "PAYG")
    x.license("u2", "US", "MCOPSTN5")
    answer = ask(x)
    assert (answer.allowed, answer.max_duration_s) == (True, None)
    assert answer.credits is not None
    assert answer.credits.paid_as == "OVERAGE"
    assert [(p.capability, p.available_s) for p in answer.pools] == [("MCOPSTN5", 14400)]
    pools_only = ask(x, user="u2")  # nothing pays after the pool: no licence
    assert (pools_only.max_duration_s, pools_only.limited_by, pools_only.credits) == (14400, "no_license", None)


# --- what may not start ---------------------------------------------------------------------


def test_3_a_user_whose_licences_cannot_pay_is_refused_no_license() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN5")
    x.fund("10.00")
    answer = ask(x, GB)  # international: no pool of MCOPSTN5, no credits licence
    assert (answer.allowed, answer.reason, answer.max_duration_s, answer.credits) == (
        False, "no_license", None, None)


def test_3_a_call_credits_may_pay_finding_no_balance_is_refused_no_funds() -> None:
    x = _payg()
    answer = ask(x)
    assert (answer.allowed, answer.reason, answer.balance_minor) == (False, "no_funds", 0)
    x.fund("0.04")  # GB: 30/6 at 0.02 plus a 0.05 connection fee, more than the balance
    assert ask(x, GB).reason == "no_funds"


def test_3_unknown_tenant_and_unknown_user_are_the_dead_letter_reasons() -> None:
    x = Tenant()
    request = AuthorizeRequest("nobody", "u1", "user_out", "geographic", US, "US", x.now_us)
    answer = authorize(None, request, CTX, x.now_us)
    assert (answer.allowed, answer.reason, answer.balance_minor, answer.currency) == (
        False, "unknown_tenant", None, None)
    agrees_with_rating(None, request, CTX, x.now_us, answer)
    assert ask(x, user="u9").reason == "unknown_user"
    assert ask(x, call_type="conf_out", user=None).reason == (
        "unknown_user")


def test_3_no_rate_and_currency_mismatch_refuse_only_the_part_no_pool_covers() -> None:
    x = _payg()
    x.fund("10.00")
    assert ask(x, FR).reason == "no_rate"
    x.license("u2", "US", "MCOPSTN2")  # 600 international minutes cover France without a rate
    answer = ask(x, FR, user="u2")
    assert (answer.allowed, answer.max_duration_s, answer.limited_by) == (True, 36000, "no_license")
    x.license("u2", "US", "MCOPSTN2", "MCOPSTNPP")
    assert ask(x, FR, user="u2").limited_by == "no_rate"
    y = _payg(tenant_id="yen", currency="JPY")
    y.fund("1000")
    assert ask(y, GB).reason == "currency_mismatch"
    assert ask(y, JP).max_duration_s == 20009  # 3 yen a minute, 1/1: 20009 s cost 1000.45, 1000 yen


def test_3_a_call_of_a_month_past_its_grace_is_late_and_a_long_one_is_limited_by_it() -> None:
    x = _payg(now="2026-12-08T00:00:00Z")
    assert ask(x, start="2026-11-30T23:30:00Z").reason == "late"
    # With the default grace (7 days) and the longest call (7 days) a call that starts
    # before its month's grace ends is never limited by it; with a grace of 1 day it is.
    y = _payg(now="2026-12-01T20:00:00Z", ctx=dataclasses.replace(CTX, grace_us=US_PER_DAY))
    y.fund("200.00", at="2026-12-01T00:00:00Z")
    answer = ask(y, start="2026-11-30T23:30:00Z")  # November's grace ends 2026-12-02T00:00
    assert (answer.max_duration_s, answer.limited_by) == (86400 + 1800 - 1, "late")


def test_3_a_start_more_than_a_day_ahead_is_future_and_a_bad_destination_is_schema() -> None:
    x = _payg()
    x.fund("1.00")
    assert ask(x, start="2026-11-02T00:00:01Z", checked=False).reason == "future"
    assert ask(x, start="2026-11-02T00:00:00Z").allowed
    assert ask(x, "12345").reason == "schema"
    assert ask(x, call_type="user_sideways", checked=False).reason == "schema"


# --- what pays, in which order ----------------------------------------------------------------


def test_3_pools_pay_first_in_drawing_order_then_credits_until_the_balance_runs_out() -> None:
    x = Tenant()
    x.license("u1", "US", "MCOPSTN6", "MCOPSTN5", "MCOPSTNPP")
    x.call(7000, US)  # MCOPSTN5 comes first in the catalog: 200 s left of it
    x.fund("0.05")  # 0.01 a minute, 60/60: five minutes
    answer = ask(x)
    assert answer.payload()["pools"] == [
        {"capability": "MCOPSTN5", "location": "US", "scope": "domestic", "month": "2026-11", "available_seconds": 200},
        {"capability": "MCOPSTN6", "location": "US", "scope": "domestic", "month": "2026-11",
         "available_seconds": 14400},
    ]
    assert (answer.max_duration_s, answer.limited_by) == (200 + 14400 + 300, "no_funds")
    assert answer.credits is not None
    assert (answer.credits.rate_micro_per_min, answer.credits.first_s, answer.credits.next_s) == (10_000, 60, 60)


def test_3_increments_and_the_connection_fee_count_in_the_longest_call() -> None:
    x = _payg()
    x.fund("0.10")  # GB: 0.05 fee, then 0.02 a minute 30/6: 162 s cost 0.054, rounded 0.05; 168 s 0.056
    answer = ask(x, GB)
    assert (answer.max_duration_s, answer.limited_by) == (162, "no_funds")
    assert answer.payload()["credits"]["connection_fee"] == "0.05"


def test_3_a_lot_that_expires_during_the_call_limits_it() -> None:
    x = _payg(now="2026-11-10T09:00:00Z")
    x.fund("1.00", at="2025-11-10T10:30:00Z")  # expires 2026-11-10T10:30, half an hour into the call
    answer = ask(x, start="2026-11-10T10:00:00Z")
    assert (answer.balance_minor, answer.max_duration_s, answer.limited_by) == (100, 1799, "no_funds")


def test_3_a_tenant_created_in_a_month_has_no_pools_for_the_month_before() -> None:
    x = Tenant(now="2026-11-03T00:00:00Z")
    x.license("u1", "US", "MCOPSTN1", "MCOPSTNPP")
    x.fund("1.00", at="2026-11-03T00:00:00Z")
    october = ask(x, start="2026-10-31T10:00:00Z")
    assert (october.billing_month, october.pools, october.max_duration_s) == ("2026-10", (), 6000)
    november = ask(x, start="2026-11-03T10:00:00Z")
    assert [p.available_s for p in november.pools] == [180000]
    assert november.max_duration_s == 186000


# --- it reserves nothing -------------------------------------------------------------------------


def test_3_authorize_changes_nothing_and_reserves_nothing() -> None:
    x = _payg()
    x.fund("0.05")
    before = encoded(x.s)
    first, second = ask(x), ask(x)
    assert encoded(x.s) == before
    assert first == second
    assert first.max_duration_s == 300
    # two calls authorized at once for the whole balance: the second one shows the overrun
    assert rated(x.call(300, US))["status"] == "rated"
    out = rated(x.call(300, US))
    assert (out["status"], out["reason"], out["uncollected"]) == ("partially_funded", "no_funds", "0.05")


def test_3_requests_take_what_a_cdr_may_carry_and_the_longest_call_is_the_longest_the_wire_accepts() -> None:
    cdr = orjson.loads((data_dir("schemas") / "common.json").read_bytes())["$defs"]["cdr_fields"]["properties"]
    assert cdr["duration_seconds"]["maximum"] == MAX_CALL_S
    assert set(cdr["call_type"]["enum"]) == CALL_TYPES_OF_CDRS
    assert set(cdr["number_type"]["enum"]) == NUMBER_TYPES


# --- every answer, on random tenants ------------------------------------------------------------

_HOUR_US = 3600 * US_PER_S
_YEAR_H = 365 * 24
_lots = st.lists(st.tuples(st.integers(0, 3000),  # minor units, hours before "now" they were bought:
                           st.one_of(st.integers(0, 400 * 24), st.integers(_YEAR_H - 72, _YEAR_H))),  # some expire soon
                 max_size=4)
_calls = st.lists(st.tuples(st.integers(0, 2), st.sampled_from((US, GB, IN, US_TOLL_FREE, GB_MOBILE)),
                            st.one_of(st.integers(0, 600), st.integers(0, 200_000)),
                            st.sampled_from(("user_out", "user_out", "conf_out", "ucap_out"))), max_size=4)
_capabilities = st.builds(
    lambda plan, credits, more: tuple(dict.fromkeys(c for c in (plan, credits, *more) if c is not None)),
    st.sampled_from((None, "MCOPSTN1", "MCOPSTN5", "MCOPSTN6", "MCOPSTN2", "MCOMEETADD")),
    st.sampled_from((None, "MCOPSTNPP", "MCOPSTNPP", "PAYG", "MCOMEETACPEA")),
    st.lists(st.sampled_from(CAPS), max_size=1))
_destinations = st.one_of(st.sampled_from((US, US, GB, GB, GB_MOBILE, IN, JP, "+14165550100")),
                          st.sampled_from((US_TOLL_FREE, US_PREMIUM, FR, "911", "+44999", "12345")))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(currency=st.sampled_from(("USD", "USD", "USD", "JPY", "BHD")), postpaid=st.booleans(),
       now=st.sampled_from(("2026-11-03T00:00:00Z", "2026-11-20T12:00:00Z", "2026-12-07T20:00:00Z",
                            "2026-12-09T00:00:00Z", "2026-12-31T23:00:00Z")),
       licences=st.lists(st.tuples(st.sampled_from(("US", "GB", "DE", "IN")), _capabilities), min_size=1, max_size=3),
       lots=_lots, calls=_calls, data=st.data())
def test_3_every_answer_is_what_rating_then_does(
        currency: str, postpaid: bool, now: str, licences: list[tuple[str, tuple[str, ...]]],
        lots: list[tuple[int, int]], calls: list[tuple[int, str, int, str]], data: st.DataObject) -> None:
    x = Tenant(currency=currency, model="postpaid_overage" if postpaid else "prepaid_credits", now=now)
    for n, (where, caps) in enumerate(licences):
        x.license(f"u{n}", where, *caps)
    exponent = x.s.exponent
    for minor, hours_ago in lots:
        amount = f"{minor // 10**exponent}.{minor % 10**exponent:0{exponent}d}" if exponent else str(minor)
        x.fund(amount, at=_before(x.now_us, hours_ago * _HOUR_US))
    for who, number, seconds, kind in calls:  # pools partly used, balances partly spent
        x.call(seconds, number, call_type=kind, user=f"u{who % len(licences)}",
               location=licences[who % len(licences)][0], start=_before(x.now_us, seconds * US_PER_S + _HOUR_US))
    who = data.draw(st.integers(0, len(licences) + 1), label="user")
    user = f"u{who}" if who < len(licences) else data.draw(st.sampled_from(("u9", None)), label="stranger")
    home = licences[who][0] if who < len(licences) else "US"
    request = AuthorizeRequest(
        x.tenant_id, user,
        data.draw(st.sampled_from(("user_out", "user_out", "user_out_forwarding", "conf_out", "ucap_out", "user_in",
                                   "conf_in", "ucap_in")), label="call_type"),
        data.draw(st.sampled_from(("geographic", "toll_free")), label="number_type"),
        data.draw(_destinations, label="destination"),
        data.draw(st.sampled_from((home, home, "US", "GB", "IN")), label="user_location"),
        x.now_us - (data.draw(st.sampled_from((0, 0, 0, 1, 3, 6, 10)), label="days_ago") * 86400
                    + data.draw(st.integers(-3600, 3600), label="seconds_ago")) * US_PER_S)
    before = encoded(x.s)
    answer = authorize(x.state, request, CTX, x.now_us)
    assert encoded(x.s) == before  # authorize changed nothing
    agrees_with_rating(x.state, request, x.ctx, x.now_us, answer)
    if answer.allowed:  # monotonic: every shorter call is paid, every longer one is not
        most = MAX_CALL_S if answer.max_duration_s is None else answer.max_duration_s
        shorter = data.draw(st.integers(1, most), label="shorter")
        assert rate(x.state, request, x.ctx, x.now_us, shorter)[0]
        if most < MAX_CALL_S:
            longer = data.draw(st.integers(most + 1, MAX_CALL_S), label="longer")
            assert not rate(x.state, request, x.ctx, x.now_us, longer)[0]
    event(f"{answer.reason or 'allowed'}, limited by {answer.limited_by}, pools {len(answer.pools)},"
          f" credits {answer.credits is not None}")


def _before(now_us: int, back_us: int) -> str:
    return format_time_us(now_us - back_us)
