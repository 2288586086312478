"""Money and time primitives: integers only, one rounding rule, calendar-exact expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rater.core.money import MoneyFormatError, div_round_half_up, format_decimal, parse_decimal
from rater.core.times import (
    MAX_TIME_US,
    MIN_TIME_US,
    TimeFormatError,
    add_months_clamped,
    format_time_us,
    month_of,
    parse_time_us,
    parse_time_us_rfc3339,
)


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


_DIGITS = st.sampled_from("0123456789")
_PART = st.text(_DIGITS, min_size=1, max_size=3) | st.sampled_from(["٣", "²", " 1", "+1", "1_0", ""])


@st.composite
def _times(draw: st.DrawFn) -> str:
    """Times near the CDR form: valid ones and every way a part can be off by a little."""
    year = draw(st.sampled_from(["2026", "2028", "1970", "0000", "9999", "202", "2O26"]))
    month, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
    clock = [draw(st.integers(0, 61)) for _ in range(3)]
    text = f"{year}-{month:02d}-{day:02d}" + draw(st.sampled_from("Tt T"))
    text += ":".join(f"{n:02d}" for n in clock) if draw(st.booleans()) else draw(_PART) + ":00:" + draw(_PART)
    if draw(st.booleans()):
        text += draw(st.sampled_from([".", ".x", ".٣"])) + draw(st.text(_DIGITS, max_size=11))
    return text + draw(st.sampled_from(["Z", "z", "+02:00", "-00:30", "", "ZZ", "Z\n", "+24:00"]))


@pytest.mark.parametrize("text", [
    "2026-11-02T07:54:54Z", "2026-11-02T07:54:54.005Z", "2026-11-02T07:54:54.123456789Z", "2028-02-29T00:00:00Z",
    "2026-02-29T00:00:00Z", "2026-11-02T24:00:00Z", "2026-11-02T23:59:60Z", "2026-11-02T07:54:54.Z",
    "2026-11-02T07:54:54.1234567890Z", "2026-11-02T7:54:54Z", "2026-11-02T07:54:54.-1Z",
])
def test_cdr_times_read_fast_or_refused_as_the_rfc_3339_parser_does(text: str) -> None:
    _agree(text)


@settings(max_examples=1000)
@given(_times())
def test_the_fast_reading_of_cdr_times_agrees_with_the_rfc_3339_parser(text: str) -> None:
    _agree(text)


def _agree(text: str) -> None:
    try:
        want: int | None = parse_time_us_rfc3339(text)  # also caches a valid date: the fast path is taken next
    except TimeFormatError:
        want = None
    try:
        got: int | None = parse_time_us(text)
    except TimeFormatError:
        got = None
    assert got == want


@settings(max_examples=1000)
@given(st.integers(min_value=-(10**15), max_value=253_402_300_799_999_999))  # 1938 .. 9999-12-31T23:59:59.999999
def test_times_format_like_datetime_isoformat(at_us: int) -> None:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=at_us)
    want = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{moment.microsecond:06d}" if moment.microsecond else "") + "Z"
    assert format_time_us(at_us) == want
    if MIN_TIME_US <= at_us < MAX_TIME_US:
        assert parse_time_us(want) == at_us
    else:  # formats (the shell clamps what it formats), but no input may carry it
        with pytest.raises(TimeFormatError, match="outside the times"):
            parse_time_us(want)


@pytest.mark.parametrize(("text", "at_us"), [
    ("1970-01-01T00:00:00Z", MIN_TIME_US),
    ("1970-01-01T01:00:00+01:00", MIN_TIME_US),
    ("8999-12-31T23:59:59.999999Z", MAX_TIME_US - 1),
    ("8999-12-31T23:59:59.999999+00:00", MAX_TIME_US - 1),
    ("1969-12-31T23:59:59.999999Z", None),
    ("1970-01-01T00:30:00+01:00", None),
    ("9000-01-01T00:00:00Z", None),
    ("8999-12-31T23:00:00-23:59", None),
    ("0001-01-01T00:00:00+00:01", None),  # year 0 in UTC: past datetime's start
    ("9999-12-31T23:59:59-00:01", None),  # year 10000 in UTC: past datetime's end
    ("9999-12-31T00:00:00Z", None),  # in range for datetime, but a lot bought then would expire in 10000
    ("2026-11-23T10:00:00Z\n", None),
    ("2026-11-23T10:00:00+01:00\n", None),
])
def test_input_times_lie_between_1970_and_the_year_9000_and_end_where_they_end(text: str, at_us: int | None) -> None:
    for parse in (parse_time_us, parse_time_us_rfc3339):
        if at_us is None:
            with pytest.raises(TimeFormatError):
                parse(text)
        else:
            assert parse(text) == at_us


def test_billing_month_is_the_utc_month_of_the_start() -> None:
    assert month_of(parse_time_us("2026-12-01T00:30:00+01:00")) == "2026-11"


@pytest.mark.parametrize(("purchase", "expiry"), [
    ("2028-02-29T12:00:00Z", "2029-02-28T12:00:00Z"),
    ("2026-01-31T00:00:00Z", "2027-01-31T00:00:00Z"),
    ("2026-11-23T08:15:00.5Z", "2027-11-23T08:15:00.500000Z"),
])
def test_lot_expiry_is_twelve_calendar_months_clamped_to_month_end(purchase: str, expiry: str) -> None:
    assert format_time_us(add_months_clamped(parse_time_us(purchase), 12)) == expiry


@pytest.mark.parametrize("text", ["5.00\n", "5\n", "5.00 ", " 5.00", "5\n.00", "٥.00", "5.00\r\n"])
def test_an_amount_with_whitespace_or_other_digits_is_refused(text: str) -> None:
    with pytest.raises(MoneyFormatError):
        parse_decimal(text, 2)
