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
_RFC3339 = re.compile(  # used with fullmatch: ``$`` would also take a final newline
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
US_PER_S = 1_000_000
MIN_TIME_US = 0
"""The earliest instant an input may carry: 1970-01-01T00:00:00Z."""
MAX_TIME_US = 221_845_392_000_000_000
"""The first instant an input may no longer carry: 9000-01-01T00:00:00Z. Far enough from
``datetime``'s end (year 9999) that what the core adds to an input's time (a lot's 12
months, a grace period, a recharge time-out) always stays inside it."""


class TimeFormatError(ValueError):
    """A time string that is not RFC 3339 with an explicit offset."""


def parse_time_us(text: str) -> int:
    """RFC 3339 (``Z`` or an offset; up to 9 fraction digits, truncated to µs) → µs UTC.

    The form every CDR carries — ``YYYY-MM-DDTHH:MM:SS[.fraction]Z`` — is read from its
    fixed positions, its date looked up in a cache of dates already checked (two per CDR,
    on the rating hot path: a quarter of the cost of the general parser); every other
    form, and anything the fast reading does not accept, goes to :func:`parse_time_us_rfc3339`,
    which has the last word (``tests/core/test_money_and_time.py`` checks the two agree)."""
    if type(text) is str and len(text) >= 20 and text[-1] == "Z" and text[10] == "T" and text.isascii():
        day_us = _DAY_US.get(text[:10])
        if day_us is None:
            return parse_time_us_rfc3339(text)  # a new date: checked, then cached
        hh, mm, ss = text[11:13], text[14:16], text[17:19]
        if text[13] == ":" and text[16] == ":" and hh.isdigit() and mm.isdigit() and ss.isdigit():
            hours, minutes, seconds = int(hh), int(mm), int(ss)
            if hours < 24 and minutes < 60 and seconds < 60:
                at = day_us + ((hours * 60 + minutes) * 60 + seconds) * US_PER_S
                if len(text) == 20:
                    return at
                fraction = text[20:-1]
                if text[19] == "." and 0 < len(fraction) <= 9 and fraction.isdigit():
                    return at + int((fraction + "00000")[:6])
    return parse_time_us_rfc3339(text)


_DAY_US: dict[str, int] = {}
"""``YYYY-MM-DD`` → µs at its UTC midnight, for dates the general parser accepted."""


def parse_time_us_rfc3339(text: str) -> int:
    """:func:`parse_time_us` for every RFC 3339 form (any offset, ``t``/``z``)."""
    match = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise TimeFormatError(f"not an RFC 3339 time with offset: {text[:80]!r}")
    date, clock, fraction, offset = match.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        moment = datetime.fromisoformat(f"{date}T{clock}{offset}")
        at = _to_us(moment) + int((fraction or "0")[:6].ljust(6, "0"))
    except (ValueError, OverflowError) as exc:  # 0001-01-01T00:00:00+00:01 is in year 0 in UTC
        raise TimeFormatError(f"not a valid time: {text!r} ({exc})") from None
    if not MIN_TIME_US <= at < MAX_TIME_US:
        raise TimeFormatError(f"{text!r} is outside the times the rater takes,"
                              f" 1970-01-01T00:00:00Z to 8999-12-31T23:59:59.999999Z")
    if date not in _DAY_US:
        midnight = _to_us(datetime.fromisoformat(f"{date}T00:00:00+00:00"))
        if MIN_TIME_US <= midnight < MAX_TIME_US:  # then so is every time of the day
            if len(_DAY_US) >= 100_000:
                _DAY_US.clear()
            _DAY_US[date] = midnight
    return at


def _to_us(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * US_PER_S + delta.microseconds


def format_time_us(at_us: int) -> str:
    """µs UTC → RFC 3339 with ``Z``; whole seconds print without a fraction.

    Built from a cache of dates and a table of two-digit numbers, by concatenation
    (no format specs, which mypyc leaves to the interpreter): the rating hot path
    formats three times per CDR, each a different instant."""
    day = at_us // 86_400_000_000  # // and %, not divmod: native integer arithmetic in mypyc
    date = _DATES.get(day)
    if date is None:
        if len(_DATES) >= 100_000:
            _DATES.clear()
        date = _DATES[day] = (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")
    rest = at_us - day * 86_400_000_000
    micros = rest % US_PER_S
    seconds = rest // US_PER_S
    two = _TWO_DIGITS
    clock = two[seconds // 3600] + ":" + two[seconds // 60 % 60] + ":" + two[seconds % 60]
    if micros:
        return date + "T" + clock + "." + str(micros).zfill(6) + "Z"
    return date + "T" + clock + "Z"


_DATES: dict[int, str] = {}
"""Days since the epoch → ``YYYY-MM-DD``."""
_TWO_DIGITS: list[str] = [str(n).zfill(2) for n in range(60)]


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
