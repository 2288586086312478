"""A small, hand-built catalog and tariff (numbers easy to check by hand) and a driver
that feeds one tenant through the core, checking the invariants after every step."""

from __future__ import annotations

from typing import Any

import orjson

from rater.core.context import RatingContext
from rater.core.countries import CountryPrefixes
from rater.core.engine import apply, balance_event, on_time
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
from rater.core.plans import Allotment, Capability, Catalog
from rater.core.pools import pool_report
from rater.core.state import IdMemory, TenantState, User, UserDirectory, check_invariants, usage_key
from rater.core.steps import Step
from rater.core.tariff import Rate, Tariff, Tariffs
from rater.core.times import parse_time_us
from rater.schemas import first_error

DOMESTIC = {"US": 3000, "CA": 3000, "PR": 3000, "GB": 1200, "DE": 1200}
CATALOG = Catalog(
    "test-1",
    (
        Capability("MCOPSTN1", "Domestic calling plan", (Allotment("domestic", DOMESTIC),)),
        Capability("MCOPSTN5", "Domestic calling plan, 120 min", (Allotment("domestic", {"*": 120}),)),
        Capability("MCOPSTN6", "Domestic calling plan, 240 min", (Allotment("domestic", {"*": 240}),)),
        Capability("MCOPSTN2", "Domestic and international calling plan",
                   (Allotment("domestic", DOMESTIC), Allotment("international", {"*": 600}))),
        Capability("PAYG", "Pay-as-you-go calling plan", (), frozenset({"user_out"})),
        Capability("MCOMEETADD", "Audio Conferencing", (Allotment("zone_a", {"*": 60}),)),
        Capability("MCOMEETACPEA", "Pay-per-minute Audio Conferencing", (), frozenset({"conf_out"})),
        Capability("MCOPSTNPP", "Communications Credits", (), frozenset({"user_out", "conf_out"})),
    ),
    zone_a=frozenset({"US", "CA", "PR", "GB", "DE", "JP"}),
    premium_prefixes=frozenset({"1900", "449"}),
    emergency=frozenset({"911", "112", "999", "+1911", "+44999", "+44112"}),
)


def _r(rate: str, increment: str = "60/60", fee: int = 0) -> Rate:
    whole, _, frac = rate.partition(".")
    first, nxt = increment.split("/")
    return Rate(int(whole) * 1_000_000 + int(frac.ljust(6, "0")), int(first), int(nxt), fee)


V2026 = Tariff("2026", parse_time_us("2026-01-01T00:00:00Z"), {
    ("USD", "outbound"): {
        "1": _r("0.01"), "1900": _r("1.00"), "44": _r("0.02", "30/6", fee=5), "447": _r("0.10", "1/1"),
        "49": _r("0.03"), "91": _r("0.05"), "81": _r("0.04"),
    },
    ("USD", "toll_free_inbound"): {"1800": _r("0.03"), "44800": _r("0.04")},
    ("USD", "conf_dialout"): {"1": _r("0.012"), "44": _r("0.024"), "91": _r("0.06")},
    ("JPY", "outbound"): {"1": _r("2"), "81": _r("3", "1/1")},
    ("BHD", "outbound"): {"1": _r("0.0035", "1/1")},
})
V2027 = Tariff("2027", parse_time_us("2027-01-01T00:00:00Z"), {
    **V2026.rates, ("USD", "outbound"): {**V2026.rates[("USD", "outbound")], "1": _r("0.02")},
})
COUNTRIES = CountryPrefixes.of({"1": "US", "1416": "CA", "1787": "PR", "44": "GB", "49": "DE", "91": "IN",
                                "81": "JP", "33": "FR"})
CTX = RatingContext(Tariffs((V2026, V2027)), CATALOG, {"USD": 2, "JPY": 0, "BHD": 3, "EUR": 2, "CLF": 4}, COUNTRIES)

US = "+12125550123"
GB = "+442071838750"
GB_MOBILE = "+447700900123"
IN = "+911123456789"
US_TOLL_FREE = "+18005550100"
US_PREMIUM = "+19005550100"


def t(text: str) -> int:
    return parse_time_us(text)


