"""A tenant's state, shaped like a ledger: lots are entries, totals are checked against them.

``to_dict`` / ``from_dict`` give a plain-JSON form for the state store; the shape is
versioned by ``STATE_VERSION`` so a worker refuses a store it cannot read.

The ids a tenant applied are not in that form: they live in an :class:`IdMemory`, one
record per id in the shell's store, so a state write costs the same whether the tenant
made ten calls this month or ten million (SPEC §4: the duplicate memory is bounded). Its
users are not in it either: a :class:`UserDirectory`, one record per user, so a state
write and a licence command cost the same at ten users and at a million; the state keeps
only the licence counts, updated by each command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

STATE_VERSION = 4
"""4: users are records of their own (:class:`UserDirectory`), the state keeps the licence
counts; 3 held the users inside the state (still read: see :meth:`TenantState.from_dict`)."""

PoolKey = tuple[str, str, str, str]
"""(capability, location, scope, month)."""


@dataclass(slots=True)
class Lot:
    """One purchase of credits, consumed oldest first, forfeited at ``expires_us``."""

    lot_id: str
    amount_minor: int
    remaining_minor: int
    purchased_us: int
    expires_us: int


@dataclass(slots=True)
class User:
    """A person known to the tenant: where they use the service and the capabilities they
    hold (empty after ``user_removed``: a known user whose licences cannot pay)."""

    usage_location: str
    capabilities: tuple[str, ...]


@dataclass(slots=True)
class AutoRecharge:
    """Auto-recharge settings and the request state machine (amounts in minor units).

    At most one request is outstanding (``pending_request_id``); ``sequence`` numbers the
    requests so their ids are deterministic; ``retry_at_us`` is the back-off deadline
    after a failure (no request before it)."""

    enabled: bool = False
    trigger_minor: int = 0
    recharge_minor: int = 0
    pending_request_id: str | None = None
    pending_since_us: int = 0
    sequence: int = 0
    retry_at_us: int | None = None


@dataclass(slots=True)
class PoolUse:
    """Seconds drawn from one pool, and the largest size the pool had when drawn from
    (used ≤ that size always; a licence removal may later shrink the size below used)."""

    used_s: int = 0
    peak_size_s: int = 0


IdReader = Callable[[str], str | None]
"""Reads one remembered id's fingerprint from the shell's store, by its memory key."""


class IdMemory:
    """The ids a tenant applied and the fingerprint of what each one applied (SPEC §1.5):
    usage ids by billing month (key ``u/{month}/{usage_id}``), command and recharge-result
    ids (key ``a/{id}``).

    Ids remembered since the last :meth:`drain` are in memory; older ones are read from
    the shell's store through ``reader`` (with no reader, as in the core's own tests, all
    of them stay in memory). A billing month's usage ids are forgotten once the month can
    no longer be rated (its grace ended: its CDRs are ``late``), which bounds the memory
    by the calls of at most two months; command and request ids are kept for good (a
    ledger never forgets an idempotency key, and they are few)."""

    __slots__ = ("forgotten", "reader", "recent")

    def __init__(self, reader: IdReader | None = None) -> None:
        self.reader = reader
        self.recent: dict[str, str] = {}
        """Memory key → fingerprint, for ids not yet handed to the store."""
        self.forgotten: list[str] = []
        """Billing months forgotten since the last drain (the store deletes their ids)."""

    def get(self, key: str) -> str | None:
        """The fingerprint remembered under ``key``, if any."""
        seen = self.recent.get(key)
        if seen is None and self.reader is not None:
            seen = self.reader(key)
        return seen

    def put(self, key: str, digest: str) -> None:
        self.recent[key] = digest

    def forget_month(self, month: str) -> None:
        """Forget every usage id of billing ``month``."""
        prefix = usage_key(month, "")
        self.recent = {key: digest for key, digest in self.recent.items() if not key.startswith(prefix)}
        self.forgotten.append(month)

    def drain(self) -> tuple[dict[str, str], list[str]]:
        """Hand over what changed since the last drain — the new ids (key → fingerprint)
        and the forgotten months — for the store, which then answers ``reader``."""
        recent, forgotten = self.recent, self.forgotten
        self.recent, self.forgotten = {}, []
        return recent, forgotten


UserReader = Callable[[str], User | None]
"""Reads one user's record from the shell's store, by user id."""

USER_CACHE = 1_000
"""Users a directory with a reader keeps in memory between drains at most (read or
written): beyond it the read cache is emptied at the drain."""


class UserDirectory:
    """A tenant's users by id (SPEC §1.1: where each uses the service and what it holds).

    Users changed since the last :meth:`drain` are in memory; the others are read from
    the shell's store through ``reader`` and kept in a small read cache (at most
    :data:`USER_CACHE` of them between drains). With no reader, as in the core's own
    tests and the benchmarks, the directory holds every user in memory (``complete``
    is False for one that holds none of a stored tenant's users: read without them)."""

    __slots__ = ("changed", "complete", "held", "reader")

    def __init__(self, reader: UserReader | None = None, *, complete: bool = True) -> None:
        self.reader = reader
        self.complete = complete
        self.changed: dict[str, User] = {}
        """Users put since the last drain (not yet handed to the store)."""
        self.held: dict[str, User | None] = {}
        """With a reader: users read (None: not in the store) or drained, a cache; with
        none: every user drained so far."""

    def get(self, user_id: str) -> User | None:
        """The user, if the tenant ever licensed them."""
        user = self.changed.get(user_id)
        if user is None:
            held = self.held
            user = held.get(user_id)
            if user is None and self.reader is not None and user_id not in held:
                user = self.reader(user_id)
                if len(held) >= USER_CACHE:  # calls of ever new (unknown) users read, never drained
                    held.clear()
                held[user_id] = user
        return user

    def put(self, user_id: str, user: User) -> None:
        self.changed[user_id] = user

    def drain(self) -> dict[str, User]:
        """Hand over the users changed since the last drain, for the store, which then
        answers ``reader``."""
        changed = self.changed
        self.changed = {}
        if self.reader is None or len(self.held) + len(changed) <= USER_CACHE:
            self.held.update(changed)
        else:
            self.held = {}
        return changed

    def everyone(self) -> dict[str, User] | None:
        """Every user, when the directory holds them all (no reader); else None."""
        if self.reader is not None or not self.complete:
            return None
        return {**{uid: user for uid, user in self.held.items() if user is not None}, **self.changed}


def usage_key(month: str, usage_id: str) -> str:
    """The memory key of a usage id rated in billing ``month``."""
    return f"u/{month}/{usage_id}"


def applied_key(input_id: str) -> str:
    """The memory key of a command id or a recharge result's request id."""
    return f"a/{input_id}"


@dataclass(slots=True)
class TenantState:
    """Everything the rater knows about one tenant."""

    tenant_id: str
    country: str
    currency: str
    exponent: int
    billing_model: str
    low_balance_threshold_minor: int | None = None
    licences: dict[tuple[str, str], int] = field(default_factory=dict)
    """(capability, usage location) → users holding it now (no zero counts); kept up to
    date by :meth:`set_user`, not recounted."""
    lots: list[Lot] = field(default_factory=list)
    """Lots with money left, oldest first (purchase time, then id)."""
    balance_minor: int = 0
    pools: dict[PoolKey, PoolUse] = field(default_factory=dict)
    frozen: dict[str, dict[tuple[str, str], int]] = field(default_factory=dict)
    """Closed month → licence counts at its end (pool sizes of a closed month)."""
    open_month: str = ""
    auto_recharge: AutoRecharge = field(default_factory=AutoRecharge)
    low_armed: bool = True
    """Whether the next fall below the low-balance threshold emits ``low_balance``."""
    funded_minor: int = 0
    debited_minor: int = 0
    expired_minor: int = 0
    now_us: int = 0
    users: UserDirectory = field(default_factory=UserDirectory, repr=False, compare=False)
    """The tenant's users: stored by the shell as records of their own, not in
    :meth:`to_dict` (which keeps their ``licences`` counts)."""
    ids: IdMemory = field(default_factory=IdMemory, repr=False, compare=False)
    """The ids applied (usage ids of the remembered months, command and request ids):
    stored by the shell as records of their own, not in :meth:`to_dict`."""
    due_us: int = field(default=0, repr=False, compare=False)
    """A lower bound of the next instant time-driven work falls due (month end, grace
    end, lot expiry, recharge time-out or back-off): before it, passing time only moves
    "now". Not stored; 0 = unknown, so a loaded state checks everything once."""
    sizes: dict[PoolKey, int] = field(default_factory=dict, repr=False, compare=False)
    """Pool sizes already computed (not stored: derived from licences and months, and
    emptied whenever either changes)."""

    def set_user(self, user_id: str, user: User) -> None:
        """Give a user their licences (none: removed): the counts lose the user's old
        capabilities and gain the new ones, and the pool sizes they gave are forgotten."""
        counts = self.licences
        old = self.users.get(user_id)
        if old is not None:
            for cap in old.capabilities:
                key = (cap, old.usage_location)
                left = counts[key] - 1
                if left:
                    counts[key] = left
                else:
                    del counts[key]
        for cap in user.capabilities:
            key = (cap, user.usage_location)
            counts[key] = counts.get(key, 0) + 1
        self.users.put(user_id, user)
        self.sizes = {}

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for the state store."""
        ar = self.auto_recharge
        return {
            "v": STATE_VERSION,
            "tenant_id": self.tenant_id,
            "country": self.country,
            "currency": self.currency,
            "exponent": self.exponent,
            "billing_model": self.billing_model,
            "low_balance_threshold_minor": self.low_balance_threshold_minor,
            "licences": [[cap, loc, n] for (cap, loc), n in self.licences.items()],
            "lots": [
                [lot.lot_id, lot.amount_minor, lot.remaining_minor, lot.purchased_us, lot.expires_us]
                for lot in self.lots
            ],
            "pools": [[*key, use.used_s, use.peak_size_s] for key, use in self.pools.items()],
            "frozen": {
                month: [[cap, loc, n] for (cap, loc), n in counts.items()]
                for month, counts in self.frozen.items()
            },
            "open_month": self.open_month,
            "auto_recharge": [
                ar.enabled, ar.trigger_minor, ar.recharge_minor, ar.pending_request_id,
                ar.pending_since_us, ar.sequence, ar.retry_at_us,
            ],
            "low_armed": self.low_armed,
            "funded_minor": self.funded_minor,
            "debited_minor": self.debited_minor,
            "expired_minor": self.expired_minor,
            "now_us": self.now_us,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], ids: IdMemory | None = None,
                  users: UserDirectory | None = None) -> TenantState:
        """Inverse of :meth:`to_dict` (the ids and the users come separately, as the
        shell's memories backed by its store); refuses a state of another version.

        Without ``users`` a version 4 state knows its counts, not its users. A version 3
        state holds its users: they go into ``users`` as changes, so the tenant's next
        write stores them as records, and the counts are made from them."""
        version = data.get("v")
        if version not in (3, STATE_VERSION):
            raise ValueError(f"tenant state version {version!r}, expected {STATE_VERSION}")
        directory = users if users is not None else UserDirectory(complete=version == 3)
        if version == 3:
            for uid, (loc, caps) in data["users"].items():
                directory.put(uid, User(loc, tuple(caps)))
            licences = _licence_counts(directory.changed)
        else:
            licences = {(cap, loc): n for cap, loc, n in data["licences"]}
        lots = [Lot(*row) for row in data["lots"]]
        return cls(
            tenant_id=data["tenant_id"],
            country=data["country"],
            currency=data["currency"],
            exponent=data["exponent"],
            billing_model=data["billing_model"],
            low_balance_threshold_minor=data["low_balance_threshold_minor"],
            licences=licences,
            lots=lots,
            balance_minor=sum(lot.remaining_minor for lot in lots),
            pools={(c, loc, s, m): PoolUse(used, peak) for c, loc, s, m, used, peak in data["pools"]},
            frozen={
                month: {(cap, loc): n for cap, loc, n in rows} for month, rows in data["frozen"].items()
            },
            open_month=data["open_month"],
            auto_recharge=AutoRecharge(*data["auto_recharge"]),
            low_armed=data["low_armed"],
            funded_minor=data["funded_minor"],
            debited_minor=data["debited_minor"],
            expired_minor=data["expired_minor"],
            now_us=data["now_us"],
            users=directory,
            ids=ids if ids is not None else IdMemory(),
        )


def check_invariants(state: TenantState) -> None:
    """Assert what must always hold for a tenant; a failure is a bug, never bad input."""
    lots = state.lots
    assert all(0 < lot.remaining_minor <= lot.amount_minor for lot in lots), "a lot is empty, negative or overfilled"
    assert all(lot.purchased_us < lot.expires_us for lot in lots), "a lot expires before its purchase"
    order = [(lot.purchased_us, lot.lot_id) for lot in lots]
    assert order == sorted(order), "lots are not oldest first"
    assert all(lot.expires_us > state.now_us for lot in lots), "an expired lot still holds money"
    assert state.balance_minor == sum(lot.remaining_minor for lot in lots), "balance != sum of lots"
    assert state.balance_minor >= 0, "balance below zero"
    assert state.funded_minor == state.debited_minor + state.expired_minor + state.balance_minor, (
        f"ledger does not balance: funded {state.funded_minor} != debited {state.debited_minor}"
        f" + expired {state.expired_minor} + balance {state.balance_minor}"
    )
    for key, use in state.pools.items():
        assert 0 <= use.used_s <= use.peak_size_s, f"pool {key} used {use.used_s} s of {use.peak_size_s} s"
    ar = state.auto_recharge
    if ar.pending_request_id is not None:
        assert ar.pending_request_id == request_id(state.tenant_id, ar.sequence), "pending is not the last request"
    assert all(n > 0 for n in state.licences.values()), "a licence count is zero or negative"
    everyone = state.users.everyone()
    if everyone is not None:  # the directory holds every user (no store behind it)
        assert state.licences == _licence_counts(everyone), "licence counts drifted from the users"


def _licence_counts(users: dict[str, User]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for user in users.values():
        for cap in user.capabilities:
            key = (cap, user.usage_location)
            counts[key] = counts.get(key, 0) + 1
    return counts


def is_request_id(tenant_id: str, input_id: str) -> bool:
    """Whether ``input_id`` has the form of the tenant's recharge request ids (which no
    command id may have)."""
    return input_id.startswith(f"{tenant_id}/recharge/")


def request_sequence(tenant_id: str, input_id: str) -> int | None:
    """``n`` when ``input_id`` is exactly the tenant's ``n``-th request id (n ≥ 1,
    written as :func:`request_id` writes it), else None."""
    if not is_request_id(tenant_id, input_id):
        return None
    digits = input_id[len(tenant_id) + len("/recharge/"):]
    if not (digits.isascii() and digits.isdigit()) or digits.startswith("0") or len(digits) > 18:
        return None
    return int(digits)


def request_id(tenant_id: str, sequence: int) -> str:
    """The deterministic id of a tenant's ``sequence``-th recharge request."""
    return f"{tenant_id}/recharge/{sequence}"
