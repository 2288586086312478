"""The plan catalog and the tariff are data: the shipped files hold what SPEC §1.1 and §1.3
ask for, and a bad file is refused with a message naming file, entry, field and value."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from functools import cache
from pathlib import Path
from types import ModuleType

import phonenumbers
import pytest
from click.testing import CliRunner

from rater.catalog import (
    DEFAULT_CATALOG,
    DEFAULT_TARIFF,
    DataFileError,
    currency_exponents,
    load_catalog,
    load_tariffs,
    rating_context,
)
from rater.cli import main
from rater.core.plans import Catalog
from rater.core.tariff import Rate, Tariff
from rater.core.times import parse_time_us
from rater.shell.settings import Settings

TOOL = Path(__file__).resolve().parent.parent / "tools" / "gen_tariff.py"
SPEC_CAPABILITIES = ("MCOPSTN1", "MCOPSTN5", "MCOPSTN6", "MCOPSTN2", "PAYG", "MCOMEETADD", "MCOMEETACPEA", "MCOPSTNPP")
NORTH_AMERICA = ("US", "CA", "PR")
EUROPE = ("GB", "DE", "FR", "NL", "IE", "ES", "IT", "PL", "SE")
CURRENCIES = ("USD", "EUR", "GBP", "CAD", "AUD", "JPY", "INR", "BRL", "MXN", "PLN", "SEK")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(DEFAULT_CATALOG)


@pytest.fixture(scope="module")
def tariff_2026() -> Tariff:
    found = load_tariffs(DEFAULT_TARIFF).at(parse_time_us("2026-11-02T10:00:00Z"))
    assert found is not None
    return found


def _minutes(catalog: Catalog, capability: str, scope: str, location: str) -> int:
    allotment = catalog.by_id[capability].allotment(scope)
    assert allotment is not None, f"{capability} has no {scope} pool"
    return allotment.minutes_for(location)


# --- the shipped catalog (SPEC §1.1) -------------------------------------------------------

def test_the_shipped_catalog_has_every_spec_capability_in_catalog_order(catalog: Catalog) -> None:
    assert tuple(cap.id for cap in catalog.capabilities) == SPEC_CAPABILITIES
    assert all(cap.name for cap in catalog.capabilities)


@pytest.mark.parametrize("location", NORTH_AMERICA)
def test_domestic_plans_give_3000_minutes_in_north_america(catalog: Catalog, location: str) -> None:
    assert _minutes(catalog, "MCOPSTN1", "domestic", location) == 3000
    assert _minutes(catalog, "MCOPSTN2", "domestic", location) == 3000


@pytest.mark.parametrize("location", EUROPE)
def test_domestic_plans_give_1200_minutes_in_the_uk_and_eu(catalog: Catalog, location: str) -> None:
    assert _minutes(catalog, "MCOPSTN1", "domestic", location) == 1200
    assert _minutes(catalog, "MCOPSTN2", "domestic", location) == 1200


def test_the_small_plans_give_120_and_240_minutes_everywhere(catalog: Catalog) -> None:
    for location in ("US", "GB", "JP", "ZA"):
        assert _minutes(catalog, "MCOPSTN5", "domestic", location) == 120
        assert _minutes(catalog, "MCOPSTN6", "domestic", location) == 240


def test_the_international_plan_adds_600_minutes_wherever_it_is_sold(catalog: Catalog) -> None:
    domestic = catalog.by_id["MCOPSTN2"].allotment("domestic")
    international = catalog.by_id["MCOPSTN2"].allotment("international")
    assert domestic is not None
    assert international is not None
    assert domestic.minutes == catalog.by_id["MCOPSTN1"].allotment("domestic").minutes  # type: ignore[union-attr]
    assert set(international.minutes) == set(domestic.minutes)
    assert set(international.minutes.values()) == {600}
    assert catalog.pool_capabilities("international") == (catalog.by_id["MCOPSTN2"],)


def test_pay_per_use_capabilities_have_no_pools_and_name_what_credits_pay(catalog: Catalog) -> None:
    assert catalog.by_id["PAYG"].pools == ()
    assert catalog.by_id["PAYG"].credits_for == {"user_out"}
    assert catalog.by_id["MCOMEETACPEA"].pools == ()
    assert catalog.by_id["MCOMEETACPEA"].credits_for == {"conf_out"}
    assert catalog.by_id["MCOPSTNPP"].credits_for == {"user_out", "conf_out"}
    assert all(not catalog.by_id[cap].credits_for for cap in ("MCOPSTN1", "MCOPSTN5", "MCOPSTN6", "MCOPSTN2",
                                                               "MCOMEETADD"))


def test_audio_conferencing_has_one_tenant_wide_zone_a_pool_of_60_minutes(catalog: Catalog) -> None:
    allotment = catalog.by_id["MCOMEETADD"].allotment("zone_a")
    assert allotment is not None
    assert dict(allotment.minutes) == {"*": 60}
    assert {"US", "CA", "PR", "GB", "DE", "FR", "AU", "JP"} <= catalog.zone_a
    assert not {"IN", "BR", "MX"} & catalog.zone_a


@pytest.mark.parametrize("number", ["911", "+1911", "933", "999", "+44999", "112", "+49112", "000", "+61000",
                                    "110", "+81119", "190", "+55190", "+52911", "15", "+3315"])
def test_emergency_numbers_are_short_codes_and_their_e164_forms(catalog: Catalog, number: str) -> None:
    assert catalog.is_emergency(number)


@pytest.mark.parametrize("number", ["+12125550123", "+1911555", "9111", "+1112"])
def test_ordinary_numbers_are_not_emergency_numbers(catalog: Catalog, number: str) -> None:
    assert not catalog.is_emergency(number)


def test_emergency_short_codes_are_2_to_6_digits_as_the_cdr_schema_allows(catalog: Catalog) -> None:
    short = {code for code in catalog.emergency if not code.startswith("+")}
    assert short
    assert all(code.isdigit() and 2 <= len(code) <= 6 for code in short)


@pytest.mark.parametrize(("number", "premium"), [
    ("+19005550100", True), ("+12125550123", False), ("+449012345678", True), ("+447700900123", False),
    ("+448712345678", True), ("+499001234567", True), ("+4913771234", True), ("+33891123456", True),
    ("+31906123456", True), ("+34803123456", True), ("+61190012345", True), ("+81990123456", True),
    ("+911861123456789", True), ("+55900123456", True), ("+529001234567", True), ("+525512345678", False),
])
def test_premium_prefixes_never_draw_from_pools(catalog: Catalog, number: str, premium: bool) -> None:
    assert catalog.is_premium(number) is premium


# --- the shipped tariff (SPEC §1.3) --------------------------------------------------------

def test_a_call_is_rated_by_the_tariff_version_in_force_at_its_start() -> None:
    tariffs = load_tariffs()
    assert [t.version for t in tariffs.versions] == ["2026-01", "2027-01"]
    assert tariffs.at(parse_time_us("2025-12-31T23:59:59Z")) is None
    first, second = tariffs.versions
    assert tariffs.at(parse_time_us("2026-01-01T00:00:00Z")) is first
    assert tariffs.at(parse_time_us("2026-12-31T23:59:59.999999Z")) is first
    assert tariffs.at(parse_time_us("2027-01-01T00:00:00Z")) is second
    new_york, london_mobile = "+12125550123", "+447700900123"
    assert first.rate_for("USD", "outbound", new_york) == Rate(10_000, 60, 60)
    assert second.rate_for("USD", "outbound", new_york) == Rate(9_000, 60, 60)
    assert first.rate_for("GBP", "outbound", london_mobile) == Rate(15_800, 1, 1)
    assert second.rate_for("GBP", "outbound", london_mobile) == Rate(11_900, 1, 1)
    assert first.rate_for("USD", "outbound", "+33142685300") == Rate(13_000, 1, 1)
    assert second.rate_for("USD", "outbound", "+33142685300") == Rate(13_000, 30, 6)


@pytest.mark.parametrize(("currency", "call_class", "number", "rate"), [
    ("USD", "outbound", "+447700900123", Rate(20_000, 1, 1)),          # GB mobile
    ("USD", "outbound", "+442071838750", Rate(12_000, 1, 1)),          # GB fixed
    ("USD", "outbound", "+18005550100", Rate(0, 60, 60)),              # US toll-free: free to call
    ("USD", "toll_free_inbound", "+18005550100", Rate(19_000, 60, 60)),
    ("USD", "outbound", "+14165550100", Rate(10_000, 60, 60)),         # Canada: the US price
    ("USD", "outbound", "+17875550100", Rate(18_000, 60, 60)),         # Puerto Rico
    ("USD", "outbound", "+18765550100", Rate(150_000, 60, 60)),        # Jamaica: other NANP
    ("USD", "outbound", "+19005550100", Rate(1_500_000, 60, 60, 10)),  # premium, with a fee
    ("USD", "conf_dialout", "+447700900123", Rate(23_000, 1, 1)),      # conference: 1.15 x outbound
    ("EUR", "outbound", "+4915112345678", Rate(41_400, 60, 60)),       # DE mobile
    ("EUR", "outbound", "+34912345678", Rate(12_900, 30, 6, 2)),       # ES fixed with a connection fee
    ("JPY", "outbound", "+61212345678", Rate(3_750_000, 30, 6, 8)),    # AU flagfall in whole yen
    ("INR", "outbound", "+919812345678", Rate(2_075_000, 60, 60)),     # IN mobile
    ("BRL", "outbound", "+5511912345678", Rate(450_000, 30, 6)),       # BR mobile (area 11 + 9)
    ("BRL", "outbound", "+551123456789", Rate(175_000, 30, 6)),        # BR fixed
])
def test_real_numbers_get_the_rate_of_their_longest_prefix(tariff_2026: Tariff, currency: str, call_class: str,
                                                           number: str, rate: Rate) -> None:
    assert tariff_2026.rate_for(currency, call_class, number) == rate


@pytest.mark.parametrize("number", ["+999123456", "+8821234567", "+3701234567", "+2125550123"])
def test_a_destination_outside_every_listed_country_has_no_rate(tariff_2026: Tariff, number: str) -> None:
    for call_class in ("outbound", "toll_free_inbound", "conf_dialout"):
        assert tariff_2026.rate_for("USD", call_class, number) is None


def test_every_rate_is_in_every_currency_and_jpy_fees_are_whole_yen() -> None:
    for tariff in load_tariffs().versions:
        assert {currency for currency, _ in tariff.rates} == set(CURRENCIES)
        for call_class in ("outbound", "toll_free_inbound", "conf_dialout"):
            prefixes = {currency: set(tariff.rates[currency, call_class]) for currency in CURRENCIES}
            assert all(found == prefixes["USD"] for found in prefixes.values())
    text = DEFAULT_TARIFF.read_text()
    assert "JPY = \"8\"" in text
    assert not any('JPY = "' in line and "." in line.split('JPY = "')[1].split('"')[0]
                   for line in text.splitlines() if line.startswith("connection_fee"))


@cache
def _raw_rows(version: int = 0) -> dict[tuple[str, str], dict[str, object]]:
    data = tomllib.loads(DEFAULT_TARIFF.read_text())
    return {(row["class"], row["prefix"]): row for row in data["version"][version]["rate"]}


def _longest(rows: dict[tuple[str, str], dict[str, object]], call_class: str, digits: str) -> dict[str, object] | None:
    for length in range(len(digits), 0, -1):
        if (call_class, digits[:length]) in rows:
            return rows[call_class, digits[:length]]
    return None


def test_every_catalog_premium_prefix_is_a_premium_rate_in_the_shipped_tariff(catalog: Catalog) -> None:
    rows = _raw_rows()
    premium_rows = {prefix for (call_class, prefix), row in rows.items()
                    if call_class == "outbound" and row["kind"] == "premium"}
    assert premium_rows == set(catalog.premium_prefixes)


def test_every_catalog_country_has_rates_in_every_class() -> None:
    countries = tomllib.loads(DEFAULT_CATALOG.read_text())["countries"]
    tariff = load_tariffs().versions[0]
    for country in countries.values():
        for call_class in ("outbound", "toll_free_inbound", "conf_dialout"):
            assert country["calling_code"] in tariff.rates["USD", call_class], (country, call_class)


# libphonenumber's example number of each type must get a rate of that kind, except where
# the numbering plan does not separate the type by prefix (the tariff's header says so).
TYPES = {phonenumbers.PhoneNumberType.FIXED_LINE: "fixed", phonenumbers.PhoneNumberType.MOBILE: "mobile",
         phonenumbers.PhoneNumberType.TOLL_FREE: "toll_free", phonenumbers.PhoneNumberType.PREMIUM_RATE: "premium"}
NOT_BY_PREFIX = {("US", "mobile"), ("CA", "mobile"), ("PR", "mobile"), ("MX", "mobile"), ("DK", "mobile"),
                 ("IN", "fixed")}  # IN: a few fixed lines sit in the mobile 7x ranges


@pytest.mark.parametrize("region", ["US", "CA", "PR", "GB", "IE", "DE", "FR", "NL", "BE", "LU", "ES", "PT", "IT",
                                    "AT", "CH", "PL", "DK", "SE", "NO", "FI", "AU", "NZ", "JP", "HK", "SG", "IN",
                                    "BR", "MX"])
def test_example_numbers_of_each_type_get_a_rate_of_that_kind(region: str) -> None:
    rows = _raw_rows()
    for number_type, kind in TYPES.items():
        example = phonenumbers.example_number_for_type(region, number_type)
        assert example is not None
        digits = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[1:]
        row = _longest(rows, "outbound", digits)
        assert row is not None, digits
        expected = "fixed" if (region, kind) in NOT_BY_PREFIX else kind
        if (region, kind) != ("IN", "fixed"):
            assert row["kind"] == expected, (region, digits, row)
        if kind == "toll_free":
            inbound = _longest(rows, "toll_free_inbound", digits)
            assert inbound is not None
            assert inbound["prefix"] != str(example.country_code), f"{digits}: no toll-free prefix for {region}"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_tariff", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_tariff"] = module
    spec.loader.exec_module(module)
    return module


def test_the_committed_tariff_is_what_the_generator_makes_today() -> None:
    module = _generator()
    assert DEFAULT_TARIFF.read_text() == module.render(module.generate()), (
        "rater/data/tariff.toml is stale: run tools/gen_tariff.py")
    assert DEFAULT_TARIFF.read_text().startswith("# GENERATED by tools/gen_tariff.py")


def test_iso4217_minor_units_come_from_the_data_package() -> None:
    exponents = currency_exponents()
    assert (exponents["USD"], exponents["JPY"], exponents["BHD"]) == (2, 0, 3)


# --- validation: every error names file, entry, field and value ----------------------------

TARIFF = """\
format = 1

