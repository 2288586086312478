"""A tenant's state, shaped like a ledger: lots are entries, totals are checked against them.

``to_dict`` / ``from_dict`` give a plain-JSON form for the state store; the shape is
versioned by ``STATE_VERSION`` so a worker refuses a store it cannot read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATE_VERSION = 1


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
    """A licensed person: where they use the service and the capabilities they hold."""

    usage_location: str
    capabilities: tuple[str, ...]


@dataclass(slots=True)
class AutoRecharge:
    """Auto-recharge settings of a tenant (amounts in minor units)."""

    enabled: bool = False
    trigger_minor: int = 0
    recharge_minor: int = 0
    pending_request_id: str | None = None


@dataclass(slots=True)
class TenantState:
    """Everything the rater knows about one tenant."""

    tenant_id: str
    country: str
    currency: str
    exponent: int
    billing_model: str
    low_balance_threshold_minor: int | None = None
    users: dict[str, User] = field(default_factory=dict)
    lots: list[Lot] = field(default_factory=list)
    auto_recharge: AutoRecharge = field(default_factory=AutoRecharge)
    funded_minor: int = 0
    debited_minor: int = 0
    expired_minor: int = 0
    now_us: int = 0
    applied: dict[str, str] = field(default_factory=dict)
    """Input id (``usage_id`` / ``command_id``) → fingerprint of what was applied."""

    @property
    def balance_minor(self) -> int:
        """The credits balance: the sum of the lots' remainders."""
        return sum(lot.remaining_minor for lot in self.lots)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for the state store."""
        return {
            "v": STATE_VERSION,
            "tenant_id": self.tenant_id,
            "country": self.country,
            "currency": self.currency,
            "exponent": self.exponent,
            "billing_model": self.billing_model,
            "low_balance_threshold_minor": self.low_balance_threshold_minor,
            "users": {
                uid: [u.usage_location, list(u.capabilities)] for uid, u in self.users.items()
            },
            "lots": [
                [lot.lot_id, lot.amount_minor, lot.remaining_minor, lot.purchased_us, lot.expires_us]
                for lot in self.lots
            ],
            "auto_recharge": [
                self.auto_recharge.enabled,
                self.auto_recharge.trigger_minor,
                self.auto_recharge.recharge_minor,
                self.auto_recharge.pending_request_id,
            ],
            "funded_minor": self.funded_minor,
            "debited_minor": self.debited_minor,
            "expired_minor": self.expired_minor,
            "now_us": self.now_us,
            "applied": self.applied,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TenantState:
        """Inverse of :meth:`to_dict`; refuses a state of another version."""
        if data.get("v") != STATE_VERSION:
            raise ValueError(f"tenant state version {data.get('v')!r}, expected {STATE_VERSION}")
        enabled, trigger, recharge, pending = data["auto_recharge"]
        return cls(
            tenant_id=data["tenant_id"],
            country=data["country"],
            currency=data["currency"],
            exponent=data["exponent"],
            billing_model=data["billing_model"],
            low_balance_threshold_minor=data["low_balance_threshold_minor"],
            users={uid: User(loc, tuple(caps)) for uid, (loc, caps) in data["users"].items()},
            lots=[Lot(*row) for row in data["lots"]],
            auto_recharge=AutoRecharge(enabled, trigger, recharge, pending),
            funded_minor=data["funded_minor"],
            debited_minor=data["debited_minor"],
            expired_minor=data["expired_minor"],
            now_us=data["now_us"],
            applied=dict(data["applied"]),
        )


def check_invariants(state: TenantState) -> None:
    """Assert what must always hold for a tenant; a failure is a bug, never bad input."""
    assert all(lot.remaining_minor >= 0 for lot in state.lots), "a lot went negative"
    assert all(lot.remaining_minor <= lot.amount_minor for lot in state.lots), "lot overfilled"
    assert state.balance_minor >= 0, "balance below zero"
    assert state.funded_minor == state.debited_minor + state.expired_minor + state.balance_minor, (
        f"ledger does not balance: funded {state.funded_minor} != debited {state.debited_minor}"
        f" + expired {state.expired_minor} + balance {state.balance_minor}"
    )
