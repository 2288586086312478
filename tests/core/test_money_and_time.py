"""Money and time primitives: integers only, one rounding rule, calendar-exact expiry."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rater.core.money import MoneyFormatError, div_round_half_up, format_decimal, parse_decimal
from rater.core.times import TimeFormatError, add_months_clamped, format_time_us, month_of, parse_time_us


@pytest.mark.parametrize(("text", "digits", "units"), [
    ("12.34", 2, 1234), ("0", 2, 0), ("5", 0, 5), ("0.5", 2, 50), ("1.234", 3, 1234), ("0.000001", 6, 1),
])
def test_amounts_parse_to_integer_minor_units(text: str, digits: int, units: int) -> None:
    assert parse_decimal(text, digits) == units


@pytest.mark.parametrize(("text", "digits"), [
    ("0.001", 2), ("1.5", 0), ("-1.00", 2), ("1e3", 2), ("01.00", 2), ("", 2), (" 1", 2), ("1.", 2), ("NaN", 2),
])
def test_an_amount_with_more_decimals_than_the_currency_or_not_a_decimal_is_refused(text: str, digits: int) -> None:
    with pytest.raises(MoneyFormatError):
        parse_decimal(text, digits)


def test_a_float_is_never_accepted_as_money() -> None:
    with pytest.raises(MoneyFormatError):
        parse_decimal(1.5, 2)


@given(st.integers(min_value=0, max_value=10**15), st.integers(min_value=0, max_value=6))
def test_format_and_parse_are_inverse(units: int, digits: int) -> None:
    assert parse_decimal(format_decimal(units, digits), digits) == units


@given(st.integers(min_value=0, max_value=10**18), st.integers(min_value=1, max_value=10**9))
def test_rounding_is_half_up_like_decimal(numerator: int, denominator: int) -> None:
    expected = (Decimal(numerator) / Decimal(denominator)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    assert div_round_half_up(numerator, denominator) == int(expected)


def test_times_normalise_offsets_to_utc_and_keep_microseconds() -> None:
    at = parse_time_us("2026-11-23T10:00:00.1234567+02:00")
    assert format_time_us(at) == "2026-11-23T08:00:00.123456Z"
    assert format_time_us(parse_time_us("2026-11-23T10:00:00Z")) == "2026-11-23T10:00:00Z"


@pytest.mark.parametrize("text", ["2026-11-23 10:00:00Z", "2026-11-23T10:00:00", "2026-13-01T00:00:00Z", "x"])
def test_a_time_without_offset_or_invalid_is_refused(text: str) -> None:
    with pytest.raises(TimeFormatError):
        parse_time_us(text)


def test_billing_month_is_the_utc_month_of_the_start() -> None:
    assert month_of(parse_time_us("2026-12-01T00:30:00+01:00")) == "2026-11"


@pytest.mark.parametrize(("purchase", "expiry"), [
    ("2028-02-29T12:00:00Z", "2029-02-28T12:00:00Z"),
    ("2026-01-31T00:00:00Z", "2027-01-31T00:00:00Z"),
    ("2026-11-23T08:15:00.5Z", "2027-11-23T08:15:00.500000Z"),
])
def test_lot_expiry_is_twelve_calendar_months_clamped_to_month_end(purchase: str, expiry: str) -> None:
    assert format_time_us(add_months_clamped(parse_time_us(purchase), 12)) == expiry
