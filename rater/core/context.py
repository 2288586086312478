"""What rating reads but never changes: tariffs, catalog, minor units, country table and
the time limits of SPEC §1.4–§1.6."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rater.core.countries import CountryPrefixes
from rater.core.plans import Catalog
from rater.core.tariff import Tariffs

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR


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
