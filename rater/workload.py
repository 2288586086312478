"""A seeded, realistic mixed workload: tenants, their users and licences, funds and
auto-recharge settings, and CDRs — as wire-format events (the JSON of SPEC §2).

Used by the benchmark (``benchmarks/rating.py``) and the demo traffic. The same seed gives
the same events.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rater.core.times import format_time_us, parse_time_us

# Where tenants are, their currency, and sample numbers: (fixed prefix, mobile prefix,
# toll-free prefix, national significant number length after the prefix).
COUNTRIES: dict[str, tuple[str, str, str, str, int]] = {
    #      currency  fixed        mobile        toll-free   digits after the prefix
    "US": ("USD", "+1212555", "+1917555", "+1800555", 4),
    "CA": ("CAD", "+1416555", "+1647555", "+1888555", 4),
    "PR": ("USD", "+1787555", "+1939555", "+1877555", 4),
    "GB": ("GBP", "+44207946", "+447700900", "+44800", 6),
    "DE": ("EUR", "+4930", "+49151", "+49800", 8),
    "FR": ("EUR", "+3314", "+336", "+33800", 8),
    "NL": ("EUR", "+3120", "+316", "+31800", 7),
    "IE": ("EUR", "+3531", "+35387", "+3531800", 6),
    "ES": ("EUR", "+3491", "+346", "+34900", 7),
    "IT": ("EUR", "+3906", "+393", "+39800", 7),
    "PL": ("PLN", "+4822", "+4850", "+48800", 7),
    "SE": ("SEK", "+468", "+4670", "+4620", 7),
    "AU": ("AUD", "+612", "+614", "+611800", 8),
    "JP": ("JPY", "+813", "+8190", "+81120", 8),
    "IN": ("INR", "+9111", "+9198", "+911800", 8),
    "BR": ("BRL", "+5511", "+55119", "+550800", 8),
    "MX": ("MXN", "+5255", "+52155", "+52800", 8),
}
WEIGHTS = {"US": 30, "GB": 10, "DE": 8, "CA": 6, "FR": 6, "AU": 5, "IN": 5, "JP": 4, "NL": 4, "ES": 4, "IT": 4,
           "BR": 3, "MX": 3, "PL": 2, "SE": 2, "IE": 2, "PR": 2}
LICENCE_MIXES = (  # (weight, capabilities)
    (40, ("MCOPSTN1", "MCOPSTNPP")),
    (15, ("MCOPSTN1",)),
    (10, ("MCOPSTN2", "MCOPSTNPP", "MCOMEETADD")),
    (10, ("PAYG",)),
    (8, ("MCOPSTN5", "MCOPSTNPP")),
    (7, ("MCOPSTN6", "MCOMEETADD", "MCOMEETACPEA")),
    (10, ("MCOMEETADD", "MCOPSTNPP")),
)


@dataclass
class Tenant:
    tenant_id: str
    country: str
    currency: str
    users: list[tuple[str, str]] = field(default_factory=list)
    """(user id, usage location)."""


def _envelope(kind: str, event_id: str, tenant_id: str, at: str) -> dict[str, Any]:
    return {"type": kind, "schema_version": 1, "event_id": event_id, "tenant_id": tenant_id, "occurred_at": at}


def _number(rng: random.Random, country: str, kind: int) -> str:
    """A number of ``country``: kind 0 fixed, 1 mobile, 2 toll-free."""
    _currency, fixed, mobile, toll_free, digits = COUNTRIES[country]
    prefix = (fixed, mobile, toll_free)[kind]
    return prefix + "".join(rng.choice("0123456789") for _ in range(digits))


class Workload:
    """Tenants and users drawn once from ``seed``; setup commands and CDRs on demand."""

    def __init__(self, tenants: int, users: int, seed: int = 1, start: str = "2026-11-02T08:00:00Z") -> None:
        self.rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not secrets
        self.start_us = parse_time_us(start)
        countries, weights = zip(*WEIGHTS.items(), strict=True)
        self.tenants: list[Tenant] = []
        for n in range(tenants):
            country = self.rng.choices(countries, weights)[0]
            self.tenants.append(Tenant(f"tenant-{n:05d}", country, COUNTRIES[country][0]))
        for n in range(users):
            tenant = self.tenants[n % tenants]
            travelling = self.rng.random() < 0.05
            location = self.rng.choice(countries) if travelling else tenant.country
            tenant.users.append((f"user-{n:06d}", location))
        self.licences = {uid: self.rng.choices([m for _, m in LICENCE_MIXES], [w for w, _ in LICENCE_MIXES])[0]
                         for t in self.tenants for uid, _ in t.users}

    def setup(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(topic, event) commands that create every tenant, its licences, funds and
        auto-recharge."""
        at = format_time_us(self.start_us - 86_400_000_000)
        for tenant in self.tenants:
            tid = tenant.tenant_id
            yield "account-commands", {
                **_envelope("tenant_upserted", f"{tid}/create", tid, at), "command_id": f"{tid}/create",
                "country": tenant.country, "currency": tenant.currency, "billing_model":
                    "postpaid_overage" if self.rng.random() < 0.1 else "prepaid_credits",
            }
            for uid, location in tenant.users:
                yield "account-commands", {
                    **_envelope("licenses_assigned", f"{tid}/lic/{uid}", tid, at), "command_id": f"{tid}/lic/{uid}",
                    "user_id": uid, "usage_location": location, "capabilities": list(self.licences[uid]),
                }
            big = "100000" if tenant.currency in ("JPY", "INR") else "500.00"
            yield "account-commands", {
                **_envelope("funds_added", f"{tid}/funds/1", tid, at), "command_id": f"{tid}/funds/1",
                "amount": big, "currency": tenant.currency, "purchased_at": at,
            }
            trigger, recharge = ("10000", "50000") if tenant.currency in ("JPY", "INR") else ("50.00", "200.00")
            yield "account-commands", {
                **_envelope("auto_recharge_configured", f"{tid}/ar", tid, at), "command_id": f"{tid}/ar",
                "enabled": True, "trigger_amount": trigger, "recharge_amount": recharge,
            }

    def cdrs(self, count: int, per_second: float = 200.0) -> Iterator[dict[str, Any]]:
        """``count`` CDRs, starting at the workload's start, ``per_second`` of them per
        second of event time: 65 % domestic outbound, 10 % international, 12 % inbound,
        6 % conference dial-out, 4 % bots, 2 % toll-free inbound, 1 % emergency."""
        rng = self.rng
        kinds = ("dom", "intl", "in", "conf", "bot", "tf", "sos")
        weights = (65, 10, 12, 6, 4, 2, 1)
        countries = list(COUNTRIES)
        step_us = round(1_000_000 / per_second)
        for n in range(count):
            tenant = rng.choice(self.tenants)
            uid, location = rng.choice(tenant.users)
            kind = rng.choices(kinds, weights)[0]
            user: str | None = uid
            number_type = "geographic"
            call_type = "user_out"
            if kind == "dom":
                destination = _number(rng, location, rng.choice((0, 0, 1)))
            elif kind == "intl":
                destination = _number(rng, rng.choice(countries), rng.choice((0, 1)))
            elif kind == "in":
                call_type = rng.choice(("user_in", "user_in", "conf_in", "ucap_in"))
                destination = _number(rng, tenant.country, 0)
                user = None if call_type == "ucap_in" else uid
            elif kind == "conf":
                call_type = "conf_out"
                destination = _number(rng, rng.choice(countries), rng.choice((0, 1)))
            elif kind == "bot":
                call_type, user = "ucap_out", None
                destination = _number(rng, tenant.country, 0)
            elif kind == "tf":
                call_type, number_type = "user_in", "toll_free"
                destination = _number(rng, tenant.country, 2)
            else:
                destination = "112" if location not in ("US", "CA", "PR", "MX") else "911"
            seconds = 0 if rng.random() < 0.05 else int(rng.expovariate(1 / 180)) + 1
            end_us = self.start_us + n * step_us
            start_us = end_us - seconds * 1_000_000
            usage_id = f"{tenant.tenant_id}/cdr/{n}"
            yield {
                **_envelope("cdr", usage_id, tenant.tenant_id, format_time_us(end_us)),
                "usage_id": usage_id, "call_id": f"call-{n}", "conference_id": f"conf-{n}" if kind == "conf" else None,
                "user_id": user, "user_location": location, "call_type": call_type, "number_type": number_type,
                "caller_number": _number(rng, location, 0), "destination_number": destination,
                "start_time": format_time_us(start_us), "end_time": format_time_us(end_us),
                "duration_seconds": seconds,
            }
