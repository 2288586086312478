"""SPEC §1 scenarios end to end: a real broker, one real ``rater worker`` process, the
real topics. Each test is named after the SPEC rule it proves.

Expected amounts are computed here from the tariff file with ``decimal`` and pool sizes
from the catalog's numbers — never copied from the rater's output.

"Now" is per input partition (SPEC §1.6): the later of its latest tick and its latest
accepted CDR end, shared by every tenant on the partition. The tests that move time far
(late CDRs, a recharge back-off with a tick) therefore get partitions of their own: their
tenants' ids are drawn until the producer's partitioner (murmur2, as in
``tests/test_crash.py``) puts them there, and every other test keeps to the remaining
partitions and to early November 2026.
"""

from __future__ import annotations

import asyncio
import base64
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import murmur2

from rater.catalog import DEFAULT_CATALOG, DEFAULT_TARIFF
from tests.support import (
    TEST_PARTITIONS,
    Out,
    Worker,
    cdr,
    collect,
    event,
    fresh_worker,
    produce,
    send_events,
)

pytestmark = pytest.mark.kafka

CATALOG = tomllib.loads(DEFAULT_CATALOG.read_text())
TARIFF = tomllib.loads(DEFAULT_TARIFF.read_text())
CENT = Decimal("0.01")  # USD and AUD: 2 minor-unit digits (ISO 4217)

LATE_PARTITION = 3  # test 9 takes this partition's "now" into December
RECHARGE_PARTITION = 2  # test 7 ticks this one
SHARED_PARTITIONS = (0, 1)  # everything else: early November 2026, no ticks

NEW_YORK = "+12125550123"
LONDON = "+442071234567"
SYDNEY = "+61298765432"
PARIS = "+33123456789"
SAO_PAULO = "+551133334444"


