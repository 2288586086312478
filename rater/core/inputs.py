"""Typed inputs of the core: what the edge hands over after a message passed its schema.

Times are already µs UTC integers; money is still the wire's decimal string, because
its precision depends on the tenant's currency, which only the core's state knows.

Commands and recharge results carry their envelope's ``occurred_at`` as ``occurred_us``:
"now" for them on a partition that has no tick yet (SPEC §1.6 decisions in docs/design.md).
It is not part of their content: a command re-sent with another ``occurred_at`` is the
same command (``fingerprint`` leaves it out).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields


@dataclass(slots=True)
class Cdr:
    """A call-detail record (topic ``cdrs``). Never changed once made (not ``frozen``:
    one is made per CDR, and a frozen dataclass's ``__init__`` costs five times more)."""

    tenant_id: str
    usage_id: str
    call_id: str
    conference_id: str | None
    user_id: str | None
    user_location: str
    call_type: str
    number_type: str
    caller_number: str
    destination_number: str
    start_us: int
    end_us: int
    duration_s: int


INBOUND = frozenset({"user_in", "conf_in", "ucap_in"})
"""Call types of calls the tenant receives: free, unless to a toll-free number."""
USER_OUT = frozenset({"user_out", "user_out_conf", "user_out_transfer", "user_out_forwarding"})
"""Call types of calls a user places: the user must be known, and their licences say
which pools and whether credits may pay."""


@dataclass(frozen=True, slots=True)
class TenantUpserted:
    """Create a tenant or update its settings (currency is fixed by the first one)."""

    tenant_id: str
    command_id: str
    country: str
    currency: str
    billing_model: str
    low_balance_threshold: str | None
    occurred_us: int = 0  # the envelope's occurred_at (see the module's docstring)


@dataclass(frozen=True, slots=True)
class LicensesAssigned:
    """Replace a user's set of capabilities and set the usage location."""

    tenant_id: str
    command_id: str
    user_id: str
    usage_location: str
    capabilities: tuple[str, ...]
    occurred_us: int = 0  # the envelope's occurred_at (see the module's docstring)


@dataclass(frozen=True, slots=True)
class UserRemoved:
    """A user leaves the tenant; their licences stop counting."""

    tenant_id: str
    command_id: str
    user_id: str
    occurred_us: int = 0  # the envelope's occurred_at (see the module's docstring)


@dataclass(frozen=True, slots=True)
class FundsAdded:
    """A one-time purchase of credits: a new lot whose id is ``command_id``."""

    tenant_id: str
    command_id: str
    amount: str
    currency: str
    purchased_us: int
    occurred_us: int = 0  # the envelope's occurred_at (see the module's docstring)


@dataclass(frozen=True, slots=True)
class AutoRechargeConfigured:
    """Turn auto-recharge on or off and set its trigger and recharge amounts."""

    tenant_id: str
    command_id: str
    enabled: bool
    trigger_amount: str
    recharge_amount: str
    occurred_us: int = 0  # the envelope's occurred_at (see the module's docstring)


@dataclass(frozen=True, slots=True)
class RechargeResult:
    """The payment processor's answer to a recharge request (topic ``recharge-results``)."""

    tenant_id: str
    request_id: str
    status: str
    amount: str
    currency: str
    reason: str | None
    processed_us: int
    occurred_us: int = 0  # the envelope's occurred_at (see the module's docstring)


Command = TenantUpserted | LicensesAssigned | UserRemoved | FundsAdded | AutoRechargeConfigured
Input = Cdr | Command | RechargeResult


def fingerprint(inp: Input) -> str:
    """A short digest of an input's content, remembered with its id to tell a true repeat
    (same id, same content) from an ``id_conflict`` (same id, other content)."""
    if type(inp) is Cdr:  # the hot path: one f-string instead of reflection
        c = inp  # the ids are the keys it is stored under; repr tells None from "None"
        canonical = (f"{c.call_id}\x1f{c.conference_id!r}\x1f{c.user_id!r}\x1f{c.user_location}\x1f{c.call_type}"
                     f"\x1f{c.number_type}\x1f{c.caller_number}\x1f{c.destination_number}\x1f{c.start_us}"
                     f"\x1f{c.end_us}\x1f{c.duration_s}")
        return hashlib.blake2b(canonical.encode(), digest_size=12).hexdigest()
    canonical = "\x1f".join([type(inp).__name__,
                              *(repr(getattr(inp, f.name)) for f in fields(inp) if f.name != "occurred_us")])
    return hashlib.blake2b(canonical.encode(), digest_size=12).hexdigest()
