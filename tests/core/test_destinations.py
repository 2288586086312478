"""The merged destination index answers exactly what the three separate longest-prefix
lookups (country table, premium prefixes, tariff) answer, for any number."""

from __future__ import annotations

from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from rater.catalog import rating_context
from rater.core.context import RatingContext

from .kit import CTX


@cache
def _shipped() -> RatingContext:
    return rating_context()


def _check(ctx: RatingContext, number: str) -> None:
    for tariff in ctx.tariffs.versions:
        found = ctx.destination(tariff, number)
        assert found.country == ctx.countries.country_of(number)
        assert found.premium == (number.startswith("+") and ctx.catalog.is_premium(number))
        for (currency, call_class) in tariff.rates:
            assert found.rates.get((currency, call_class)) == tariff.rate_for(currency, call_class, number)


digits = st.text(alphabet="0123456789", min_size=0, max_size=15)


@settings(max_examples=300, deadline=None)
@given(digits)
def test_the_index_agrees_with_separate_lookups_on_the_test_tables(number: str) -> None:
    _check(CTX, "+" + number)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["1", "1787", "44", "447", "4420", "49", "4915", "33", "91", "81", "55", "52", "61"]), digits)
def test_the_index_agrees_with_separate_lookups_on_the_shipped_tables(prefix: str, rest: str) -> None:
    _check(_shipped(), "+" + prefix + rest)


def test_short_codes_have_no_country_rate_or_premium() -> None:
    found = CTX.destination(CTX.tariffs.versions[0], "911")
    assert (found.country, found.premium, dict(found.rates)) == (None, False, {})