# --- independent expectations ------------------------------------------------------------


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _text(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Price:
    """What the tariff says the credit part of a call costs (SPEC §1.3)."""

    billed_s: int
    fee: Decimal
    charge: Decimal


def price(call_class: str, seconds: int, destination: str, currency: str = "USD",
          start: str = "2026-11-02T10:00:00Z") -> Price:
    """The version in force at ``start``, the longest matching prefix, the increments,
    the connection fee once, one half-up rounding to the minor unit."""
    version = max((v for v in TARIFF["version"] if _time(str(v["effective_from"])) <= _time(start)),
                  key=lambda v: _time(str(v["effective_from"])))
    digits = destination.removeprefix("+")
    rate = max((r for r in version["rate"] if r["class"] == call_class and digits.startswith(r["prefix"])),
               key=lambda r: len(r["prefix"]))
    first, nxt = (int(x) for x in rate["increment"].split("/"))
    if seconds == 0:
        billed = 0
    elif seconds <= first:
        billed = first
    else:
        billed = first + -(-(seconds - first) // nxt) * nxt  # integer ceil
    fee = Decimal(rate.get("connection_fee", {}).get(currency, "0"))
    charge = (Decimal(rate["rate_per_min"][currency]) * billed / 60 + fee).quantize(CENT, rounding=ROUND_HALF_UP)
    return Price(billed, fee, charge)


def pool_seconds(capability: str, location: str, licences: int = 1) -> int:
    """A pool's size from the catalog: minutes per licence for the location × licences, in s."""
    [allotment] = next(c for c in CATALOG["capability"] if c["id"] == capability)["pools"]
    minutes = allotment["minutes"]
    table = CATALOG["minutes"][minutes] if isinstance(minutes, str) else minutes
    return int(table.get(location, table.get("*", 0))) * 60 * licences


def money(text: str) -> Decimal:
    return Decimal(text)


# --- the worker and one tenant's traffic -------------------------------------------------


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    started = fresh_worker(kafka_bootstrap, "scn", tmp_path_factory.mktemp("scenarios"))
    yield started
    started.stop()


def tenant_id(name: str, partitions: tuple[int, ...] = SHARED_PARTITIONS) -> str:
    """A fresh tenant id whose messages land on one of ``partitions``."""
    while True:
        candidate = f"{name}-{uuid.uuid4().hex[:8]}"
        if (murmur2(candidate.encode()) & 0x7FFFFFFF) % TEST_PARTITIONS in partitions:
            return candidate


Item = tuple[str, dict[str, Any]]


@dataclass
class Tenant:
    """One tenant's traffic through the module's worker."""

    worker: Worker
    id: str

    @property
    def lot1(self) -> str:
        return f"{self.id}-lot1"

    def uid(self, name: str) -> str:
        return f"{self.id}-{name}"

    def open(self, *, users: dict[str, tuple[str, list[str]]], funds: str | None = "10.00", currency: str = "USD",
             country: str = "US", billing_model: str = "prepaid_credits", extra: tuple[Item, ...] = ()) -> None:
        """tenant_upserted, licences, funds (lot ``{tenant}-lot1``) and ``extra``
        commands; returns once the last one shows in a balance snapshot."""
        t = self.id
        items: list[Item] = [("account-commands", event(
            "tenant_upserted", t, f"{t}-e1", command_id=f"{t}-c1", country=country, currency=currency,
            billing_model=billing_model))]
        for user, (location, capabilities) in users.items():
            items.append(("account-commands", event(
                "licenses_assigned", t, f"{t}-e-{user}", command_id=f"{t}-lic-{user}", user_id=user,
                usage_location=location, capabilities=capabilities)))
        if funds is not None:
            items.append(("account-commands", event(
                "funds_added", t, f"{t}-e-lot1", command_id=self.lot1, amount=funds, currency=currency,
                purchased_at="2026-11-01T00:00:00Z")))
        items.extend(extra)
        self.send(*items)
        last = items[-1][1]["command_id"]
        self.wait(self.has("balance", caused_by=last))

    def call(self, name: str, seconds: int, *, start: str = "2026-11-02T10:00:00Z", destination: str = NEW_YORK,
             **fields: Any) -> Item:
        """A CDR on ``cdrs`` whose end is its start + duration."""
        end = _text(_time(start) + timedelta(seconds=seconds))
        return "cdrs", cdr(self.id, self.uid(name), seconds, destination=destination, start=start, end=end, **fields)

    def send(self, *items: Item) -> None:
        send_events(self.worker.bootstrap, self.worker.prefix, list(items))

    def send_raw(self, messages: list[tuple[str, bytes | None, bytes | None]]) -> None:
        asyncio.run(produce(self.worker.bootstrap, self.worker.prefix, messages))

    def wait(self, *conditions: Callable[[list[Out]], bool]) -> list[Out]:
        """Every output so far, once all ``conditions`` hold. Each reading starts from the
        topics' beginning and topics are fetched independently, so whatever a test then
        asserts to be there must be among the conditions."""
        return collect(self.worker.bootstrap, self.worker.prefix, lambda outs: all(c(outs) for c in conditions),
                       self.worker, timeout_s=60)

    def has(self, kind: str, count: int = 1, **fields: Any) -> Callable[[list[Out]], bool]:
        return lambda outs: len(self.events(outs, kind, **fields)) >= count

    def events(self, outs: list[Out], kind: str, **fields: Any) -> list[dict[str, Any]]:
        """This tenant's output events of ``kind`` with the given field values, in order."""
        return [o.event for o in outs if o.event["type"] == kind and o.event.get("tenant_id") == self.id
                and all(o.event.get(k) == v for k, v in fields.items())]

    def rated(self, outs: list[Out], name: str) -> dict[str, Any]:
        """The one rated CDR of call ``name``."""
        [found] = self.events(outs, "rated_cdr", usage_id=self.uid(name))
        return found

    def all_rated(self, *names: str) -> Callable[[list[Out]], bool]:
        def done(outs: list[Out]) -> bool:
            return all(self.events(outs, "rated_cdr", usage_id=self.uid(n)) for n in names)
        return done

    def balance(self, outs: list[Out], cause: str) -> dict[str, Any]:
        """The last balance snapshot caused by input ``cause`` (a usage or command id)."""
        return self.events(outs, "balance", caused_by=cause)[-1]


def pool(snapshot: dict[str, Any], capability: str, location: str, scope: str, month: str) -> dict[str, Any]:
    [found] = [p for p in snapshot["pools"] if (p["capability"], p["location"], p["scope"], p["month"])
               == (capability, location, scope, month)]
    return found


def assert_credits_paid(rated: dict[str, Any], expected: Price, seconds: int) -> None:
    """A call (part) of ``seconds`` paid from credits as the tariff says."""
    assert rated["credit_seconds"] == seconds
    assert rated["charged_seconds"] == expected.billed_s
    assert money(rated["connection_fee"]) == expected.fee
    assert money(rated["charge"]) == expected.charge


# --- §1.2 which call is paid by what -----------------------------------------------------


def test_1_2_6_a_call_beyond_the_pool_is_split_between_pool_and_credits(worker: Worker) -> None:
    """MCOPSTN5's 120 min in AU: a call longer than what is left takes the pool's last
    seconds and pays the rest from credits (increments 30/6 and the connection fee on
    the credit part only, once); the pool is exhausted once; then calls go to credits."""
    t = Tenant(worker, tenant_id("split"))
    t.open(currency="AUD", country="AU", funds="20.00", users={
        "alice": ("AU", ["MCOPSTN5", "MCOPSTNPP"]),
        "bob": ("GB", ["MCOPSTN5"]),  # his own pool: keyed by location
    })
    au_pool = pool_seconds("MCOPSTN5", "AU")
    gb_pool = pool_seconds("MCOPSTN5", "GB")
    assert au_pool == gb_pool == 120 * 60
    left = 200
    au = {"destination": SYDNEY, "user_location": "AU"}
    t.send(
        t.call("a", au_pool - left, **au),
        t.call("b", 450, start="2026-11-02T12:00:00Z", **au),
        t.call("c", 45, start="2026-11-02T12:30:00Z", **au),
        t.call("d", gb_pool, start="2026-11-02T13:00:00Z", destination=LONDON, user_id="bob", user_location="GB"),
    )
    # bob's exhaustion is the last notification: any second AU one (from c) precedes it
    outs = t.wait(t.all_rated("a", "b", "c", "d"), t.has("pool_exhausted", location="GB"),
                  t.has("balance", caused_by=t.uid("d")))

    a = t.rated(outs, "a")
    assert (a["status"], a["reason"], a["billing_month"], a["currency"]) == ("rated", None, "2026-11", "AUD")
    assert (a["destination_country"], a["scope"]) == ("AU", "domestic")
    assert a["pool_usage"] == [{"capability": "MCOPSTN5", "location": "AU", "scope": "domestic",
                                "seconds": au_pool - left}]
    assert (a["credit_seconds"], a["charged_seconds"], a["charge"], a["connection_fee"]) == (0, 0, "0.00", "0.00")
    assert (a["capability"], a["lot_debits"], a["balance_after"]) == ("MCOPSTN5", [], "20.00")

    b = t.rated(outs, "b")
    b_price = price("outbound", 450 - left, SYDNEY, "AUD", start="2026-11-02T12:00:00Z")
    assert b_price.billed_s == 30 + 222  # 30/6 on the 250 credit seconds, not on the call's 450
    assert b["status"] == "rated"
    assert b["pool_usage"] == [{"capability": "MCOPSTN5", "location": "AU", "scope": "domestic", "seconds": left}]
    assert_credits_paid(b, b_price, 450 - left)
    assert b["capability"] == "MCOPSTNPP"  # 250 s from credits > 200 s from the pool
    assert b["lot_debits"] == [{"lot_id": t.lot1, "amount": b["charge"]}]
    assert money(b["balance_after"]) == Decimal("20.00") - b_price.charge
    assert b["uncollected"] == "0.00"

    c = t.rated(outs, "c")
    c_price = price("outbound", 45, SYDNEY, "AUD", start="2026-11-02T12:30:00Z")
    assert c["pool_usage"] == []  # the pool is exhausted: everything from credits
    assert_credits_paid(c, c_price, 45)
    assert c["capability"] == "MCOPSTNPP"
    assert money(c["balance_after"]) == Decimal("20.00") - b_price.charge - c_price.charge

    d = t.rated(outs, "d")
    assert d["pool_usage"] == [{"capability": "MCOPSTN5", "location": "GB", "scope": "domestic", "seconds": gb_pool}]
    assert (d["charge"], d["credit_seconds"], d["capability"]) == ("0.00", 0, "MCOPSTN5")

    exhausted = [(e["capability"], e["location"], e["scope"], e["month"]) for e in t.events(outs, "pool_exhausted")]
    assert exhausted == [("MCOPSTN5", "AU", "domestic", "2026-11"), ("MCOPSTN5", "GB", "domestic", "2026-11")]

    snapshot = t.balance(outs, t.uid("d"))
    assert money(snapshot["balance"]) == Decimal("20.00") - b_price.charge - c_price.charge
    for location, size in (("AU", au_pool), ("GB", gb_pool)):
        reported = pool(snapshot, "MCOPSTN5", location, "domestic", "2026-11")
        assert (reported["size_seconds"], reported["used_seconds"], reported["available_seconds"]) == (size, size, 0)


def test_1_2_2_toll_free_inbound_is_paid_from_credits_at_the_numbers_country_rate(worker: Worker) -> None:
    """Inbound to the tenant's toll-free numbers: credits at the toll_free_inbound rate of
    the number's country, never a pool (alice's US domestic pool is untouched), no user
    licence needed; at zero balance the call is partially_funded, no_funds."""
    t = Tenant(worker, tenant_id("tollfree"))
    t.open(funds="1.00", users={"alice": ("US", ["MCOPSTN1"])})
    broke = Tenant(worker, tenant_id("tollfree0"))
    broke.open(funds=None, users={})
    tf_us, tf_gb = "+18005550100", "+448001234567"
    inbound = {"call_type": "user_in", "number_type": "toll_free", "caller_number": "+13125550199"}
    t.send(
        t.call("us", 125, destination=tf_us, **inbound),
        t.call("gb", 300, start="2026-11-02T10:10:00Z", destination=tf_gb, user_id="walk-in", **inbound),
        t.call("bridge", 61, start="2026-11-02T10:20:00Z", destination=tf_us, call_type="conf_in",
               number_type="toll_free", user_id=None, conference_id="meet-1"),
        t.call("queue", 30, start="2026-11-02T10:30:00Z", destination=tf_gb, call_type="ucap_in",
               number_type="toll_free", user_id=None),
    )
    broke.send(broke.call("zero", 60, destination=tf_us, **inbound))
    outs = t.wait(t.all_rated("us", "gb", "bridge", "queue"), broke.all_rated("zero"),
                  t.has("balance", caused_by=t.uid("queue")))

    expected = {
        "us": (price("toll_free_inbound", 125, tf_us), 125, "US"),
        "gb": (price("toll_free_inbound", 300, tf_gb, start="2026-11-02T10:10:00Z"), 300, "GB"),
        "bridge": (price("toll_free_inbound", 61, tf_us, start="2026-11-02T10:20:00Z"), 61, "US"),
        "queue": (price("toll_free_inbound", 30, tf_gb, start="2026-11-02T10:30:00Z"), 30, "GB"),
    }
    # the GB number is priced as GB's (1/1 increments), not as the caller's or user's location
    assert expected["gb"][0].charge != price("toll_free_inbound", 300, tf_us).charge
    balance = Decimal("1.00")
    for name, (expected_price, seconds, country) in expected.items():
        rated = t.rated(outs, name)
        assert (rated["status"], rated["reason"]) == ("rated", None), name
        assert rated["pool_usage"] == [], name
        assert rated["destination_country"] == country
        assert_credits_paid(rated, expected_price, seconds)
        assert rated["capability"] == "MCOPSTNPP"
        balance -= expected_price.charge
        assert rated["lot_debits"] == [{"lot_id": t.lot1, "amount": rated["charge"]}]
        assert money(rated["balance_after"]) == balance
    snapshot = t.balance(outs, t.uid("queue"))
    assert money(snapshot["balance"]) == balance
    us_pool = pool(snapshot, "MCOPSTN1", "US", "domestic", "2026-11")
    assert us_pool["used_seconds"] == 0
    assert us_pool["size_seconds"] == pool_seconds("MCOPSTN1", "US")

    zero = broke.rated(outs, "zero")
    zero_price = price("toll_free_inbound", 60, tf_us)
    assert zero_price.charge > 0
    assert (zero["status"], zero["reason"]) == ("partially_funded", "no_funds")
    assert money(zero["charge"]) == zero_price.charge
    assert money(zero["uncollected"]) == zero_price.charge
    assert (zero["lot_debits"], zero["balance_after"]) == ([], "0.00")


def test_1_2_4_conference_dial_out_draws_the_tenant_zone_a_pool_then_credits_if_licensed(worker: Worker) -> None:
    """conf_out: Zone A from the tenant-wide MCOMEETADD pool (location ``*``, 60 min per
    licence, whatever the organiser's location); the rest, or after exhaustion, from
    credits only if the organiser holds MCOPSTNPP or MCOMEETACPEA; otherwise blocked."""
    t = Tenant(worker, tenant_id("confout"))
    t.open(users={
        "olga": ("DE", ["MCOMEETADD"]),
        "sam": ("US", ["MCOMEETADD", "MCOPSTNPP"]),
        "mia": ("US", ["MCOMEETACPEA"]),
    })
    zone_a = pool_seconds("MCOMEETADD", "DE") + pool_seconds("MCOMEETADD", "US")
    assert zone_a == 2 * 60 * 60
    conf = {"call_type": "conf_out", "conference_id": "meet-42"}
    last = zone_a - 600
    t.send(
        t.call("olga-fr", 600, destination=PARIS, user_id="olga", user_location="DE", **conf),
        t.call("olga-br", 300, start="2026-11-02T10:20:00Z", destination=SAO_PAULO, user_id="olga",
               user_location="DE", **conf),
        t.call("sam-br", 300, start="2026-11-02T10:30:00Z", destination=SAO_PAULO, user_id="sam", **conf),
        t.call("mia-br", 300, start="2026-11-02T10:40:00Z", destination=SAO_PAULO, user_id="mia", **conf),
        t.call("sam-gb", last + 100, start="2026-11-02T11:00:00Z", destination=LONDON, user_id="sam", **conf),
        t.call("olga-late", 60, start="2026-11-02T13:00:00Z", destination=PARIS, user_id="olga",
               user_location="DE", **conf),
    )
    names = ("olga-fr", "olga-br", "sam-br", "mia-br", "sam-gb", "olga-late")
    outs = t.wait(t.all_rated(*names), t.has("balance", caused_by=t.uid("sam-gb")), t.has("pool_exhausted"))

    fr = t.rated(outs, "olga-fr")
    assert fr["pool_usage"] == [{"capability": "MCOMEETADD", "location": "*", "scope": "zone_a", "seconds": 600}]
    assert (fr["status"], fr["charge"], fr["credit_seconds"], fr["capability"]) == ("rated", "0.00", 0, "MCOMEETADD")

    blocked = t.rated(outs, "olga-br")  # not Zone A, and olga may not pay from credits
    assert (blocked["status"], blocked["reason"], blocked["charge"]) == ("blocked", "no_license", "0.00")
    assert (blocked["pool_usage"], blocked["lot_debits"], blocked["capability"]) == ([], [], None)

    balance = Decimal("10.00")
    for name, start in (("sam-br", "2026-11-02T10:30:00Z"), ("mia-br", "2026-11-02T10:40:00Z")):
        rated = t.rated(outs, name)
        expected = price("conf_dialout", 300, SAO_PAULO, start=start)
        assert expected.charge > 0
        assert (rated["status"], rated["reason"], rated["pool_usage"]) == ("rated", None, []), name
        assert_credits_paid(rated, expected, 300)
        assert rated["capability"] == "MCOPSTNPP"
        balance -= expected.charge
        assert money(rated["balance_after"]) == balance

    split = t.rated(outs, "sam-gb")
    split_price = price("conf_dialout", 100, LONDON, start="2026-11-02T11:00:00Z")
    assert split["pool_usage"] == [{"capability": "MCOMEETADD", "location": "*", "scope": "zone_a", "seconds": last}]
    assert_credits_paid(split, split_price, 100)
    assert split["capability"] == "MCOMEETADD"
    balance -= split_price.charge
    assert money(split["balance_after"]) == balance

    after = t.rated(outs, "olga-late")  # Zone A, but the pool is spent and olga may not use credits
    assert (after["status"], after["reason"], after["pool_usage"], after["charge"]) == (
        "blocked", "no_license", [], "0.00")

    assert [(e["capability"], e["location"], e["scope"]) for e in t.events(outs, "pool_exhausted")] == [
        ("MCOMEETADD", "*", "zone_a")]
    snapshot = t.balance(outs, t.uid("sam-gb"))
    reported = pool(snapshot, "MCOMEETADD", "*", "zone_a", "2026-11")
    assert (reported["size_seconds"], reported["used_seconds"], reported["available_seconds"]) == (
        zone_a, zone_a, 0)
    assert money(snapshot["balance"]) == balance


def test_1_2_5_bots_pay_from_credits_at_tenant_level_and_their_geographic_inbound_is_free(worker: Worker) -> None:
    """ucap_out (no user) pays from credits, never from a pool even where users of the
    tenant have one; ucap_in to a geographic number is free and recorded."""
    t = Tenant(worker, tenant_id("bots"))
    t.open(funds="5.00", users={"dom": ("US", ["MCOPSTN2"])})
    bot = {"user_id": None, "call_type": "ucap_out"}
    t.send(
        t.call("out-us", 125, **bot),
        t.call("out-gb", 95, start="2026-11-02T10:10:00Z", destination=LONDON, **bot),
        t.call("in", 600, start="2026-11-02T10:20:00Z", destination="+14155550100", caller_number="+13125550199",
               user_id=None, call_type="ucap_in"),
    )
    outs = t.wait(t.all_rated("out-us", "out-gb", "in"))

    balance = Decimal("5.00")
    for name, seconds, destination, start in (("out-us", 125, NEW_YORK, "2026-11-02T10:00:00Z"),
                                              ("out-gb", 95, LONDON, "2026-11-02T10:10:00Z")):
        rated = t.rated(outs, name)
        expected = price("outbound", seconds, destination, start=start)
        assert expected.charge > 0
        assert (rated["status"], rated["reason"], rated["pool_usage"]) == ("rated", None, []), name
        assert_credits_paid(rated, expected, seconds)
        assert rated["capability"] == "MCOPSTNPP"
        assert rated["lot_debits"] == [{"lot_id": t.lot1, "amount": rated["charge"]}]
        balance -= expected.charge
        assert money(rated["balance_after"]) == balance

    free = t.rated(outs, "in")
    assert (free["status"], free["reason"], free["pool_usage"]) == ("rated", None, [])
    assert (free["credit_seconds"], free["charged_seconds"], free["charge"], free["connection_fee"]) == (
        0, 0, "0.00", "0.00")
    assert (free["capability"], free["lot_debits"], free["uncollected"]) == (None, [], "0.00")
    assert money(free["balance_after"]) == balance


def test_1_2_8_postpaid_overage_charges_what_credits_would_pay_and_never_refuses_for_funds(worker: Worker) -> None:
    """Post-paid overage: what credits would pay is ``overage`` (capability OVERAGE, no
    lot debits, the tenant's lots untouched, even beyond them); a split call's credit part
    is overage too; licence checks stay: a user with no paying licence is blocked."""
    t = Tenant(worker, tenant_id("postpaid"))
    t.open(billing_model="postpaid_overage", funds="1.00", users={
        "pat": ("US", ["PAYG"]),
        "dora": ("US", ["MCOPSTN1"]),
        "sue": ("US", ["MCOPSTN5", "MCOPSTNPP"]),
    })
    sue_pool = pool_seconds("MCOPSTN5", "US")
    t.send(
        t.call("big", 20_000, user_id="pat"),
        t.call("intl", 300, start="2026-11-02T16:00:00Z", destination=LONDON, user_id="dora"),
        t.call("split", sue_pool + 100, start="2026-11-02T16:10:00Z", user_id="sue"),
        t.call("tollfree", 120, start="2026-11-02T18:10:00Z", destination="+18005550100", call_type="user_in",
               number_type="toll_free", caller_number="+13125550199"),
    )
    outs = t.wait(t.all_rated("big", "intl", "split", "tollfree"), t.has("balance", caused_by=t.uid("split")))

    big = t.rated(outs, "big")
    big_price = price("outbound", 20_000, NEW_YORK)
    assert big_price.charge > Decimal("1.00")  # more than the tenant's lots hold
    assert (big["status"], big["reason"]) == ("rated", None)
    assert_credits_paid(big, big_price, 20_000)
    assert money(big["overage"]) == big_price.charge
    assert (big["lot_debits"], big["uncollected"], big["capability"]) == ([], "0.00", "OVERAGE")
    assert big["balance_after"] == "1.00"

    intl = t.rated(outs, "intl")
    assert (intl["status"], intl["reason"]) == ("blocked", "no_license")
    assert (intl["charge"], intl["overage"], intl["lot_debits"], intl["capability"]) == ("0.00", "0.00", [], None)

    split = t.rated(outs, "split")
    split_price = price("outbound", 100, NEW_YORK, start="2026-11-02T16:10:00Z")
    assert split["pool_usage"] == [{"capability": "MCOPSTN5", "location": "US", "scope": "domestic",
                                    "seconds": sue_pool}]
    assert_credits_paid(split, split_price, 100)
    assert money(split["overage"]) == split_price.charge
    assert (split["status"], split["lot_debits"], split["capability"]) == ("rated", [], "MCOPSTN5")

    tollfree = t.rated(outs, "tollfree")
    tollfree_price = price("toll_free_inbound", 120, "+18005550100", start="2026-11-02T18:10:00Z")
    assert_credits_paid(tollfree, tollfree_price, 120)
    assert money(tollfree["overage"]) == tollfree_price.charge
    assert (tollfree["status"], tollfree["lot_debits"], tollfree["capability"]) == ("rated", [], "OVERAGE")

    snapshot = t.balance(outs, t.uid("split"))  # overage moves no balance: no snapshot of its own
    assert snapshot["balance"] == "1.00"
    assert [(lot["lot_id"], lot["remaining"]) for lot in snapshot["lots"]] == [(t.lot1, "1.00")]
    assert snapshot["status"] == "active"


def test_1_2_7_a_known_user_whose_licences_cannot_pay_is_blocked_with_no_charge(worker: Worker) -> None:
    """MCOPSTN1 only: an international call and a premium domestic one (never from a pool)
    are blocked, reason no_license, zero charge, the credits untouched; a domestic call
    is paid by the pool."""
    t = Tenant(worker, tenant_id("blocked"))
    t.open(funds="10.00", users={"dana": ("US", ["MCOPSTN1"]), "ex": ("US", ["MCOPSTN1", "MCOPSTNPP"])},
           extra=(("account-commands", event("user_removed", t.id, f"{t.id}-e-rm", command_id=f"{t.id}-rm",
                                             user_id="ex")),))
    t.send(
        t.call("intl", 300, destination=LONDON, user_id="dana"),
        t.call("gone", 60, start="2026-11-02T10:05:00Z", user_id="ex"),  # known, but holds nothing now
        t.call("premium", 120, start="2026-11-02T10:10:00Z", destination="+19005550123", user_id="dana"),
        t.call("home", 60, start="2026-11-02T10:20:00Z", user_id="dana"),
    )
    outs = t.wait(t.all_rated("intl", "gone", "premium", "home"), t.has("balance", caused_by=t.uid("home")))
    for name, country, scope in (("intl", "GB", "international"), ("gone", "US", "domestic"),
                                 ("premium", "US", "domestic")):
        rated = t.rated(outs, name)
        assert (rated["status"], rated["reason"]) == ("blocked", "no_license"), name
        assert (rated["destination_country"], rated["scope"]) == (country, scope)
        assert (rated["charge"], rated["uncollected"], rated["overage"], rated["connection_fee"]) == (
            "0.00", "0.00", "0.00", "0.00")
        assert (rated["pool_usage"], rated["credit_seconds"], rated["charged_seconds"]) == ([], 0, 0)
        assert (rated["capability"], rated["lot_debits"], rated["balance_after"]) == (None, [], "10.00")
    home = t.rated(outs, "home")
    assert (home["status"], home["capability"], home["charge"]) == ("rated", "MCOPSTN1", "0.00")
    assert home["pool_usage"] == [{"capability": "MCOPSTN1", "location": "US", "scope": "domestic", "seconds": 60}]
    snapshot = t.balance(outs, t.uid("home"))
    assert snapshot["balance"] == "10.00"
    assert pool(snapshot, "MCOPSTN1", "US", "domestic", "2026-11")["used_seconds"] == 60


# --- §1.4 communications credits ---------------------------------------------------------


def test_1_4_a_failed_recharge_is_retried_after_the_back_off_of_event_time(worker: Worker) -> None:
    """A debit below the trigger asks once; a failed result emits recharge_failed with
    its reason and retry_after = the partition's "now" + 1 h; a debit during the back-off
    asks nothing; a tick at the deadline makes request ``{tenant}/recharge/2``."""
    t = Tenant(worker, tenant_id("retry", (RECHARGE_PARTITION,)))
    t.open(funds="6.00", users={"alice": ("US", ["PAYG"])}, extra=(("account-commands", event(
        "auto_recharge_configured", t.id, f"{t.id}-e-ar", command_id=f"{t.id}-ar", enabled=True,
        trigger_amount="5.00", recharge_amount="20.00")),))
    t.send(t.call("long", 7200))  # 10:00–12:00
    outs = t.wait(t.has("recharge_request"), t.has("low_balance"))
    long_price = price("outbound", 7200, NEW_YORK)
    after_long = Decimal("6.00") - long_price.charge
    assert after_long < Decimal("5.00")
    [first] = t.events(outs, "recharge_request")
    assert (first["request_id"], first["amount"], first["trigger_amount"]) == (f"{t.id}/recharge/1", "20.00", "5.00")
    assert money(first["balance"]) == after_long
    [low] = t.events(outs, "low_balance")
    assert money(low["balance"]) == after_long

    # "now" moves to 12:05 with a free inbound call; the payment service fails at 12:05
    t.send(t.call("ring", 60, start="2026-11-02T12:04:00Z", call_type="user_in", destination="+14155550100",
                  caller_number="+13125550199"))
    t.wait(t.all_rated("ring"))
    # the back-off counts from the partition's "now" when the failure is applied (ledger
    # recharge_failed), here equal to the result's processed_at
    failed_at = "2026-11-02T12:05:00Z"
    t.send(("recharge-results", event(
        "recharge_result", t.id, f"{t.id}-e-res1", at=failed_at, request_id=first["request_id"], status="failed",
        amount="20.00", currency="USD", reason="card_expired", processed_at=failed_at)))
    outs = t.wait(t.has("recharge_failed"), t.has("balance", caused_by=first["request_id"]))
    [failed] = t.events(outs, "recharge_failed")
    assert (failed["request_id"], failed["reason"]) == (first["request_id"], "card_expired")
    retry_at = _time(failed_at) + timedelta(hours=1)
    assert _time(failed["retry_after"]) == retry_at
    assert _time(failed["occurred_at"]) == _time(failed_at)
    assert t.balance(outs, first["request_id"])["auto_recharge"]["pending_request_id"] is None

    # a debit one second before the deadline, still below the trigger: no request yet
    t.send(t.call("during", 60, start=_text(retry_at - timedelta(seconds=61))))
    t.wait(t.all_rated("during"))
    during_price = price("outbound", 60, NEW_YORK, start=_text(retry_at - timedelta(seconds=61)))
    # the wall clock reaches the deadline (a tick, as the worker's own ticker would send)
    t.send_raw([("rater-ticks", t.id.encode(), orjson.dumps({"type": "tick", "now": _text(retry_at)}))])
    outs = t.wait(t.has("recharge_request", 2), t.has("recharge_failed"), t.has("low_balance"))

    requests = t.events(outs, "recharge_request")
    assert [r["request_id"] for r in requests] == [f"{t.id}/recharge/1", f"{t.id}/recharge/2"]
    second = requests[1]
    assert _time(second["occurred_at"]) == retry_at  # at the deadline, not at the debit before it
    assert money(second["balance"]) == after_long - during_price.charge
    assert (second["amount"], second["trigger_amount"]) == ("20.00", "5.00")
    assert len(t.events(outs, "recharge_failed")) == 1
    assert len(t.events(outs, "low_balance")) == 1  # still the same crossing


def test_1_4_reaching_zero_emits_balance_depleted_once_per_crossing(worker: Worker) -> None:
    """A debit that takes the balance exactly to 0: one balance_depleted and a depleted
    snapshot; a call at 0 is partially_funded and emits no second one; after new funds a
    partially funded call takes it to 0 again: a second (new crossing)."""
    t = Tenant(worker, tenant_id("zero"))
    t.open(funds="0.05", users={"alice": ("US", ["PAYG"])})
    exact = price("outbound", 300, NEW_YORK)
    assert exact.charge == Decimal("0.05")  # the balance, to the cent
    t.send(t.call("exact", 300))
    outs = t.wait(t.all_rated("exact"), t.has("balance", caused_by=t.uid("exact")))
    exact_rated = t.rated(outs, "exact")
    assert (exact_rated["status"], exact_rated["reason"], exact_rated["balance_after"]) == ("rated", None, "0.00")
    assert money(exact_rated["charge"]) == exact.charge
    snapshot = t.balance(outs, t.uid("exact"))
    assert (snapshot["balance"], snapshot["status"], snapshot["lots"]) == ("0.00", "depleted", [])

    t.send(t.call("broke", 60, start="2026-11-02T10:10:00Z"))
    outs = t.wait(t.all_rated("broke"))
    broke = t.rated(outs, "broke")
    broke_price = price("outbound", 60, NEW_YORK, start="2026-11-02T10:10:00Z")
    assert (broke["status"], broke["reason"], broke["lot_debits"]) == ("partially_funded", "no_funds", [])
    assert money(broke["charge"]) == money(broke["uncollected"]) == broke_price.charge

    t.send(("account-commands", event("funds_added", t.id, f"{t.id}-e-lot2", command_id=f"{t.id}-lot2",
                                      amount="0.02", currency="USD", purchased_at="2026-11-02T10:20:00Z")))
    t.wait(t.has("balance", caused_by=f"{t.id}-lot2"))
    t.send(t.call("over", 180, start="2026-11-02T10:30:00Z"))
    outs = t.wait(t.has("balance_depleted", 2), t.all_rated("over"), t.has("balance", caused_by=t.uid("over")),
                  t.has("balance", caused_by=f"{t.id}-lot2"))

    over = t.rated(outs, "over")
    over_price = price("outbound", 180, NEW_YORK, start="2026-11-02T10:30:00Z")
    assert over_price.charge > Decimal("0.02")
    assert (over["status"], over["reason"]) == ("partially_funded", "no_funds")
    assert over["lot_debits"] == [{"lot_id": f"{t.id}-lot2", "amount": "0.02"}]
    assert money(over["uncollected"]) == over_price.charge - Decimal("0.02")
    # notifications of a tenant keep their order: "broke" came between the two
    depleted = t.events(outs, "balance_depleted")
    assert [e["event_id"].rsplit("/", 1)[-1] for e in depleted] == [t.uid("exact"), t.uid("over")]
    assert all(e["currency"] == "USD" for e in depleted)
    assert t.balance(outs, f"{t.id}-lot2")["status"] == "active"
    assert t.balance(outs, t.uid("over"))["status"] == "depleted"


# --- §1.5 time ---------------------------------------------------------------------------


def test_1_5_a_late_cdr_within_grace_draws_its_months_pool_and_after_grace_is_a_dead_letter(worker: Worker) -> None:
    """"Now" in December: a November CDR within the 7-day grace is rated in 2026-11
    against November's (frozen) pool, whose last seconds it takes, not December's fresh
    one; once "now" is past 8 Dec 00:00 a November CDR is a ``late`` dead letter."""
    t = Tenant(worker, tenant_id("late", (LATE_PARTITION,)))
    t.open(funds="10.00", users={"alice": ("US", ["MCOPSTN5", "MCOPSTNPP"])})
    size = pool_seconds("MCOPSTN5", "US")
    t.send(t.call("nov", size - 200, start="2026-11-20T10:00:00Z"))
    # December's call ends a second before November's grace ends: "now" = 2026-12-07T23:59:59Z
    t.send(t.call("dec", 3599, start="2026-12-07T23:00:00Z"))
    t.wait(t.all_rated("nov", "dec"))
    # a licence bought in December doubles December's pool; November's froze at its end
    t.send(("account-commands", event("licenses_assigned", t.id, f"{t.id}-e-bob", command_id=f"{t.id}-lic-bob",
                                      user_id="bob", usage_location="US", capabilities=["MCOPSTN5"])))
    t.wait(t.has("balance", caused_by=f"{t.id}-lic-bob"))
    t.send(t.call("nov-grace", 600, start="2026-11-30T23:00:00Z"))
    outs = t.wait(t.all_rated("dec", "nov-grace"), t.has("balance", caused_by=t.uid("nov-grace")),
                  t.has("pool_exhausted"))

    dec = t.rated(outs, "dec")
    assert dec["billing_month"] == "2026-12"
    assert dec["pool_usage"] == [{"capability": "MCOPSTN5", "location": "US", "scope": "domestic", "seconds": 3599}]
    grace = t.rated(outs, "nov-grace")
    grace_price = price("outbound", 400, NEW_YORK, start="2026-11-30T23:00:00Z")
    assert (grace["status"], grace["billing_month"]) == ("rated", "2026-11")
    assert grace["pool_usage"] == [{"capability": "MCOPSTN5", "location": "US", "scope": "domestic", "seconds": 200}]
    assert_credits_paid(grace, grace_price, 400)
    assert money(grace["balance_after"]) == Decimal("10.00") - grace_price.charge
    [exhausted] = t.events(outs, "pool_exhausted")
    assert (exhausted["capability"], exhausted["month"]) == ("MCOPSTN5", "2026-11")
    snapshot = t.balance(outs, t.uid("nov-grace"))
    november = pool(snapshot, "MCOPSTN5", "US", "domestic", "2026-11")
    december = pool(snapshot, "MCOPSTN5", "US", "domestic", "2026-12")
    assert (november["size_seconds"], november["used_seconds"], november["available_seconds"]) == (size, size, 0)
    assert (december["size_seconds"], december["used_seconds"]) == (pool_seconds("MCOPSTN5", "US", 2), 3599)

    # "now" passes the end of November's grace (2026-12-08T00:00:00Z)
    t.send(t.call("dec-after", 2, start="2026-12-08T00:00:00Z"))
    t.wait(t.all_rated("dec-after"))
    late_item = t.call("nov-late", 60, start="2026-11-30T22:00:00Z")
    late_bytes = orjson.dumps(late_item[1])
    t.send_raw([("cdrs", t.id.encode(), late_bytes)])
    late_b64 = base64.b64encode(late_bytes).decode()
    outs = t.wait(lambda o: any(x.topic == "dead-letters" and x.event["value_b64"] == late_b64 for x in o))
    [letter] = [o.event for o in outs if o.topic == "dead-letters" and o.event["value_b64"] == late_b64]
    assert (letter["reason"], letter["tenant_id"], letter["source_topic"]) == ("late", t.id, f"{worker.prefix}cdrs")
    assert base64.b64decode(letter["key_b64"]) == t.id.encode()
    assert not t.events(outs, "rated_cdr", usage_id=t.uid("nov-late"))


# --- §2 bad input through the worker -----------------------------------------------------


def test_2_schema_edge_cases_become_dead_letters_with_their_bytes_and_the_worker_goes_on(worker: Worker) -> None:
    """An enum value the contract does not know, end before start, a duration past 7
    days, an impossible date, a key that is not UTF-8 or not a tenant id, a key that is
    not the payload's tenant: each one dead letter with its reason and original bytes;
    a good CDR after them is rated."""
    t = Tenant(worker, tenant_id("edges"))
    t.open(funds="10.00", users={"alice": ("US", ["PAYG"])})
    key = t.id.encode()

    def value(name: str, **fields: Any) -> bytes:
        item = t.call(name, 60)[1]
        item.update(fields)
        return orjson.dumps(item)

    cases: dict[str, tuple[str, bytes, bytes]] = {  # name → (reason, key, value)
        "sideways": ("schema", key, value("sideways", call_type="user_sideways")),
        "backwards": ("schema", key, value("backwards", start_time="2026-11-02T10:00:00Z",
                                           end_time="2026-11-02T09:59:00Z")),
        "absurd": ("schema", key, value("absurd", duration_seconds=7 * 24 * 3600 + 1)),
        "feb30": ("schema", key, value("feb30", start_time="2026-02-30T10:00:00Z")),
        "not-utf8": ("bad_key", b"\xc3\x28" + key, value("not-utf8")),
        "not-tenant": ("bad_key", b"acme corp!", value("not-tenant")),
        "mismatch": ("key_mismatch", key, orjson.dumps(cdr(f"other-{uuid.uuid4().hex[:8]}", t.uid("mismatch"), 60))),
    }
    t.send_raw([("cdrs", k, v) for _reason, k, v in cases.values()])
    t.send(t.call("after", 60, start="2026-11-02T10:05:00Z"))
    wanted = {base64.b64encode(v).decode(): name for name, (_r, _k, v) in cases.items()}

    def letters(outs: list[Out]) -> dict[str, dict[str, Any]]:
        return {wanted[o.event["value_b64"]]: o.event for o in outs
                if o.topic == "dead-letters" and o.event["value_b64"] in wanted}

    outs = t.wait(lambda o: len(letters(o)) == len(cases), t.all_rated("after"))
    found = letters(outs)
    assert {name: letter["reason"] for name, letter in found.items()} == {
        name: reason for name, (reason, _k, _v) in cases.items()}
    for name, (_reason, k, v) in cases.items():
        letter = found[name]
        assert base64.b64decode(letter["value_b64"]) == v, name
        assert base64.b64decode(letter["key_b64"]) == k, name
        assert letter["source_topic"] == f"{worker.prefix}cdrs", name
        assert letter["tenant_id"] == (None if _reason == "bad_key" else t.id), name
    for name, field_name in (("sideways", "call_type"), ("backwards", "end_time"), ("absurd", "duration_seconds"),
                             ("feb30", "2026-02-30"), ("mismatch", "tenant_id")):
        assert field_name in found[name]["message"], found[name]["message"]  # says what is wrong
    assert not [o for o in outs if o.topic == "rated-cdrs" and o.event["usage_id"] in {t.uid(n) for n in cases}]
    after = t.rated(outs, "after")
    assert after["status"] == "rated"
    assert money(after["charge"]) == price("outbound", 60, NEW_YORK, start="2026-11-02T10:05:00Z").charge
    worker.check_alive()
