"""A small reference model of SPEC §1 for one tenant, written for obviousness, not speed.

It shares nothing with the core but the read-only data (catalog, tariff, country table):
money in ``Decimal`` rounded with ``ROUND_HALF_UP``, pool sizes counted by scanning the
users, lots re-sorted and filtered for expiry on every use, months from ``datetime``.
The stateful test runs it beside the core and compares them after every step.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from rater.core.context import RatingContext

HOUR = 3_600_000_000
DAY = 24 * HOUR
INBOUND = ("user_in", "conf_in", "ucap_in")
USER_OUT = ("user_out", "user_out_conf", "user_out_transfer", "user_out_forwarding")


def _dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def _us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def month(us: int) -> str:
    return _dt(us).strftime("%Y-%m")


def month_end(m: str) -> int:
    year, mon = int(m[:4]), int(m[5:])
    return _us(datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=UTC))


def plus_12_months(us: int) -> int:
    moment = _dt(us)
    day = min(moment.day, calendar.monthrange(moment.year + 1, moment.month)[1])
    return _us(moment.replace(year=moment.year + 1, day=day))


@dataclass
class ModelLot:
    lot_id: str
    purchased: int
    expires: int
    remaining: int


@dataclass
class Outcome:
    """What the model expects for one CDR."""

    rejection: str | None
    status: str | None = None
    pool_seconds: int = 0
    charge: int = 0
    uncollected: int = 0


@dataclass
class Model:
    ctx: RatingContext
    postpaid: bool
    now: int
    exponent: int = 2
    users: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    snapshots: dict[str, dict[str, tuple[str, frozenset[str]]]] = field(default_factory=dict)
    open_month: str = ""
    used: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    lots: list[ModelLot] = field(default_factory=list)
    rated: dict[str, tuple[str, object]] = field(default_factory=dict)
    funded: int = 0
    debited: int = 0
    expired: int = 0
    ar_enabled: bool = False
    trigger: int = 0
    recharge: int = 0
    pending: str | None = None
    pending_since: int = 0
    sequence: int = 0
    retry_at: int | None = None

    def __post_init__(self) -> None:
        self.open_month = month(self.now)

    # -- money ---------------------------------------------------------------------------
    @property
    def balance(self) -> int:
        return sum(lot.remaining for lot in self.lots)

    def _after_decrease(self) -> None:
        self._maybe_request()

    def _maybe_request(self) -> None:
        if (not self.postpaid and self.ar_enabled and self.recharge > 0 and self.balance < self.trigger
                and self.pending is None and self.retry_at is None):
            self.sequence += 1
            self.pending = f"t1/recharge/{self.sequence}"
            self.pending_since = self.now

    def add_lot(self, lot_id: str, amount: int, purchased: int) -> None:
        self.funded += amount
        if amount:
            self.lots.append(ModelLot(lot_id, purchased, plus_12_months(purchased), amount))
            self.lots.sort(key=lambda lot: (lot.purchased, lot.lot_id))
        self._expire()

    def _expire(self) -> None:
        for lot in list(self.lots):
            if lot.expires <= self.now:
                self.lots.remove(lot)
                self.expired += lot.remaining
                if lot.remaining:
                    self._after_decrease()

    # -- time ----------------------------------------------------------------------------
    def advance(self, now: int) -> None:
        now = max(now, self.now)
        self.now = now
        if month(now) > self.open_month:
            first_of_month = _dt(now).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            self.snapshots = {month(_us(first_of_month) - 1): dict(self.users)}
            self.open_month = month(now)
        self.snapshots = {m: s for m, s in self.snapshots.items() if month_end(m) + 7 * DAY > now}
        self._expire()
        if self.pending is not None and self.pending_since + DAY <= now:
            self.pending = None
            self.retry_at = now + HOUR
        elif self.pending is None and self.retry_at is not None and self.retry_at <= now:
            self.retry_at = None
            self._maybe_request()

    # -- commands ------------------------------------------------------------------------
    def license(self, user: str, location: str, caps: tuple[str, ...]) -> None:
        self.users[user] = (location, frozenset(caps))

    def remove(self, user: str) -> None:
        if user in self.users:  # removing someone never licensed leaves them unknown
            self.users[user] = (self.users[user][0], frozenset())

    def configure(self, enabled: bool, trigger: int, recharge: int) -> None:
        self.ar_enabled, self.trigger, self.recharge = enabled, trigger, recharge
        self._maybe_request()

    def result(self, request_id: str, succeeded: bool, amount: int, processed: int) -> None:
        if succeeded:
            if self.pending == request_id:
                self.pending, self.retry_at = None, None
            self.add_lot(request_id, amount, processed)
        elif self.pending == request_id:
            self.pending = None
            self.retry_at = self.now + HOUR

    # -- pools ---------------------------------------------------------------------------
    def pool_size(self, cap_id: str, location: str, scope: str, m: str) -> int:
        users = self.users if m >= self.open_month else self.snapshots.get(m, {})
        cap = self.ctx.catalog.by_id[cap_id]
        allotment = cap.allotment(scope)
        assert allotment is not None
        minutes = 0
        for user_location, caps in users.values():
            if cap_id in caps and location in ("*", user_location):
                minutes += allotment.minutes_for(user_location)
        return minutes * 60

    # -- calls ---------------------------------------------------------------------------
    def call(  # noqa: PLR0912 - one flat function keeps the model readable top to bottom
        self, usage_id: str, content: object, user: str | None, location: str, call_type: str,
        number_type: str, destination: str, start: int, end: int, seconds: int) -> Outcome:
        catalog = self.ctx.catalog
        now = max(self.now, end)
        m = month(start)
        if month_end(m) + 7 * DAY <= now:
            return Outcome("late")
        if usage_id in self.rated:
            return Outcome(None, "duplicate") if self.rated[usage_id] == (m, content) else Outcome("id_conflict")
        inbound = call_type in INBOUND
        emergency = not inbound and destination in catalog.emergency
        if not emergency and not destination.startswith("+"):
            return Outcome("schema")  # only the catalog's emergency numbers may be short codes
        caps: frozenset[str] = frozenset()
        needs_user = call_type in USER_OUT or call_type == "conf_out"
        if needs_user and not emergency and not (inbound and number_type != "toll_free"):
            if user is None or user not in self.users:
                return Outcome("unknown_user")
            caps = self.users[user][1]
        country = self.ctx.countries.country_of(destination)
        pools: list[tuple[str, str, str, str]] = []
        if country is not None and not catalog.is_premium(destination):
            if call_type in USER_OUT:
                scope = "domestic" if country == location else "international"
                pools = [(c.id, location, scope, m) for c in catalog.capabilities
                         if c.id in caps and c.allotment(scope)]
            elif call_type == "conf_out" and country in catalog.zone_a:
                pools = [(c.id, "*", "zone_a", m) for c in catalog.capabilities if c.allotment("zone_a")]
        free = (inbound and number_type != "toll_free") or emergency
        draws: list[tuple[tuple[str, str, str, str], int]] = []
        left = 0 if free else seconds
        for key in pools:
            available = self.pool_size(*key) - self.used.get(key, 0)
            take = min(left, max(available, 0))
            if take:
                draws.append((key, take))
                left -= take
        if inbound or call_type == "ucap_out":
            may_pay = True
        else:
            family = "conf_out" if call_type == "conf_out" else "user_out"
            may_pay = any(family in catalog.by_id[c].credits_for for c in caps)
        cost = 0
        status = "rated"
        if left and not may_pay:
            status = "partially_funded" if draws else "blocked"
        elif left:
            call_class = "toll_free_inbound" if inbound else "conf_dialout" if call_type == "conf_out" else "outbound"
            tariff = self.ctx.tariffs.at(start)
            rate = tariff.rate_for("USD", call_class, destination) if tariff else None
            if rate is None:
                return Outcome("no_rate")
            billed = rate.first_s if left <= rate.first_s else (
                rate.first_s + -(-(left - rate.first_s) // rate.next_s) * rate.next_s)
            per_minute = Decimal(rate.rate_micro_per_min) / Decimal(1_000_000)
            amount = (per_minute * billed / 60).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
            cost = int(amount * 100) + rate.connection_fee_minor
        # accepted: time moves to the CDR's end, then money moves
        self.advance(now)
        self.rated[usage_id] = (m, content)
        for key, take in draws:
            self.used[key] = self.used.get(key, 0) + take
        uncollected = 0
        if cost and not self.postpaid:
            before = self.balance
            owed = cost
            for lot in sorted(self.lots, key=lambda lot: (lot.purchased, lot.lot_id)):
                take = min(owed, lot.remaining)
                lot.remaining -= take
                owed -= take
            self.lots = [lot for lot in self.lots if lot.remaining]
            self.debited += cost - owed
            uncollected = owed
            if uncollected:
                status = "partially_funded"
            if self.balance < before:
                self._after_decrease()
        return Outcome(None, status, sum(t for _, t in draws), cost, uncollected)
