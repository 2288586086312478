"""The plan catalog file (SPEC §1.1): capabilities, their pools, Zone A, and per country
the calling code, emergency numbers and premium/excluded prefixes.

::

    format = 1
    version = "2026-01"
    zone_a = ["US", "GB"]                        # conf_out dial-out the MCOMEETADD pool covers

    [minutes.calling_plan]                       # a named allotment: minutes/licence/month
    US = 3000                                    # by usage location; "*" = any other location
    GB = 1200

    [[capability]]                               # in catalog order (pools are drawn in this order)
    id = "MCOPSTN1"
    name = "Domestic Calling Plan"
    pools = [{ scope = "domestic", minutes = "calling_plan" }]   # or minutes = { "*" = 120 }
    credits_for = []                             # user_out | conf_out: may pay from credits

    [countries.US]
    calling_code = "1"
    emergency = ["911"]                          # short codes, 2–6 digits; "+1911" is added
    premium_prefixes = ["1900"]                  # never drawn from pools

A usage location with minutes needs a ``[countries]`` section (its emergency numbers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rater.core.countries import CountryPrefixes
from rater.core.plans import ANY_LOCATION, CREDIT_FAMILIES, POOL_SCOPES, Allotment, Capability, Catalog
from rater.datafiles import Entry, key_text, toml_text
from rater.datafiles.tariffs import VERSION_ID

CAPABILITY_ID = r"[A-Z0-9_]{1,32}"  # as schemas/common.json#/$defs/capability
CALLING_CODE = r"[1-9][0-9]{0,2}"
SHORT_CODE = r"[0-9]{2,6}"  # as schemas/common.json#/$defs/dialled
PREFIX = r"[1-9][0-9]{0,14}"
MINUTES_NAME = r"[A-Za-z0-9_-]{1,64}"


@dataclass(frozen=True, slots=True)
class _Country:
    calling_code: str
    emergency: tuple[str, ...]
    premium_prefixes: tuple[str, ...]


def parse_catalog(path: Path, data: Mapping[str, Any], countries: CountryPrefixes) -> Catalog:
    """The catalog of a parsed catalog file; ``countries`` is the E.164 table that country
    codes and calling codes are checked against."""
    top = Entry(path, "top level")
    top.only_keys(data, ("format", "version", "zone_a", "minutes", "capability", "countries"))
    top.check_format(data)
    version = top.string(data, "version", VERSION_ID, "a version id of letters, digits, '.', '_', '-'")
    known = frozenset(countries.by_prefix.values())
    sections = {code: _country(Entry(path, f"[countries.{key_text(code)}]"), code, table, countries, known)
                for code, table in top.table(data, "countries").items()}
    zone_a = top.string_list(data, "zone_a")
    for code in zone_a:
        if code not in known:
            raise top.bad("zone_a", zone_a, f"{toml_text(code)} is not an ISO 3166-1 alpha-2 code of the E.164 table")
    named = {name: _minutes(Entry(path, f"[minutes.{key_text(name)}]"), name, table, sections)
             for name, table in top.table(data, "minutes", optional=True).items()}
    capabilities: list[Capability] = []
    first_with_id: dict[str, str] = {}
    for number, table in enumerate(top.tables(data, "capability"), start=1):
        label = f"[[capability]] #{number}" + (f" {toml_text(table['id'])}" if isinstance(table.get("id"), str) else "")
        capability = _capability(Entry(path, label), table, named, sections)
        if capability.id in first_with_id:
            raise Entry(path, label).bad("id", capability.id, f"{first_with_id[capability.id]} has the same id")
        first_with_id[capability.id] = label
        capabilities.append(capability)
    if not capabilities:
        raise top.error("no [[capability]] entries")
    emergency = {code for country in sections.values() for code in country.emergency}
    emergency |= {f"+{country.calling_code}{code}" for country in sections.values() for code in country.emergency}
    premium = {prefix for country in sections.values() for prefix in country.premium_prefixes}
    return Catalog(version, tuple(capabilities), frozenset(zone_a), frozenset(premium), frozenset(emergency))


def _country(entry: Entry, code: str, table: Any, countries: CountryPrefixes, known: frozenset[str]) -> _Country:
    if code not in known:
        raise entry.error(f"country {toml_text(code)} is not an ISO 3166-1 alpha-2 code of the E.164 table")
    if not isinstance(table, dict):
        raise entry.bad(f"countries.{code}", table, "must be a table")
    entry.only_keys(table, ("calling_code", "emergency", "premium_prefixes"))
    calling_code = entry.string(table, "calling_code", CALLING_CODE, "1–3 digits (the E.164 country calling code)")
    if not any(prefix.startswith(calling_code) and owner == code for prefix, owner in countries.by_prefix.items()):
        raise entry.bad("calling_code", calling_code, f"no E.164 number of {code} starts with +{calling_code}")
    emergency = entry.string_list(table, "emergency")
    if not emergency:
        raise entry.bad("emergency", emergency, "every country has emergency numbers: list its short codes")
    for short in emergency:
        if not _fullmatch(SHORT_CODE, short):
            raise entry.bad("emergency", emergency, f"{toml_text(short)} is not a short code of 2–6 digits")
    premium = entry.string_list(table, "premium_prefixes", optional=True)
    for prefix in premium:
        if not _fullmatch(PREFIX, prefix) or not prefix.startswith(calling_code) or prefix == calling_code:
            raise entry.bad("premium_prefixes", premium,
                            f"{toml_text(prefix)} is not a digit prefix longer than, and inside, +{calling_code}")
    return _Country(calling_code, tuple(emergency), tuple(premium))


def _fullmatch(pattern: str, text: str) -> bool:
    return re.fullmatch(pattern, text) is not None


def _minutes(entry: Entry, name: str, table: Any, sections: Mapping[str, _Country]) -> dict[str, int]:
    """A location → minutes table; every location it names needs a ``[countries]`` section."""
    if not _fullmatch(MINUTES_NAME, name):
        raise entry.error(f"name {toml_text(name)} must be letters, digits, '_' or '-'")
    if not isinstance(table, dict) or not table:
        raise entry.bad("minutes", table, 'must be a table of location = minutes (e.g. US = 3000, "*" = 120)')
    for location, minutes in table.items():
        if location != ANY_LOCATION and location not in sections:
            raise entry.bad(key_text(location), minutes, f"no [countries.{key_text(location)}] section: a usage "
                            "location needs its calling code and emergency numbers (\"*\" = any other location)")
        if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 0:
            raise entry.bad(key_text(location), minutes, "minutes per licence per month must be a whole number ≥ 0")
    return dict(table)


def _capability(entry: Entry, table: Mapping[str, Any], named: Mapping[str, dict[str, int]],
                sections: Mapping[str, _Country]) -> Capability:
    entry.only_keys(table, ("id", "name", "pools", "credits_for"))
    capability_id = entry.string(table, "id", CAPABILITY_ID, "1–32 of A–Z, 0–9, '_' (as licences_assigned sends it)")
    name = entry.string(table, "name", r"\S.*", "a human name")
    pools: list[Allotment] = []
    for number, pool in enumerate(entry.tables(table, "pools"), start=1):
        scope = pool.get("scope")
        label = f"pools #{number}" + (f" (scope {toml_text(scope)})" if isinstance(scope, str) else "")
        allotment = _pool(entry.within(label), pool, named, sections)
        if any(other.scope == allotment.scope for other in pools):
            raise entry.within(label).bad("scope", allotment.scope, "this capability already has a pool of that scope")
        pools.append(allotment)
    credits_for = entry.string_list(table, "credits_for", optional=True)
    for family in credits_for:
        if family not in CREDIT_FAMILIES:
            raise entry.bad("credits_for", credits_for,
                            f"{toml_text(family)} is not one of {', '.join(CREDIT_FAMILIES)}")
    if not pools and not credits_for:
        raise entry.error("funds nothing: give it pools or credits_for")
    return Capability(capability_id, name, tuple(pools), frozenset(credits_for))


def _pool(entry: Entry, table: Mapping[str, Any], named: Mapping[str, dict[str, int]],
          sections: Mapping[str, _Country]) -> Allotment:
    entry.only_keys(table, ("scope", "minutes"))
    scope = entry.string(table, "scope", "|".join(POOL_SCOPES), f"one of {', '.join(POOL_SCOPES)}")
    minutes_field = entry.required(table, "minutes")
    if isinstance(minutes_field, str):
        if minutes_field not in named:
            raise entry.bad("minutes", minutes_field, f"no [minutes.{key_text(minutes_field)}] table")
        minutes = named[minutes_field]
    else:
        minutes = _minutes(entry, "minutes", minutes_field, sections)
    if scope == "zone_a" and set(minutes) != {ANY_LOCATION}:
        raise entry.bad("minutes", minutes_field, 'a zone_a pool is tenant-wide: give only "*" = minutes per licence')
    return Allotment(scope, minutes)
