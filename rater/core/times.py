"""Event time as integers of microseconds since the Unix epoch (UTC).

The core never reads a clock: every time it uses arrives in an input. These helpers
convert RFC 3339 strings to ``*_us`` integers and back, and do the calendar arithmetic
of billing months and lot expiry.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)
US_PER_S = 1_000_000


class TimeFormatError(ValueError):
    """A time string that is not RFC 3339 with an explicit offset."""


def parse_time_us(text: str) -> int:
    """RFC 3339 (``Z`` or an offset; up to 9 fraction digits, truncated to µs) → µs UTC."""
    match = _RFC3339.match(text) if isinstance(text, str) else None
    if match is None:
        raise TimeFormatError(f"not an RFC 3339 time with offset: {text!r}")
    date, clock, fraction, offset = match.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        moment = datetime.fromisoformat(f"{date}T{clock}{offset}")
    except ValueError as exc:
        raise TimeFormatError(f"not a valid time: {text!r} ({exc})") from None
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    return _to_us(moment) + micros


def _to_us(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * US_PER_S + delta.microseconds


@lru_cache(maxsize=4096)
def format_time_us(at_us: int) -> str:
    """µs UTC → RFC 3339 with ``Z``; whole seconds print without a fraction.

    Cached, with the date part cached per day and the clock part in integer
    arithmetic: the rating hot path formats three times per CDR, and a CDR's end is
    usually the step's "now"."""
    day, rest = divmod(at_us, 86_400 * US_PER_S)
    seconds, micros = divmod(rest, US_PER_S)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if micros:
        return f"{_date_text(day)}T{hours:02d}:{minutes:02d}:{seconds:02d}.{micros:06d}Z"
    return f"{_date_text(day)}T{hours:02d}:{minutes:02d}:{seconds:02d}Z"


@lru_cache(maxsize=8192)
def _date_text(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")


def month_of(at_us: int) -> str:
    """The UTC billing month ``YYYY-MM`` of an instant."""
    moment = _EPOCH + timedelta(microseconds=at_us)
    return f"{moment.year:04d}-{moment.month:02d}"


def add_months_clamped(at_us: int, months: int) -> int:
    """The same instant ``months`` calendar months later, the day clamped to the end of a
    shorter month (29 Feb 2028 + 12 months → 28 Feb 2029)."""
    moment = _EPOCH + timedelta(microseconds=at_us)
    index = moment.year * 12 + (moment.month - 1) + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return _to_us(moment.replace(year=year, month=month + 1, day=day))


US_PER_DAY = 86_400 * US_PER_S


@lru_cache(maxsize=4096)
def _month_of_day(day: int) -> str:
    moment = _EPOCH + timedelta(days=day)
    return f"{moment.year:04d}-{moment.month:02d}"


def month_of_fast(at_us: int) -> str:
    """:func:`month_of`, cached per UTC day (the rating hot path calls it per CDR)."""
    return _month_of_day(at_us // US_PER_DAY)


@lru_cache(maxsize=1024)
def month_end_us(month: str) -> int:
    """The first instant after a ``YYYY-MM`` month (the start of the next one)."""
    year, mon = int(month[:4]), int(month[5:7])
    year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    return _to_us(datetime(year, mon, 1, tzinfo=UTC))


def previous_month(month: str) -> str:
    """The month before ``YYYY-MM``."""
    year, mon = int(month[:4]), int(month[5:7])
    year, mon = (year - 1, 12) if mon == 1 else (year, mon - 1)
    return f"{year:04d}-{mon:02d}"
