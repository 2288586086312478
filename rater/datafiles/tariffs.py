"""The tariff file (SPEC §1.3): versions of per-minute rates by call class and E.164 prefix.

::

    format = 1
    [[version]]
    id = "2026-01"
    effective_from = "2026-01-01T00:00:00Z"
    [[version.rate]]
    class = "outbound"                 # outbound | toll_free_inbound | conf_dialout
    prefix = "44"                      # E.164 digits after "+", inside one country calling code
    kind = "fixed"                     # fixed | mobile | toll_free | premium | other (informational)
    increment = "60/60"                # first/next seconds
    rate_per_min = { USD = "0.0120", EUR = "0.0110" }   # per currency, up to 6 decimals
    connection_fee = { USD = "0.05", EUR = "0.05" }     # optional (default 0), minor-unit precision

A rate names one or more currencies, not necessarily all of its version's: the longest
matching prefix decides, and when it has no rate in the tenant's currency the call is a
``currency_mismatch`` (a shorter prefix never stands in). There is no catch-all prefix
outside the country calling codes: a destination no prefix matches has no rate (``no_rate``).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rater.core.countries import CountryPrefixes
from rater.core.money import MICRO_DIGITS, MoneyFormatError, parse_decimal
from rater.core.tariff import CALL_CLASSES, Rate, Tariff, Tariffs
from rater.core.times import TimeFormatError, parse_time_us
from rater.datafiles import Entry, key_text, toml_text

KINDS = ("fixed", "mobile", "toll_free", "premium", "other")
VERSION_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
PREFIX = r"[1-9][0-9]{0,14}"
_INCREMENT = re.compile(r"([1-9][0-9]{0,3})/([1-9][0-9]{0,3})")


@dataclass(frozen=True, slots=True)
class _Row:
    """One ``[[version.rate]]`` after its own checks, before the version-wide ones."""

    entry: Entry
    call_class: str
    prefix: str
    first_s: int
    next_s: int
    rate_micro: dict[str, int]
    fee_minor: dict[str, int] | None


def parse_tariffs(path: Path, data: Mapping[str, Any], exponents: Mapping[str, int],
                  countries: CountryPrefixes) -> Tariffs:
    """Every version of a parsed tariff file; ``exponents`` are ISO 4217 minor units and
    ``countries`` the E.164 table every prefix must fall inside."""
    top = Entry(path, "top level")
    top.only_keys(data, ("format", "version"))
    top.check_format(data)
    tables = top.tables(data, "version")
    if not tables:
        raise top.error("no [[version]] entries")
    versions: list[Tariff] = []
    by_id: dict[str, str] = {}
    by_start: dict[int, str] = {}
    for number, table in enumerate(tables, start=1):
        label = f"[[version]] #{number}"
        if isinstance(table.get("id"), str):
            label += f" {toml_text(table['id'])}"
        entry = Entry(path, label)
        tariff = _version(entry, table, exponents, countries)
        if tariff.version in by_id:
            raise entry.bad("id", tariff.version, f"{by_id[tariff.version]} has the same id")
        if tariff.effective_from_us in by_start:
            raise entry.bad("effective_from", table["effective_from"],
                            f"{by_start[tariff.effective_from_us]} takes effect at the same instant")
        by_id[tariff.version] = by_start[tariff.effective_from_us] = label
        versions.append(tariff)
    return Tariffs(tuple(versions))


def _version(entry: Entry, table: Mapping[str, Any], exponents: Mapping[str, int],
             countries: CountryPrefixes) -> Tariff:
    entry.only_keys(table, ("id", "effective_from", "rate"))
    version_id = entry.string(table, "id", VERSION_ID, "a version id of letters, digits, '.', '_', '-'")
    effective_from_us = _effective_from_us(entry, table)
    rows: list[_Row] = []
    seen: dict[tuple[str, str], Entry] = {}
    for number, rate_table in enumerate(entry.tables(table, "rate"), start=1):
        row = _row(entry.within(_rate_label(number, rate_table)), rate_table, exponents, countries)
        first = seen.setdefault((row.call_class, row.prefix), row.entry)
        if first is not row.entry:
            raise row.entry.error(f"duplicate of {first.where.removeprefix(entry.where + ' ')}: "
                                  "one rate per class and prefix in a version")
        rows.append(row)
    if not rows:
        raise entry.error("no [[version.rate]] entries")
    rates: dict[tuple[str, str], dict[str, Rate]] = {}
    for row in rows:
        fees = row.fee_minor or {}
        for currency, rate_micro in row.rate_micro.items():
            rate = Rate(rate_micro, row.first_s, row.next_s, fees.get(currency, 0))
            rates.setdefault((currency, row.call_class), {})[row.prefix] = rate
    return Tariff(version_id, effective_from_us, rates)


def _rate_label(number: int, table: Mapping[str, Any]) -> str:
    named = [f"{key} {toml_text(table[key])}" for key in ("prefix", "class") if isinstance(table.get(key), str)]
    return f"[[version.rate]] #{number}" + (f" ({', '.join(named)})" if named else "")


def _effective_from_us(entry: Entry, table: Mapping[str, Any]) -> int:
    value = entry.required(table, "effective_from")
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        text = value.isoformat()  # an unquoted TOML offset date-time is fine too
    elif isinstance(value, str):
        text = value
    else:
        raise entry.bad("effective_from", value, 'must be an RFC 3339 time with an offset, e.g. "2026-01-01T00:00:00Z"')
    try:
        return parse_time_us(text)
    except TimeFormatError as exc:
        raise entry.bad("effective_from", value, str(exc)) from None


def _row(entry: Entry, table: Mapping[str, Any], exponents: Mapping[str, int], countries: CountryPrefixes) -> _Row:
    entry.only_keys(table, ("class", "prefix", "kind", "increment", "rate_per_min", "connection_fee"))
    call_class = entry.string(table, "class", "|".join(CALL_CLASSES), f"one of {', '.join(CALL_CLASSES)}")
    prefix = entry.string(table, "prefix", PREFIX, "1–15 digits of an E.164 number after '+' (no catch-all \"\")")
    if countries.country_of("+" + prefix) is None:
        raise entry.bad("prefix", prefix, "starts with no E.164 country calling code")
    if "kind" in table:
        entry.string(table, "kind", "|".join(KINDS), f"one of {', '.join(KINDS)}")
    increment = entry.required(table, "increment")
    match = _INCREMENT.fullmatch(increment) if isinstance(increment, str) else None
    if match is None:
        raise entry.bad("increment", increment, 'must be "first/next" seconds, each 1–9999 (e.g. "60/60", "30/6")')
    rate_micro = _amounts(entry, table, "rate_per_min", lambda _currency: MICRO_DIGITS, exponents)
    fee_minor = None
    if "connection_fee" in table:
        fee_minor = _amounts(entry, table, "connection_fee", lambda currency: exponents[currency], exponents)
        extra = sorted(fee_minor.keys() - rate_micro.keys())
        if extra:
            raise entry.bad(f"connection_fee.{key_text(extra[0])}", table["connection_fee"][extra[0]],
                            f"rate_per_min has no {extra[0]}")
        missing = sorted(rate_micro.keys() - fee_minor.keys())
        if missing:
            raise entry.error(f"connection_fee has no {', '.join(missing)}: give every currency of "
                              "rate_per_min, or leave connection_fee out (no fee)")
    return _Row(entry, call_class, prefix, int(match[1]), int(match[2]), rate_micro, fee_minor)


def _amounts(entry: Entry, table: Mapping[str, Any], name: str, digits_of: Callable[[str], int],
             exponents: Mapping[str, int]) -> dict[str, int]:
    """Currency → amount in units of ``10**-digits_of(currency)``."""
    amounts = entry.table(table, name)
    if not amounts:
        raise entry.bad(name, amounts, "must give an amount per currency")
    parsed: dict[str, int] = {}
    for currency, text in amounts.items():
        field = f"{name}.{key_text(currency)}"
        if currency not in exponents:
            raise entry.bad(field, text, f"{currency} is not an ISO 4217 currency code with minor units")
        if not isinstance(text, str):
            raise entry.bad(field, text, f'write amounts as decimal strings ("{text}"): a TOML number may be a float')
        try:
            parsed[currency] = parse_decimal(text, digits_of(currency))
        except MoneyFormatError as exc:
            raise entry.bad(field, text, str(exc)) from None
    return parsed