[[version]]
id = "v1"
effective_from = "2026-01-01T00:00:00Z"

[[version.rate]]
class = "outbound"
prefix = "44"
kind = "fixed"
increment = "30/6"
rate_per_min = { USD = "0.010000", JPY = "1.5" }
connection_fee = { USD = "0.05", JPY = "8" }

[[version.rate]]
class = "outbound"
prefix = "447"
kind = "mobile"
increment = "1/1"
rate_per_min = { USD = "0.02", JPY = "3" }

[[version]]
id = "v2"
effective_from = 2027-01-01T00:00:00Z

[[version.rate]]
class = "conf_dialout"
prefix = "44"
increment = "60/60"
rate_per_min = { USD = "0.03", JPY = "4.5" }
"""
ROW1 = '[[version]] #1 "v1" [[version.rate]] #1 (prefix "44", class "outbound")'
ROW2 = '[[version]] #1 "v1" [[version.rate]] #2 (prefix "447", class "outbound")'
V2_ROW1 = '[[version]] #2 "v2" [[version.rate]] #1 (prefix "44", class "conf_dialout")'

CATALOG = """\
format = 1
version = "test-1"
zone_a = ["US", "GB"]

[minutes.plan]
US = 3000
GB = 1200

[[capability]]
id = "MCOPSTN1"
name = "Domestic Calling Plan"
pools = [{ scope = "domestic", minutes = "plan" }]

