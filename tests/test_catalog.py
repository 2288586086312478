"""Tariff files are data: validated on load, with errors naming file, entry, field and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from rater.catalog import DataFileError, currency_exponents, load_tariff

HEAD = 'version = "v1"\neffective_from = "2026-01-01T00:00:00Z"\n'
GOOD = '[[rate]]\ncurrency = "USD"\nclass = "outbound"\nprefix = "44"\nrate_per_min = "0.010000"\nincrement = "30/6"\n'


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tariff.toml"
    path.write_text(HEAD + text)
    return path


def test_the_shipped_tariff_loads_and_has_a_catch_all_for_every_class() -> None:
    tariff = load_tariff()
    for currency in ("USD", "EUR", "GBP", "JPY"):
        for call_class in ("outbound", "toll_free_inbound", "conf_dialout"):
            assert tariff.rate_for(currency, call_class, "+999123") is not None


def test_iso4217_minor_units_come_from_the_data_package() -> None:
    exponents = currency_exponents()
    assert (exponents["USD"], exponents["JPY"], exponents["BHD"]) == (2, 0, 3)


def test_a_good_file_loads_with_increments_and_rates_as_integers(tmp_path: Path) -> None:
    rate = load_tariff(_write(tmp_path, GOOD)).rate_for("USD", "outbound", "+442071838750")
    assert rate is not None
    assert (rate.rate_micro_per_min, rate.first_s, rate.next_s) == (10_000, 30, 6)


@pytest.mark.parametrize(("entry", "says"), [
    (GOOD.replace('"USD"', '"XYZ"'), "currency 'XYZ'"),
    (GOOD.replace('"outbound"', '"inbound"'), "class 'inbound'"),
    (GOOD.replace('"44"', '"+44"'), "prefix '+44'"),
    (GOOD.replace('"30/6"', '"30"'), "increment '30'"),
    (GOOD.replace('"0.010000"', '"0.0100001"'), "7 decimals"),
    (GOOD.replace('rate_per_min = "0.010000"\n', ""), "missing field 'rate_per_min'"),
    (GOOD + 'connection_fee = "0.001"\n', "3 decimals"),
    (GOOD + GOOD, "duplicate rate"),
])
def test_a_bad_entry_is_refused_naming_file_entry_and_value(tmp_path: Path, entry: str, says: str) -> None:
    path = _write(tmp_path, entry)
    with pytest.raises(DataFileError) as error:
        load_tariff(path)
    assert str(path) in str(error.value)
    assert "[[rate]] #" in str(error.value)
    assert says in str(error.value)


def test_a_missing_or_broken_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="not found"):
        load_tariff(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("version = \n")
    with pytest.raises(DataFileError, match="not valid TOML"):
        load_tariff(broken)
