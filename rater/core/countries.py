"""Which country an E.164 number belongs to: the longest matching calling-code prefix.

The table is data (``rater/data/country_prefixes.json``, generated from libphonenumber's
metadata by ``tools/gen_country_prefixes.py``): ``"1"`` → US, ``"1416"`` → CA,
``"1787"`` → PR, ``"44"`` → GB, ``"441624"`` → IM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CountryPrefixes:
    """E.164 digit prefix → ISO 3166-1 alpha-2 country."""

    by_prefix: Mapping[str, str]
    longest: int

    @classmethod
    def of(cls, by_prefix: Mapping[str, str]) -> CountryPrefixes:
        """Build from a prefix table (digits only, without ``+``)."""
        return cls(dict(by_prefix), max((len(p) for p in by_prefix), default=0))

    def country_of(self, number: str) -> str | None:
        """The country of an E.164 number (``+14165550100`` → ``CA``), or None."""
        if not number.startswith("+"):
            return None
        digits = number[1:]
        for length in range(min(len(digits), self.longest), 0, -1):
            country = self.by_prefix.get(digits[:length])
            if country is not None:
                return country
        return None
