"""E.164 → country by the longest prefix, from the table generated out of libphonenumber."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from rater.catalog import COUNTRY_PREFIXES, country_prefixes

TOOL = Path(__file__).resolve().parent.parent / "tools" / "gen_country_prefixes.py"


@pytest.mark.parametrize(("number", "country"), [
    ("+12125550123", "US"), ("+14165550100", "CA"), ("+16045550100", "CA"), ("+17875550100", "PR"),
    ("+18095550100", "DO"), ("+442071838750", "GB"), ("+441624123456", "IM"), ("+4930901820", "DE"),
    ("+33142685300", "FR"), ("+31201234567", "NL"), ("+35312345678", "IE"), ("+34912345678", "ES"),
    ("+390612345678", "IT"), ("+48221234567", "PL"), ("+46812345678", "SE"), ("+61212345678", "AU"),
    ("+81312345678", "JP"), ("+911123456789", "IN"), ("+5511912345678", "BR"), ("+525512345678", "MX"),
    ("+77012345678", "KZ"), ("+74951234567", "RU"),
])
def test_destination_country_comes_from_the_longest_e164_prefix(number: str, country: str) -> None:
    assert country_prefixes().country_of(number) == country


def test_a_number_without_a_country_code_has_no_country() -> None:
    assert country_prefixes().country_of("911") is None
    assert country_prefixes().country_of("+999123") is None


def test_the_committed_table_is_what_the_generator_makes_today() -> None:
    spec = importlib.util.spec_from_file_location("gen_country_prefixes", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_country_prefixes"] = module
    spec.loader.exec_module(module)
    assert COUNTRY_PREFIXES.read_text() == module.render(module.generate()), (
        "rater/data/country_prefixes.json is stale: run tools/gen_country_prefixes.py")
