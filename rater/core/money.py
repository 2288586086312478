"""Money as integers: minor units for amounts, micro-units for rates; one rounding rule.

Amounts travel as decimal strings (``"12.34"``) and live as integers of the currency's
minor unit (cents). Rates may carry up to 6 decimals and live as integers of millionths
of the currency unit (``rate_micro``). Nothing here ever touches a float.
"""

from __future__ import annotations

import re

MICRO_DIGITS = 6
_DECIMAL = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]+))?")  # fullmatch: ``$`` would take a final newline


class MoneyFormatError(ValueError):
    """A decimal string that is not a valid non-negative amount for its precision."""


def parse_decimal(text: object, digits: int) -> int:
    """Parse a non-negative decimal string into an integer of ``10**-digits`` units.

    ``parse_decimal("12.34", 2) == 1234``; more decimals than ``digits`` is an error
    (``"0.001"`` is not an amount of a 2-decimal currency), never a silent rounding.
    """
    if not isinstance(text, str):
        raise MoneyFormatError(f"amount must be a decimal string, got {type(text).__name__}")
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise MoneyFormatError(f"not a non-negative decimal amount: {text!r}")
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) > digits:
        raise MoneyFormatError(f"{text!r} has {len(fraction)} decimals; at most {digits} allowed")
    units: int = int(whole) * 10**digits + int(fraction.ljust(digits, "0") or "0")
    return units


def format_decimal(units: int, digits: int) -> str:
    """Format an integer of ``10**-digits`` units as a decimal string with ``digits``
    decimals: ``format_decimal(1234, 2) == "12.34"``, ``format_decimal(5, 0) == "5"``."""
    if digits == 2 and units >= 0:  # the common case, on the rating hot path
        cents = units % 100  # str() and + rather than a format spec: mypyc compiles them natively
        return str(units // 100) + (".0" if cents < 10 else ".") + str(cents)
    sign = "-" if units < 0 else ""
    units = abs(units)
    if digits == 0:
        return f"{sign}{units}"
    whole, fraction = divmod(units, 10**digits)
    return f"{sign}{whole}.{fraction:0{digits}d}"


def div_round_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half-up, for non-negative integers.

    The one rounding rule of the rater: a call's charge is rounded once, here.
    """
    if numerator < 0 or denominator <= 0:
        raise ValueError("div_round_half_up takes a non-negative numerator and positive denominator")
    quotient, remainder = divmod(numerator, denominator)
    return quotient + (1 if 2 * remainder >= denominator else 0)
