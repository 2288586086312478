"""One longest-prefix lookup per destination for everything rating asks of a number.

A destination's country (the E.164 country table), whether it is premium (the catalog)
and its rates (one tariff version) each come from a longest-prefix match on a different
table. The index merges the tables: for every prefix of any of them it stores the
answers of all of them, so the longest indexed prefix of a number carries every answer
at once. (If ``p`` is the longest indexed prefix of a number, each table's longest match
for the number is its longest match for ``p``: every shorter prefix of the number is a
prefix of ``p``.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rater.core.countries import CountryPrefixes
from rater.core.plans import Catalog
from rater.core.tariff import Rate, Tariff


@dataclass(frozen=True, slots=True)
class Destination:
    """What rating needs to know about a destination number."""

    country: str | None
    premium: bool
    rates: Mapping[tuple[str, str], Rate]
    """(currency, call class) → rate of the longest matching tariff prefix."""


NOWHERE = Destination(None, False, {})


class DestinationIndex:
    """Merged longest-prefix index of the country table, the premium prefixes and one
    tariff version."""

    __slots__ = ("_by_prefix", "_lengths")
    _lengths: dict[str, tuple[int, ...]]
    """First digit → the prefix lengths indexed under it, longest first (NANP "1" has
    few, so a US number is found in two or three probes instead of seven)."""

    def __init__(self, countries: CountryPrefixes, catalog: Catalog, tariff: Tariff) -> None:
        prefixes: set[str] = set(countries.by_prefix) | set(catalog.premium_prefixes)
        for table in tariff.rates.values():
            prefixes.update(table)
        premium_lengths = sorted({len(p) for p in catalog.premium_prefixes})
        by_prefix: dict[str, Destination] = {}
        for prefix in prefixes:
            number = "+" + prefix
            rates = {}
            for currency, call_class in tariff.rates:
                rate = tariff.rate_for(currency, call_class, number)
                if rate is not None:
                    rates[(currency, call_class)] = rate
            premium = any(prefix[:n] in catalog.premium_prefixes for n in premium_lengths if n <= len(prefix))
            by_prefix[prefix] = Destination(countries.country_of(number), premium, rates)
        self._by_prefix = by_prefix
        catch_all = (0,) if "" in by_prefix else ()
        self._lengths = {
            lead: (*sorted({len(p) for p in by_prefix if p[:1] == lead}, reverse=True), *catch_all)
            for lead in "0123456789"
        }

    def lookup(self, number: str) -> Destination:
        """The answers for an E.164 number (``NOWHERE`` for anything else)."""
        if not number.startswith("+"):
            return NOWHERE
        digits = number[1:]
        size = len(digits)
        by_prefix = self._by_prefix
        for length in self._lengths.get(digits[:1], ()):
            if length <= size:
                found = by_prefix.get(digits[:length])
                if found is not None:
                    return found
        return NOWHERE
