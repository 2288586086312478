"""The core beside the reference model on random sequences of commands, CDRs, recharge
results and time steps (hypothesis ``RuleBasedStateMachine``). After every step: the
core's invariants hold and both agree on every balance, lot, pool, outcome and request."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from rater.core import usage
from rater.core.deadlines import next_due
from rater.core.engine import apply, next_deadline, on_time
from rater.core.inputs import (
    AutoRechargeConfigured,
    Cdr,
    FundsAdded,
    Input,
    LicensesAssigned,
    RechargeResult,
    TenantUpserted,
    UserRemoved,
)
from rater.core.money import format_decimal, parse_decimal
from rater.core.pools import _pool_size_s
from rater.core.state import TenantState, check_invariants
from rater.core.steps import Step
from rater.core.times import month_end_us, month_of

from .kit import CTX, GB, GB_MOBILE, IN, US, US_PREMIUM, US_TOLL_FREE, IdStore, t
from .reference import DAY, HOUR, Model

USERS = ("u1", "u2", "u3", "u4")
LOCATIONS = ("US", "GB", "DE", "IN", "CA")
CAPS = tuple(cap.id for cap in CTX.catalog.capabilities)
DESTINATIONS = (US, GB, GB_MOBILE, IN, US_PREMIUM, US_TOLL_FREE, "+33123456789", "911", "+81312345678",
                "+14165550100")
HOME = {"US": US, "GB": GB, "DE": "+4930123456", "IN": IN, "CA": "+14165550100"}
CALL_TYPES = ("user_out", "user_out_transfer", "user_in", "conf_out", "conf_in", "ucap_out", "ucap_in")
MINUTE = 60_000_000


class CoreBesideModel(RuleBasedStateMachine):
    state: TenantState
    model: Model

    @initialize(postpaid=st.booleans(), in_grace=st.booleans())
    def create(self, postpaid: bool, in_grace: bool) -> None:
        # created late in a month, or early in one: the month before is still in grace
        # then, and back-dated calls of it (and their repeats) arrive from the start
        self.now = t("2026-11-03T00:00:00Z" if in_grace else "2026-10-25T00:00:00Z")
        self.position = 0
        self.counter = 0
        self.sent: list[Cdr] = []
        self.requests: list[str] = []
        self.usage: dict[tuple[str, str], usage.Totals] = {}
        self.summed: dict[tuple[str, str], usage.Totals] = {}
        model_name = "postpaid_overage" if postpaid else "prepaid_credits"
        step = apply(None, TenantUpserted("t1", "create", "US", "USD", model_name, None), CTX, self.now, "p")
        assert step.state is not None
        self.state = step.state
        self.store = IdStore()
        self.model = Model(CTX, postpaid, self.now)

    def _send(self, inp: Input) -> Step:
        self.position += 1
        step = apply(self.state, inp, CTX, self.now, f"p/0/{self.position}")
        assert step.state is self.state
        for out in step.outputs:
            if out.payload["type"] == "recharge_request":
                self.requests.append(out.payload["request_id"])
        return step

    def _id(self) -> str:
        self.counter += 1
        return f"id{self.counter}"

    @rule(user=st.sampled_from(USERS), location=st.sampled_from(LOCATIONS),
          caps=st.lists(st.sampled_from(CAPS), max_size=3, unique=True))
    def license(self, user: str, location: str, caps: list[str]) -> None:
        assert self._send(LicensesAssigned("t1", self._id(), user, location, tuple(caps))).rejection is None
        self.model.license(user, location, tuple(caps))

    @rule(user=st.sampled_from(USERS))
    def remove(self, user: str) -> None:
        assert self._send(UserRemoved("t1", self._id(), user)).rejection is None
        self.model.remove(user)

    @rule(cents=st.integers(0, 3000), age_days=st.integers(0, 400))
    def fund(self, cents: int, age_days: int) -> None:
        purchased = self.now - age_days * DAY
        lot = self._id()
        assert self._send(FundsAdded("t1", lot, format_decimal(cents, 2), "USD", purchased)).rejection is None
        self.model.add_lot(lot, cents, purchased)

    @rule(enabled=st.booleans(), trigger=st.integers(0, 800), amount=st.integers(0, 3000))
    def configure(self, enabled: bool, trigger: int, amount: int) -> None:
        cmd = AutoRechargeConfigured("t1", self._id(), enabled, format_decimal(trigger, 2), format_decimal(amount, 2))
        assert self._send(cmd).rejection is None
        self.model.configure(enabled, trigger, amount)

    @precondition(lambda self: bool(self.requests))
    @rule(data=st.data(), succeeded=st.booleans(), cents=st.integers(0, 3000))
    def answer(self, data: st.DataObject, succeeded: bool, cents: int) -> None:
        request = data.draw(st.sampled_from(self.requests))
        self.requests.remove(request)
        status = "succeeded" if succeeded else "failed"
        result = RechargeResult("t1", request, status, format_decimal(cents, 2), "USD", "declined", self.now)
        assert self._send(result).rejection is None
        self.model.result(request, succeeded, cents, self.now)

    @rule(user=st.sampled_from((*USERS, "u9", None)), location=st.sampled_from(LOCATIONS),
          call_type=st.sampled_from(CALL_TYPES), toll_free=st.booleans(),
          destination=st.sampled_from(DESTINATIONS), seconds=st.one_of(st.integers(0, 400), st.integers(0, 40_000)),
          back_minutes=st.integers(0, 14 * 24 * 60))
    def call(self, user: str | None, location: str, call_type: str, toll_free: bool, destination: str,
             seconds: int, back_minutes: int) -> None:
        start = self.now - back_minutes * MINUTE
        number_type = "toll_free" if toll_free else "geographic"
        cdr = Cdr("t1", self._id(), "call", None, user, location, call_type, number_type, "+14155550100",
                  destination, start, start + seconds * 1_000_000, seconds)
        self._rate(cdr)

    @precondition(lambda self: bool(self.model.users))
    @rule(data=st.data(), seconds=st.integers(0, 9000), back_minutes=st.integers(0, 10 * 24 * 60),
          call_type=st.sampled_from(("user_out", "conf_out")), home=st.booleans())
    def licensed_call(self, data: st.DataObject, seconds: int, back_minutes: int, call_type: str, home: bool) -> None:
        """A licensed user calling home, or somewhere near: the calls that draw pools,
        often enough to matter."""
        user = data.draw(st.sampled_from(sorted(self.model.users)))
        location = self.model.users[user][0] or "US"
        destination = HOME[location] if home else data.draw(st.sampled_from((US_PREMIUM, GB, IN, "+81312345678")))
        start = self.now - back_minutes * MINUTE
        cdr = Cdr("t1", self._id(), "call", None, user, location, call_type, "geographic", "+14155550100",
                  destination, start, start + seconds * 1_000_000, seconds)
        self._rate(cdr)

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        self._rate(data.draw(st.sampled_from(self.sent)))

    def _rate(self, cdr: Cdr) -> None:
        step = self._send(cdr)
        content = (cdr.user_id, cdr.user_location, cdr.call_type, cdr.number_type, cdr.destination_number,
                   cdr.start_us, cdr.end_us, cdr.duration_s)
        expected = self.model.call(cdr.usage_id, content, cdr.user_id, cdr.user_location, cdr.call_type,
                                   cdr.number_type, cdr.destination_number, cdr.start_us, cdr.end_us,
                                   cdr.duration_s)
        got = step.rejection.reason if step.rejection else None
        assert got == expected.rejection, (got, expected, step.rejection)
        if got is None:
            self.now = max(self.now, cdr.end_us)
            self.sent.append(cdr)
            (rated,) = [o.payload for o in step.outputs if o.stream == "rated-cdrs"]
            assert rated["status"] == expected.status, (rated, expected)
            assert sum(p["seconds"] for p in rated["pool_usage"]) == expected.pool_seconds, (rated, expected)
            assert (rated["charge"], rated["uncollected"]) == (
                format_decimal(expected.charge, 2), format_decimal(expected.uncollected, 2)), (rated, expected)
            self._count_usage(step, rated)

    def _count_usage(self, step: Step, rated: dict[str, Any]) -> None:
        """The core's usage deltas, folded like the shell folds them, are the sums of the
        month's rated CDRs (a duplicate adds nothing) by capability, scope and country."""
        if rated["status"] == "duplicate":
            assert step.usage is None, step.usage
            return
        assert step.usage is not None, rated
        at = (step.usage.month, step.usage.key)
        self.usage[at] = usage.add(self.usage.get(at), step.usage.counts)
        bucket = (rated["billing_month"], usage.bucket_key(rated["capability"], rated["scope"],
                                                           rated["destination_country"]))
        self.summed[bucket] = usage.add(self.summed.get(bucket), (
            1, rated["duration_seconds"], sum(p["seconds"] for p in rated["pool_usage"]), rated["credit_seconds"],
            rated["charged_seconds"], parse_decimal(rated["charge"], 2), parse_decimal(rated["uncollected"], 2)))
        assert self.usage == self.summed
        month = usage.fold({}, [usage.UsageDelta(*b, c) for b, c in self.usage.items() if b[0] == bucket[0]])
        report = usage.usage_report(month, 2)
        calls = sum(c[0] for b, c in self.summed.items() if b[0] == bucket[0])
        assert report["totals"]["calls"] == calls == sum(row["calls"] for row in report["usage"])

    @rule(step=st.sampled_from((MINUTE, HOUR, DAY, 7 * DAY, 30 * DAY, 200 * DAY)), times=st.integers(1, 3))
    def time_passes(self, step: int, times: int) -> None:
        self.now += step * times
        self._tick()

    def _tick(self) -> None:
        due = next_deadline(self.state, CTX)
        outputs = on_time(self.state, CTX, self.now).outputs
        self.model.advance(self.now)
        # next_deadline is exact: work happens when (and only when) a deadline is due
        assert bool(outputs) == (due is not None and due <= self.now), (due, self.now, outputs)

    @rule(hours=st.integers(0, 72))
    def month_turns(self, hours: int) -> None:
        """Time passes just beyond the next month's start: months close often, and CDRs
        of the closed month arrive within (and after) its grace period."""
        self.now = month_end_us(month_of(self.now)) + hours * HOUR
        self._tick()

    @rule()
    def restart(self) -> None:
        """The shell saves the state and a (new) worker loads it: nothing may be lost."""
        self.state = self.store.save_and_load(self.state)

    @invariant()
    def agrees_with_the_model(self) -> None:
        if not hasattr(self, "state"):
            return
        state, model = self.state, self.model
        check_invariants(state)
        assert state.due_us <= next_due(state, CTX), "a deadline hides behind due_us"
        for key, size in state.sizes.items():  # the size cache never goes stale
            assert size == _pool_size_s(state, CTX, key), key
        due = next_deadline(state, CTX)
        assert due is None or due > state.now_us, "work left undone"
        assert state.balance_minor == model.balance
        assert {lot.lot_id: lot.remaining_minor for lot in state.lots} == {
            lot.lot_id: lot.remaining for lot in model.lots}
        assert (state.funded_minor, state.debited_minor, state.expired_minor) == (
            model.funded, model.debited, model.expired)
        assert state.auto_recharge.pending_request_id == model.pending
        # the counts are kept, not recounted: after a restart the users are records the
        # core cannot list, so they are checked against the model's users here
        held: dict[tuple[str, str], int] = {}
        for location, caps in model.users.values():
            for cap in caps:
                held[(cap, location)] = held.get((cap, location), 0) + 1
        assert state.licences == held, "licence counts drifted from the users"
        kept = {state.open_month, *state.frozen}
        remembered = {key.split("/")[1] for key in self.store.everything(state) if key.startswith("u/")}
        assert remembered <= kept, f"usage ids of forgotten months {remembered - kept} are still kept"
        assert {k: u.used_s for k, u in state.pools.items() if u.used_s} == {
            k: used for k, used in model.used.items() if used and k[3] in kept}


CoreBesideModel.TestCase.settings = settings(
    max_examples=500, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_core_beside_the_reference_model = CoreBesideModel.TestCase
