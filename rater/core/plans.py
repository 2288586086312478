"""The plan catalog as core data (SPEC §1.1): capabilities, their monthly allotments,
the Zone A list, premium/excluded prefixes and emergency numbers.

The catalog is read from a versioned data file by ``rater.catalog``; the core only
reads these frozen objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {cap.id: cap for cap in self.capabilities})
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
