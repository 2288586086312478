"""Load and validate the operator-replaceable data files (tariff) into core objects.

Errors name the file, the entry and the field with its value, so an operator can fix a
tariff without reading code.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import iso4217

from rater.core.countries import CountryPrefixes
from rater.core.engine import RatingContext
from rater.core.money import MICRO_DIGITS, MoneyFormatError, parse_decimal
from rater.core.tariff import CALL_CLASSES, Rate, Tariff
from rater.core.times import TimeFormatError, parse_time_us

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_TARIFF = DATA / "tariff.toml"
COUNTRY_PREFIXES = DATA / "country_prefixes.json"


class DataFileError(ValueError):
    """A data file the rater cannot use; the message says where and why."""


@cache
def currency_exponents() -> dict[str, int]:
    """ISO 4217 minor-unit digits of every active currency that has them."""
    exponents: dict[str, int] = {}
    for currency in iso4217.Currency:
        if isinstance(currency.exponent, int):
            exponents[currency.code] = currency.exponent
    return exponents


@cache
def country_prefixes(path: Path = COUNTRY_PREFIXES) -> CountryPrefixes:
    """The E.164 prefix → country table shipped with the rater."""
    table = json.loads(path.read_text())["prefixes"]
    for prefix, country in table.items():
        if not prefix.isdigit() or not re.fullmatch(r"[A-Z]{2}", country):
            raise DataFileError(f"{path}: prefix {prefix!r} → {country!r} is not digits → ISO 3166 alpha-2")
    return CountryPrefixes.of(table)


def _field(path: Path, where: str, entry: dict[str, Any], name: str) -> Any:
    if name not in entry:
        raise DataFileError(f"{path}: {where}: missing field {name!r}")
    return entry[name]


def load_tariff(path: Path | str | None = None) -> Tariff:
    """Read a tariff TOML file (default: the shipped one, or ``RATER_TARIFF``)."""
    path = Path(path or os.environ.get("RATER_TARIFF") or DEFAULT_TARIFF)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise DataFileError(f"{path}: tariff file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise DataFileError(f"{path}: not valid TOML: {exc}") from None
    version = _field(path, "top level", data, "version")
    try:
        effective_us = parse_time_us(_field(path, "top level", data, "effective_from"))
    except TimeFormatError as exc:
        raise DataFileError(f"{path}: effective_from: {exc}") from None
    exponents = currency_exponents()
    rates: dict[tuple[str, str], dict[str, Rate]] = {}
    for index, entry in enumerate(data.get("rate", []), start=1):
        where = f"[[rate]] #{index}"
        currency = _field(path, where, entry, "currency")
        if currency not in exponents:
            raise DataFileError(
                f"{path}: {where}: currency {currency!r} is not an ISO 4217 code with minor units")
        call_class = _field(path, where, entry, "class")
        if call_class not in CALL_CLASSES:
            raise DataFileError(f"{path}: {where}: class {call_class!r} is not one of {', '.join(CALL_CLASSES)}")
        prefix = _field(path, where, entry, "prefix")
        if not isinstance(prefix, str) or not (prefix == "" or prefix.isdigit()) or len(prefix) > 15:
            raise DataFileError(f"{path}: {where}: prefix {prefix!r} must be up to 15 digits (\"\" = catch-all)")
        increment = str(_field(path, where, entry, "increment"))
        try:
            first_s, next_s = (int(part) for part in increment.split("/"))
            if first_s < 1 or next_s < 1:
                raise ValueError
        except ValueError:
            raise DataFileError(
                f"{path}: {where}: increment {increment!r} must be \"first/next\" seconds ≥ 1") from None
        try:
            rate_micro = parse_decimal(str(_field(path, where, entry, "rate_per_min")), MICRO_DIGITS)
            fee_minor = parse_decimal(str(entry.get("connection_fee", "0")), exponents[currency])
        except MoneyFormatError as exc:
            raise DataFileError(f"{path}: {where}: {exc}") from None
        table = rates.setdefault((currency, call_class), {})
        if prefix in table:
            raise DataFileError(f"{path}: {where}: duplicate rate for {currency} {call_class} prefix {prefix!r}")
        table[prefix] = Rate(rate_micro, first_s, next_s, fee_minor)
    if not rates:
        raise DataFileError(f"{path}: no [[rate]] entries")
    return Tariff(str(version), effective_us, rates)


def rating_context(tariff_path: Path | str | None = None) -> RatingContext:
    """The core's read-only context from the data files."""
    return RatingContext(load_tariff(tariff_path), currency_exponents(), country_prefixes())