[[capability]]
id = "MCOMEETADD"
name = "Audio Conferencing"
pools = [{ scope = "zone_a", minutes = { "*" = 60 } }]

[[capability]]
id = "MCOPSTNPP"
name = "Communications Credits"
credits_for = ["user_out", "conf_out"]

[countries.US]
calling_code = "1"
emergency = ["911"]
premium_prefixes = ["1900"]

[countries.GB]
calling_code = "44"
emergency = ["999", "112"]
premium_prefixes = ["449"]
"""
CAP1 = '[[capability]] #1 "MCOPSTN1"'
CAP2 = '[[capability]] #2 "MCOMEETADD"'
CAP3 = '[[capability]] #3 "MCOPSTNPP"'


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def test_the_small_good_files_load(tmp_path: Path) -> None:
    tariffs = load_tariffs(_write(tmp_path, "tariff.toml", TARIFF))
    v1, v2 = tariffs.versions
    assert v1.rate_for("USD", "outbound", "+442071838750") == Rate(10_000, 30, 6, 5)
    assert v1.rate_for("JPY", "outbound", "+447700900123") == Rate(3_000_000, 1, 1, 0)
    assert v2.effective_from_us == parse_time_us("2027-01-01T00:00:00Z")  # an unquoted TOML date-time
    assert v2.rate_for("USD", "outbound", "+442071838750") is None
    catalog = load_catalog(_write(tmp_path, "catalog.toml", CATALOG))
    assert catalog.emergency == {"911", "+1911", "999", "112", "+44999", "+44112"}
    assert catalog.premium_prefixes == {"1900", "449"}
    assert catalog.zone_a == {"US", "GB"}


def test_a_rate_may_price_only_some_of_its_versions_currencies(tmp_path: Path) -> None:
    # an operator who sells JPY only to Japan prices no other destination in JPY
    text = _edit(TARIFF, 'rate_per_min = { USD = "0.02", JPY = "3" }', 'rate_per_min = { USD = "0.02" }')
    v1, _v2 = load_tariffs(_write(tmp_path, "tariff.toml", text)).versions
    mobile, fixed = "+447700900123", "+442071838750"
    assert v1.rate_for("USD", "outbound", mobile) == Rate(20_000, 1, 1, 0)
    # the longest prefix (447) decides: it has no JPY, and 44's JPY rate does not stand in
    assert v1.rate_for("JPY", "outbound", mobile) is None
    assert v1.rate_for("JPY", "outbound", fixed) == Rate(1_500_000, 30, 6, 8)


def test_a_rate_that_names_no_currency_is_still_refused(tmp_path: Path) -> None:
    text = _edit(TARIFF, 'rate_per_min = { USD = "0.02", JPY = "3" }', "rate_per_min = {}")
    path = _write(tmp_path, "tariff.toml", text)
    with pytest.raises(DataFileError) as caught:
        load_tariffs(path)
    assert str(caught.value).startswith(f"{path}: {ROW2}: rate_per_min = {{  }}: must give an amount per currency")


@pytest.mark.parametrize(("old", "new", "entry", "says"), [
    ('kind = "fixed"\n', 'kind = "fixed"\nrate = "0.01"\n', ROW1, 'unknown field "rate" (known: class, prefix'),
    ('increment = "1/1"\n', "", ROW2, 'missing field "increment"'),
    ('"30/6"', '"30"', ROW1, 'increment = "30": must be "first/next" seconds'),
    ('"30/6"', '"0/6"', ROW1, 'increment = "0/6": must be "first/next" seconds'),
    ('"30/6"', "30", ROW1, 'increment = 30: must be "first/next" seconds'),
    ('"0.010000"', '"0.0100001"', ROW1, 'rate_per_min.USD = "0.0100001": \'0.0100001\' has 7 decimals'),
    ('JPY = "8"', 'JPY = "7.5"', ROW1, "connection_fee.JPY = \"7.5\": '7.5' has 1 decimals; at most 0"),
    ('USD = "0.05"', 'USD = "0.055"', ROW1, "connection_fee.USD = \"0.055\": '0.055' has 3 decimals"),
    ('"0.02"', "0.02", ROW2, 'rate_per_min.USD = 0.02: write amounts as decimal strings ("0.02")'),
    ('"0.02"', '"-0.02"', ROW2, 'rate_per_min.USD = "-0.02": not a non-negative decimal amount'),
    ('JPY = "3"', 'XYZ = "3"', ROW2, 'rate_per_min.XYZ = "3": XYZ is not an ISO 4217 currency'),
    ('{ USD = "0.05", JPY = "8" }', '{ USD = "0.05" }', ROW1, "connection_fee has no JPY"),
    ('{ USD = "0.05", JPY = "8" }', '{ USD = "0.05", JPY = "8", EUR = "0.05" }', ROW1,
     'connection_fee.EUR = "0.05": rate_per_min has no EUR'),
    ('rate_per_min = { USD = "0.02", JPY = "3" }', "rate_per_min = {}", ROW2, "rate_per_min = {  }: must give"),
    ('prefix = "447"', 'prefix = "44"', '[[version]] #1 "v1" [[version.rate]] #2 (prefix "44", class "outbound")',
     'duplicate of [[version.rate]] #1 (prefix "44", class "outbound"): one rate per class and prefix'),
    ('prefix = "447"', 'prefix = "+447"', '[[version]] #1 "v1" [[version.rate]] #2 (prefix "+447", class "outbound")',
     'prefix = "+447": must be 1–15 digits'),
    ('prefix = "447"', 'prefix = ""', '[[version]] #1 "v1" [[version.rate]] #2 (prefix "", class "outbound")',
     'prefix = "": must be 1–15 digits'),
    ('prefix = "447"', 'prefix = "4470000000000000"',
     '[[version]] #1 "v1" [[version.rate]] #2 (prefix "4470000000000000", class "outbound")',
     'prefix = "4470000000000000": must be 1–15 digits'),
    ('prefix = "447"', 'prefix = "999"', '[[version]] #1 "v1" [[version.rate]] #2 (prefix "999", class "outbound")',
     'prefix = "999": starts with no E.164 country calling code'),
    ('prefix = "447"', "prefix = 447", '[[version]] #1 "v1" [[version.rate]] #2 (class "outbound")',
     "prefix = 447: must be 1–15 digits"),
    ('class = "outbound"\nprefix = "447"', 'class = "inbound"\nprefix = "447"',
     '[[version]] #1 "v1" [[version.rate]] #2 (prefix "447", class "inbound")',
     'class = "inbound": must be one of outbound, toll_free_inbound, conf_dialout'),
    ('kind = "mobile"', 'kind = "cell"', ROW2, 'kind = "cell": must be one of fixed, mobile'),
    ("effective_from = 2027-01-01T00:00:00Z", 'effective_from = "2026-01-01T00:00:00Z"', '[[version]] #2 "v2"',
     'effective_from = "2026-01-01T00:00:00Z": [[version]] #1 "v1" takes effect at the same instant'),
    ("effective_from = 2027-01-01T00:00:00Z", "effective_from = 2027-01-01T00:00:00", '[[version]] #2 "v2"',
     "effective_from = 2027-01-01T00:00:00: must be an RFC 3339 time with an offset"),
    ('effective_from = "2026-01-01T00:00:00Z"', 'effective_from = "2026-01-01"', '[[version]] #1 "v1"',
     'effective_from = "2026-01-01": not an RFC 3339 time'),
    ('id = "v2"', 'id = "v1"', '[[version]] #2 "v1"', 'id = "v1": [[version]] #1 "v1" has the same id'),
    ('id = "v2"\n', "", "[[version]] #2", 'missing field "id"'),
    ('id = "v2"', 'id = "v2"\nnote = "x"', '[[version]] #2 "v2"', 'unknown field "note"'),
    ('increment = "60/60"', 'increment = "60/60"\nconnection_fee = { USD = "1" }', V2_ROW1,
     "connection_fee has no JPY"),
    ("format = 1", "format = 2", "top level", "format = 2: this rater reads format 1"),
    ("format = 1", 'format = 1\ncurrency = "USD"', "top level", 'unknown field "currency"'),
    ("format = 1\n", "", "top level", 'missing field "format"'),
])
def test_a_bad_tariff_is_refused_naming_file_entry_field_and_value(tmp_path: Path, old: str, new: str,
                                                                   entry: str, says: str) -> None:
    path = _write(tmp_path, "tariff.toml", _edit(TARIFF, old, new))
    with pytest.raises(DataFileError) as error:
        load_tariffs(path)
    assert str(error.value).startswith(f"{path}: {entry}: {says}")


def test_a_tariff_without_versions_or_rates_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "tariff.toml", "format = 1\n")
    with pytest.raises(DataFileError, match=r"top level: no \[\[version\]\] entries"):
        load_tariffs(path)
    path.write_text('format = 1\n[[version]]\nid = "v"\neffective_from = "2026-01-01T00:00:00Z"\n')
    with pytest.raises(DataFileError, match=r'\[\[version\]\] #1 "v": no \[\[version.rate\]\] entries'):
        load_tariffs(path)


@pytest.mark.parametrize(("old", "new", "entry", "says"), [
    ('credits_for = ["user_out", "conf_out"]', 'credits_for = ["user_out", "conf_out"]\nminutes = 5', CAP3,
     'unknown field "minutes" (known: id, name, pools, credits_for)'),
    ('scope = "zone_a"', 'scope = "zone_b"', f'{CAP2} pools #1 (scope "zone_b")',
     'scope = "zone_b": must be one of domestic, international, zone_a'),
    ('scope = "domestic"', 'scope = "domestic", size = 3', f'{CAP1} pools #1 (scope "domestic")',
     'unknown field "size"'),
    ("GB = 1200", "GB = -5", "[minutes.plan]", "GB = -5: minutes per licence per month must be a whole number ≥ 0"),
    ("GB = 1200", "GB = 1200.5", "[minutes.plan]", "GB = 1200.5: minutes per licence per month must be a whole"),
    ("GB = 1200", 'GB = "1200"', "[minutes.plan]", 'GB = "1200": minutes per licence per month must be a whole'),
    ('{ "*" = 60 }', '{ "*" = true }', f'{CAP2} pools #1 (scope "zone_a")', '"*" = true: minutes per licence'),
    ("GB = 1200", "GB = 1200\nFR = 1200", "[minutes.plan]", "FR = 1200: no [countries.FR] section"),
    ("[countries.GB]", "[countries.UK]", "[countries.UK]", 'country "UK" is not an ISO 3166-1 alpha-2 code'),
    ('zone_a = ["US", "GB"]', 'zone_a = ["US", "UK"]', "top level",
     'zone_a = ["US", "UK"]: "UK" is not an ISO 3166-1 alpha-2 code'),
    ('emergency = ["911"]', 'emergency = ["9"]', "[countries.US]",
     'emergency = ["9"]: "9" is not a short code of 2–6 digits'),
    ('emergency = ["911"]', 'emergency = ["9111111"]', "[countries.US]",
     'emergency = ["9111111"]: "9111111" is not a short code of 2–6 digits'),
    ('emergency = ["911"]', 'emergency = ["+1911"]', "[countries.US]",
     'emergency = ["+1911"]: "+1911" is not a short code of 2–6 digits'),
    ('emergency = ["911"]', "emergency = []", "[countries.US]", "emergency = []: every country has emergency"),
    ('emergency = ["911"]', "emergency = [911]", "[countries.US]", "emergency = [911]: must be an array of strings"),
    ('"user_out", "conf_out"', '"user_out", "ucap_out"', CAP3,
     'credits_for = ["user_out", "ucap_out"]: "ucap_out" is not one of user_out, conf_out'),
    ('id = "MCOPSTNPP"', 'id = "MCOPSTN1"', '[[capability]] #3 "MCOPSTN1"',
     'id = "MCOPSTN1": [[capability]] #1 "MCOPSTN1" has the same id'),
    ('id = "MCOPSTNPP"', 'id = "mcopstnpp"', '[[capability]] #3 "mcopstnpp"', 'id = "mcopstnpp": must be 1–32 of'),
    ('name = "Communications Credits"', 'name = ""', CAP3, 'name = "": must be a human name'),
    ('name = "Communications Credits"\n', "", CAP3, 'missing field "name"'),
    ('credits_for = ["user_out", "conf_out"]\n', "", CAP3, "funds nothing: give it pools or credits_for"),
    ('minutes = "plan"', 'minutes = "plans"', f'{CAP1} pools #1 (scope "domestic")',
     'minutes = "plans": no [minutes.plans] table'),
    ('{ "*" = 60 }', "{ US = 60 }", f'{CAP2} pools #1 (scope "zone_a")',
     'minutes = { US = 60 }: a zone_a pool is tenant-wide: give only "*"'),
    ('pools = [{ scope = "domestic", minutes = "plan" }]',
     'pools = [{ scope = "domestic", minutes = "plan" }, { scope = "domestic", minutes = { "*" = 1 } }]',
     f'{CAP1} pools #2 (scope "domestic")', 'scope = "domestic": this capability already has a pool of that scope'),
    ('calling_code = "44"', 'calling_code = "49"', "[countries.GB]",
     'calling_code = "49": no E.164 number of GB starts with +49'),
    ('calling_code = "44"', 'calling_code = "+44"', "[countries.GB]", 'calling_code = "+44": must be 1–3 digits'),
    ('calling_code = "1"', 'calling_code = "1"\nregion = "NA"', "[countries.US]", 'unknown field "region"'),
    ('premium_prefixes = ["449"]', 'premium_prefixes = ["339"]', "[countries.GB]",
     'premium_prefixes = ["339"]: "339" is not a digit prefix longer than, and inside, +44'),
    ('premium_prefixes = ["449"]', 'premium_prefixes = ["44"]', "[countries.GB]",
     'premium_prefixes = ["44"]: "44" is not a digit prefix longer than, and inside, +44'),
    ('version = "test-1"', 'version = ""', "top level", 'version = "": must be a version id'),
    ('version = "test-1"\n', "", "top level", 'missing field "version"'),
    ("format = 1", "format = 2", "top level", "format = 2: this rater reads format 1"),
    ("format = 1", 'format = 1\nplans = ["x"]', "top level", 'unknown field "plans"'),
])
def test_a_bad_catalog_is_refused_naming_file_entry_field_and_value(tmp_path: Path, old: str, new: str,
                                                                    entry: str, says: str) -> None:
    path = _write(tmp_path, "catalog.toml", _edit(CATALOG, old, new))
    with pytest.raises(DataFileError) as error:
        load_catalog(path)
    assert str(error.value).startswith(f"{path}: {entry}: {says}")


@pytest.mark.parametrize("loader", [load_catalog, load_tariffs])
def test_a_missing_or_broken_file_says_so(tmp_path: Path, loader: object) -> None:
    assert callable(loader)
    with pytest.raises(DataFileError, match="file not found"):
        loader(tmp_path / "nope.toml")
    broken = _write(tmp_path, "broken.toml", "version = \n")
    with pytest.raises(DataFileError, match=f"{broken}: not valid TOML"):
        loader(broken)


# --- choosing the files: argument, environment, shipped default ----------------------------

def test_rater_catalog_and_rater_tariff_point_the_loaders_at_the_operators_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = _write(tmp_path, "catalog.toml", _edit(CATALOG, 'version = "test-1"', 'version = "from-env"'))
    tariff = _write(tmp_path, "tariff.toml", _edit(TARIFF, 'id = "v1"', 'id = "from-env"'))
    assert load_catalog().version == "2026-01"
    monkeypatch.setenv("RATER_CATALOG", str(catalog))
    monkeypatch.setenv("RATER_TARIFF", str(tariff))
    assert load_catalog().version == "from-env"
    assert load_tariffs().versions[0].version == "from-env"
    ctx = rating_context()
    assert (ctx.catalog.version, ctx.tariffs.versions[0].version) == ("from-env", "from-env")
    assert ctx.exponents["JPY"] == 0
    assert ctx.countries.country_of("+447700900123") == "GB"
    assert load_catalog(DEFAULT_CATALOG).version == "2026-01"  # an explicit path wins
    assert rating_context(DEFAULT_TARIFF, DEFAULT_CATALOG).tariffs.versions[0].version == "2026-01"
    settings = Settings.from_env()
    assert (settings.catalog_path, settings.tariff_path) == (str(catalog), str(tariff))


def test_rater_worker_refuses_a_bad_catalog_before_starting(tmp_path: Path) -> None:
    bad = _write(tmp_path, "catalog.toml", _edit(CATALOG, "GB = 1200", "GB = -5"))
    result = CliRunner().invoke(main, ["worker", "--catalog", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}: [minutes.plan]: GB = -5" in result.output
