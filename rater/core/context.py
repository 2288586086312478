"""What rating reads but never changes: tariffs, catalog, minor units, country table and
the time limits of SPEC §1.4–§1.6."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rater.core.countries import CountryPrefixes
from rater.core.destinations import Destination, DestinationIndex
from rater.core.plans import Catalog
from rater.core.tariff import Tariff, Tariffs

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR
MAX_GRACE_US = 28 * US_PER_DAY


@dataclass(frozen=True, slots=True)
class RatingContext:
    """Read-only inputs of the core besides the tenant's state and the input itself."""

    tariffs: Tariffs
    catalog: Catalog
    exponents: Mapping[str, int]
    """ISO 4217 minor-unit digits by currency code."""
    countries: CountryPrefixes = field(default_factory=lambda: CountryPrefixes.of({}))
    grace_us: int = 7 * US_PER_DAY
    """How long after a month ends its CDRs are still rated (later ones are ``late``)."""
    recharge_backoff_us: int = US_PER_HOUR
    """After a failed recharge, how long before a new request."""
    recharge_timeout_us: int = US_PER_DAY
    """A request with no result after this long counts as failed (``timeout``)."""
    future_us: int = US_PER_DAY
    """A CDR ending this far past the partition's latest tick is ``future``."""
    _indexes: dict[int, DestinationIndex] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.grace_us < MAX_GRACE_US:
            # A month's grace must end before the next month closes: the state keeps at
            # most one closed month (its frozen pools and usage ids) beside the open one.
            raise ValueError(f"grace must be at least 0 and under 28 days, got {self.grace_us} µs")
        for name in ("recharge_backoff_us", "recharge_timeout_us", "future_us"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        indexes = {t.effective_from_us: DestinationIndex(self.countries, self.catalog, t)
                   for t in self.tariffs.versions}
        object.__setattr__(self, "_indexes", indexes)

    def destination_at(self, start_us: int, number: str) -> tuple[Tariff | None, Destination]:
        """The tariff version in force at ``start_us`` and what it (with the country
        table and the catalog) says of ``number``."""
        versions = self.tariffs.versions
        if len(versions) == 1 or start_us < versions[1].effective_from_us:
            tariff = versions[0] if start_us >= versions[0].effective_from_us else None
        else:
            tariff = self.tariffs.at(start_us)
        if tariff is None:
            return None, self.destination(None, number)
        return tariff, self._indexes[tariff.effective_from_us].lookup(number)  # one prefix walk

    def destination(self, tariff: Tariff | None, number: str) -> Destination:
        """Country, premium flag and rates of ``number`` under ``tariff`` (one lookup)."""
        if tariff is None:
            return Destination(self.countries.country_of(number), self.catalog.is_premium(number), {})
        return self._indexes[tariff.effective_from_us].lookup(number)
