"""The operator-replaceable data files — plan catalog and tariff — and the shipped tables
(E.164 country prefixes, ISO 4217 minor units), loaded and validated into core objects.

Errors name the file, the entry, the field and its value (see ``rater.datafiles``), so an
operator can fix a file without reading code. The formats are described in
``rater/datafiles/plans.py`` and ``rater/datafiles/tariffs.py`` and in docs/catalog.md.
"""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path

import iso4217

from rater.core.context import RatingContext
from rater.core.countries import CountryPrefixes
from rater.core.plans import Catalog
from rater.core.tariff import Tariffs
from rater.datafiles import DataFileError, read_toml
from rater.datafiles.plans import parse_catalog
from rater.datafiles.tariffs import parse_tariffs

__all__ = [
    "COUNTRY_PREFIXES", "DEFAULT_CATALOG", "DEFAULT_TARIFF", "DataFileError", "country_prefixes",
    "currency_exponents", "load_catalog", "load_tariffs", "rating_context",
]

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_CATALOG = DATA / "catalog.toml"
DEFAULT_TARIFF = DATA / "tariff.toml"
COUNTRY_PREFIXES = DATA / "country_prefixes.json"


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


def load_catalog(path: Path | str | None = None) -> Catalog:
    """Read a plan catalog file (default: ``RATER_CATALOG``, else the shipped one)."""
    path = Path(path or os.environ.get("RATER_CATALOG") or DEFAULT_CATALOG)
    return parse_catalog(path, read_toml(path, "catalog"), country_prefixes())


def load_tariffs(path: Path | str | None = None) -> Tariffs:
    """Read a tariff file with all its versions (default: ``RATER_TARIFF``, else the shipped one)."""
    path = Path(path or os.environ.get("RATER_TARIFF") or DEFAULT_TARIFF)
    return parse_tariffs(path, read_toml(path, "tariff"), currency_exponents(), country_prefixes())


def rating_context(tariff_path: Path | str | None = None, catalog_path: Path | str | None = None) -> RatingContext:
    """The core's read-only context from the data files (defaults as the loaders')."""
    return RatingContext(
        tariffs=load_tariffs(tariff_path),
        catalog=load_catalog(catalog_path),
        exponents=currency_exponents(),
        countries=country_prefixes(),
    )