class Tenant:
    """Drives one tenant through the core like the shell would, at a settable "now"."""

    def __init__(self, tenant_id: str = "t1", *, currency: str = "USD", model: str = "prepaid_credits",
                 threshold: str | None = None, now: str = "2026-11-01T00:00:00Z", ctx: RatingContext = CTX) -> None:
        self.tenant_id = tenant_id
        self.currency = currency
        self.ctx = ctx
        self.now_us = t(now)
        self.topic, self.partition, self.position = "cdrs", 0, 0
        self.state: TenantState | None = None
        self.seq = 0
        step = self.send(TenantUpserted(tenant_id, "create", "US", currency, model, threshold))
        assert step.rejection is None, step.rejection

    @property
    def s(self) -> TenantState:
        assert self.state is not None
        return self.state

    def _id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}{self.seq}"

    def send(self, inp: Input) -> Step:
        self.position += 1
        step = apply(self.state, inp, self.ctx, self.now_us, f"{self.topic}/{self.partition}/{self.position}")
        self._check(step)
        if isinstance(inp, Cdr) and step.rejection is None:
            self.now_us = max(self.now_us, inp.end_us)
        return step

    def at(self, when: str) -> Step:
        """Time passes to ``when`` (a tick): run the due work."""
        self.now_us = max(self.now_us, t(when))
        step = on_time(self.s, self.ctx, self.now_us)
        self._check(step)
        return step

    def _check(self, step: Step) -> None:
        if step.state is not None and step.balance_cause is not None:
            # the shell's batch of one: the balance snapshot follows the step's events
            step.outputs.append(balance_event(step.state, self.ctx, step.now_us, step.balance_cause))
        if step.state is not None:
            check_invariants(step.state)
            self.state = step.state
        for out in step.outputs:
            error = first_error(out.payload["type"], out.payload)
            assert error is None, f"{out.payload['type']} breaks its schema: {error}\n{out.payload}"

    # -- commands ------------------------------------------------------------------------
    def license(self, user: str, location: str, *caps: str) -> Step:
        return self.send(LicensesAssigned(self.tenant_id, self._id("lic"), user, location, caps))

    def remove(self, user: str) -> Step:
        return self.send(UserRemoved(self.tenant_id, self._id("rm"), user))

    def fund(self, amount: str, at: str = "2026-11-01T00:00:00Z", lot: str | None = None,
             currency: str | None = None) -> Step:
        return self.send(FundsAdded(self.tenant_id, lot or self._id("lot"), amount, currency or self.currency, t(at)))

    def auto_recharge(self, trigger: str, amount: str, *, enabled: bool = True) -> Step:
        return self.send(AutoRechargeConfigured(self.tenant_id, self._id("ar"), enabled, trigger, amount))

    def result(self, request_id: str, status: str, amount: str, *, reason: str | None = None,
               at: str = "2026-11-10T12:00:00Z", currency: str | None = None) -> Step:
        return self.send(RechargeResult(self.tenant_id, request_id, status, amount, currency or self.currency,
                                        reason, t(at)))

    def call(self, seconds: int, destination: str = US, *, call_type: str = "user_out", user: str | None = "u1",
             location: str = "US", number_type: str = "geographic", start: str = "2026-11-10T10:00:00Z",
             usage_id: str | None = None) -> Step:
        begin = t(start)
        return self.send(Cdr(self.tenant_id, usage_id or self._id("call"), "call", None, user, location, call_type,
                             number_type, "+14155550100", destination, begin, begin + seconds * 1_000_000, seconds))

    @property
    def balance(self) -> int:
        return self.s.balance_minor


class IdStore:
    """What the shell keeps of a tenant's ids and users: each drain's new ids, minus the
    months the memory forgot, and each drain's changed users — so a state saved and
    loaded through it behaves like the worker's (ids and users read through readers)."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self.users: dict[str, User] = {}

    def save_and_load(self, state: TenantState) -> TenantState:
        fresh, forgotten = state.ids.drain()
        self.ids.update(fresh)
        for month in forgotten:
            prefix = usage_key(month, "")
            for key in [key for key in self.ids if key.startswith(prefix)]:
                del self.ids[key]
        self.users.update(state.users.drain())
        return TenantState.from_dict(orjson.loads(orjson.dumps(state.to_dict())), IdMemory(self.ids.get),
                                     UserDirectory(self.users.get))

    def everything(self, state: TenantState) -> dict[str, str]:
        """Every id the tenant remembers: stored (less the months forgotten since the
        last save), and new since the last save."""
        gone = tuple(usage_key(month, "") for month in state.ids.forgotten)
        return {**{k: v for k, v in self.ids.items() if not k.startswith(gone)}, **state.ids.recent}


def rated(step: Step) -> dict[str, Any]:
    """The step's one rated CDR."""
    found = [out.payload for out in step.outputs if out.stream == "rated-cdrs"]
    assert len(found) == 1, (step.rejection, [o.payload["type"] for o in step.outputs])
    return found[0]


def events(step: Step, kind: str) -> list[dict[str, Any]]:
    """The step's outputs of one event type."""
    return [out.payload for out in step.outputs if out.payload["type"] == kind]


def pools(tenant: Tenant) -> dict[tuple[str, str, str, str], tuple[int, int]]:
    """(capability, location, scope, month) → (size s, used s) as the balance event shows them."""
    return {(p["capability"], p["location"], p["scope"], p["month"]): (p["size_seconds"], p["used_seconds"])
            for p in pool_report(tenant.s, tenant.ctx)}
