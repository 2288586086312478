"""The plan catalog as core data (SPEC §1.1): capabilities, their monthly allotments,
the Zone A list, premium/excluded prefixes and emergency numbers.

The catalog is read from a versioned data file by ``rater.catalog``; the core only
reads these frozen objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

POOL_SCOPES = ("domestic", "international", "zone_a")
CREDIT_FAMILIES = ("user_out", "conf_out")
ANY_LOCATION = "*"


@dataclass(frozen=True, slots=True)
class Allotment:
    """Included minutes per licence per month for one pool scope.

    ``minutes`` maps a usage location (ISO 3166 alpha-2) to minutes; the key ``"*"``
    applies to every location not listed. A tenant-wide pool (``zone_a``) is keyed by
    location ``"*"`` and sized by every licence in the tenant.
    """

    scope: str
    minutes: Mapping[str, int]

    def minutes_for(self, location: str) -> int:
        """Minutes per licence for users of ``location`` (0 where the plan has none)."""
        found = self.minutes.get(location)
        return self.minutes.get(ANY_LOCATION, 0) if found is None else found


@dataclass(frozen=True, slots=True)
class Capability:
    """A licence: the pools it brings and the call families it lets pay from credits."""

    id: str
    name: str
    pools: tuple[Allotment, ...] = ()
    credits_for: frozenset[str] = frozenset()

    def allotment(self, scope: str) -> Allotment | None:
        """This capability's allotment for a pool scope, if any."""
        for allotment in self.pools:
            if allotment.scope == scope:
                return allotment
        return None


@dataclass(frozen=True, slots=True)
class Catalog:
    """One version of the plan catalog."""

    version: str
    capabilities: tuple[Capability, ...]
    """In catalog order: a user holding several calling plans draws from them in this order."""
    zone_a: frozenset[str]
    premium_prefixes: frozenset[str]
    """E.164 digit prefixes (no ``+``) that never draw from pools."""
    emergency: frozenset[str]
    """Destinations that are emergency calls: short codes and their E.164 forms."""
    by_id: Mapping[str, Capability] = field(init=False)
    _premium_lengths: tuple[int, ...] = field(init=False)
    _memo: dict[tuple[tuple[str, ...], str], Any] = field(init=False, repr=False, compare=False)
    """Answers of :meth:`pool_order` / :meth:`may_pay_from_credits` by licence set: a
    cache of pure functions of this frozen catalog."""

    allotments: Mapping[tuple[str, str], Allotment] = field(init=False, repr=False, compare=False)
    """(capability id, pool scope) → allotment."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_memo", {})
        object.__setattr__(self, "by_id", {cap.id: cap for cap in self.capabilities})
        object.__setattr__(self, "allotments", {(cap.id, a.scope): a for cap in self.capabilities for a in cap.pools})
        lengths = sorted({len(p) for p in self.premium_prefixes}, reverse=True)
        object.__setattr__(self, "_premium_lengths", tuple(lengths))

    def is_premium(self, number: str) -> bool:
        """Whether an E.164 destination is premium / excluded from pools."""
        digits = number[1:] if number.startswith("+") else number
        prefixes = self.premium_prefixes
        return any(digits[:n] in prefixes for n in self._premium_lengths if n <= len(digits))

    def is_emergency(self, number: str) -> bool:
        """Whether a destination is one of the catalog's emergency numbers."""
        return number in self.emergency

    def pool_capabilities(self, scope: str) -> tuple[Capability, ...]:
        """The capabilities with an allotment for ``scope``, in catalog order."""
        return tuple(cap for cap in self.capabilities if cap.allotment(scope) is not None)

    def pool_order(self, held: tuple[str, ...], scope: str) -> tuple[str, ...]:
        """Of the capabilities ``held``, those with a ``scope`` pool, in catalog order
        (the order a user's pools are drawn); every capability when ``held`` is ``("*",)``."""
        key = (held, scope)
        found: tuple[str, ...] | None = self._memo.get(key)
        if found is None:
            found = tuple(cap.id for cap in self.capabilities
                          if (held == (ANY_LOCATION,) or cap.id in held) and cap.allotment(scope) is not None)
            self._memo[key] = found
        return found

    def may_pay_from_credits(self, held: tuple[str, ...], family: str) -> bool:
        """Whether one of the capabilities ``held`` lets ``family`` calls pay from credits."""
        key = (held, "credits:" + family)
        found: bool | None = self._memo.get(key)
        if found is None:
            found = any(family in self.by_id[c].credits_for for c in held if c in self.by_id)
            self._memo[key] = found
        return found
