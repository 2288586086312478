"""Rates by destination prefix and the arithmetic of billing increments (SPEC §1.3).

A :class:`Tariff` maps (currency, call class, E.164 digit prefix) to a :class:`Rate`;
the longest prefix of the destination's digits wins, and the empty prefix is a catch-all.
A row may price only some of the version's currencies: the longest prefix of the call
class decides whatever currencies it has, and a currency it lacks has no rate there (no
shorter prefix stands in for it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rater.core.money import MICRO_DIGITS, div_round_half_up

CALL_CLASSES = ("outbound", "toll_free_inbound", "conf_dialout")


@dataclass(frozen=True, slots=True)
class Rate:
    """A per-minute rate with its billing increment ``first_s``/``next_s`` and a
    connection fee in the currency's minor units."""

    rate_micro_per_min: int
    first_s: int
    next_s: int
    connection_fee_minor: int = 0


@dataclass(frozen=True, slots=True)
class Tariff:
    """One version of the rates, in force from ``effective_from_us``."""

    version: str
    effective_from_us: int
    rates: dict[tuple[str, str], dict[str, Rate]] = field(default_factory=dict)
    """(currency, call class) → digit prefix → rate."""
    _prefixes: dict[str, set[str]] = field(init=False, repr=False, compare=False)
    """Call class → every prefix with a rate of that class, in any currency."""
    _lengths: dict[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)
    """Call class → the lengths of its prefixes, longest first."""

    def prefix_for(self, call_class: str, number: str) -> str | None:
        """The longest prefix of ``number`` (E.164 with ``+``) with a ``call_class`` rate in
        any currency."""
        prefixes = self._prefixes.get(call_class)
        if not prefixes:
            return None
        digits = number.removeprefix("+")
        for length in self._lengths[call_class]:
            if length <= len(digits) and digits[:length] in prefixes:
                return digits[:length]
        return None

    def rate_for(self, currency: str, call_class: str, number: str) -> Rate | None:
        """The ``currency`` rate of the longest matching prefix of ``number`` (E.164 with
        ``+``); None when no prefix matches or the longest one has no ``currency`` rate."""
        prefix = self.prefix_for(call_class, number)
        if prefix is None:
            return None
        by_prefix = self.rates.get((currency, call_class))
        return by_prefix.get(prefix) if by_prefix is not None else None

    def __post_init__(self) -> None:
        prefixes: dict[str, set[str]] = {}
        for (_currency, call_class), table in self.rates.items():
            prefixes.setdefault(call_class, set()).update(table)
        lengths = {call_class: tuple(sorted({len(p) for p in found}, reverse=True))
                   for call_class, found in prefixes.items()}
        object.__setattr__(self, "_prefixes", prefixes)
        object.__setattr__(self, "_lengths", lengths)


@dataclass(frozen=True, slots=True)
class Tariffs:
    """Every version of the tariff; a call is rated by the version in force at its start."""

    versions: tuple[Tariff, ...]

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.versions, key=lambda t: t.effective_from_us))
        starts = [t.effective_from_us for t in ordered]
        if len(set(starts)) != len(starts):
            raise ValueError("two tariff versions take effect at the same instant")
        object.__setattr__(self, "versions", ordered)

    def at(self, start_us: int) -> Tariff | None:
        """The version in force at ``start_us`` (None before the first one)."""
        found = None
        for tariff in self.versions:
            if tariff.effective_from_us > start_us:
                break
            found = tariff
        return found


def charged_seconds(duration_s: int, first_s: int, next_s: int) -> int:
    """Seconds billed for a call part of ``duration_s`` under increment ``first/next``.

    ``first`` if d ≤ first, else first + ceil((d − first) / next) · next; 0 s is free.
    """
    if duration_s <= 0:
        return 0
    if duration_s <= first_s:
        return first_s
    extra = duration_s - first_s
    return first_s + -(-extra // next_s) * next_s


def usage_cost_minor(rate: Rate, seconds: int, exponent: int) -> int:
    """The cost of ``seconds`` already-incremented seconds at ``rate``, rounded half-up
    once to the currency's minor unit (the connection fee is added by the caller)."""
    micro_per_minor = 10 ** (MICRO_DIGITS - exponent)
    return div_round_half_up(rate.rate_micro_per_min * seconds, 60 * micro_per_minor)
