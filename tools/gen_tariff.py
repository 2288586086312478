"""Generate ``rater/data/tariff.toml``, the rater's default tariff, from the tables below.

Prices are set here once, in USD per minute, per country block: the fixed, mobile, other
(special / non-geographic) and premium rates, the toll-free inbound rate, the billing
increment and any connection fee. Every other currency is the USD price times a fixed
exchange rate (``FX``), rounded half-up: rates to 4 decimals, connection fees to the
currency's minor unit (JPY: whole yen). Realistic, not real prices. Decimal only: no
float ever holds a price.

Rules the generator applies (and writes into the file's header):

- ``outbound``: the country calling code is a catch-all; fixed, mobile, other,
  toll-free and premium prefixes refine it (longest prefix wins). Calls to toll-free
  numbers cost the caller nothing (rate 0). Premium rows bill ``60/60`` with a connection
  fee.
- ``conf_dialout``: the same prefixes, rates ``CONF_MARKUP`` × outbound.
- ``toll_free_inbound``: the country's toll-free prefixes plus its calling code.
- No prefix outside the listed country codes: such a destination has no rate (``no_rate``).

Regenerate after editing a table (``tests/test_catalog.py`` fails when the committed
file and a fresh generation differ)::

    .venv/bin/python tools/gen_tariff.py
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal

from rater.catalog import DEFAULT_TARIFF, country_prefixes, currency_exponents

TARGET = DEFAULT_TARIFF

FX = {  # units of each currency per USD (fixed for the generated file)
    "USD": Decimal("1"), "EUR": Decimal("0.92"), "GBP": Decimal("0.79"), "CAD": Decimal("1.36"),
    "AUD": Decimal("1.52"), "JPY": Decimal("150"), "INR": Decimal("83"), "BRL": Decimal("5.00"),
    "MXN": Decimal("17.00"), "PLN": Decimal("4.00"), "SEK": Decimal("10.50"),
}
RATE_QUANTUM = Decimal("0.0001")
CONF_MARKUP = Decimal("1.15")
PREMIUM_INCREMENT = "60/60"
PREMIUM_FEE_USD = Decimal("0.10")
FREE = Decimal("0")
NANP_HOME = ("US", "CA", "PR")


@dataclass(frozen=True, slots=True)
class Block:
    """The prices of one country (or NANP), in USD per minute.

    The calling code is the catch-all: priced ``other`` when ``fixed_prefixes`` lists the
    geographic ranges (so unlisted special ranges cost more), else ``fixed``.
    """

    label: str
    code: str
    increment: str
    fixed: str
    toll_free_inbound: str
    mobile: str = "0"
    other: str | None = None
    fee: str = "0"
    """Connection fee (USD) on fixed, mobile and other calls."""
    fixed_prefixes: tuple[str, ...] = ()
    mobile_prefixes: tuple[str, ...] = ()
    toll_free_prefixes: tuple[str, ...] = ()
    premium: tuple[tuple[str, str], ...] = ()
    """(prefix, USD/min): the catalog's premium / excluded prefixes of this country."""
    special: tuple[tuple[str, str, str], ...] = ()
    """(prefix, kind, USD/min): ranges priced on their own."""


def _nanp_elsewhere() -> tuple[tuple[str, str, str], ...]:
    """NANP area codes of countries other than US, CA and PR (Caribbean, Pacific
    territories): priced as ``other``, so they are never rated at the US price."""
    table = country_prefixes().by_prefix
    return tuple(sorted((prefix, "other", "0.1500") for prefix, country in table.items()
                        if prefix.startswith("1") and len(prefix) == 4 and country not in NANP_HOME))


BLOCKS = (
    # NANP: US and Canada share one price (area codes are not split by country); Puerto
    # Rico has its own. Fixed and mobile numbers cannot be told apart, so no mobile rows.
    Block("US, CA, PR (NANP +1)", "1", "60/60", fixed="0.0100", toll_free_inbound="0.0190",
          special=(("1787", "fixed", "0.0180"), ("1939", "fixed", "0.0180"), *_nanp_elsewhere()),
          toll_free_prefixes=("1800", "1833", "1844", "1855", "1866", "1877", "1888"),
          premium=(("1900", "1.5000"),)),
    Block("GB United Kingdom", "44", "1/1", fixed="0.0120", mobile="0.0200", other="0.0600",
          toll_free_inbound="0.0260", fixed_prefixes=("441", "442", "443"), mobile_prefixes=("447",),
          special=(("4470", "other", "0.3000"), ("4476", "other", "0.1500")), toll_free_prefixes=("44800", "44808"),
          premium=(("449", "1.8000"), ("44842", "0.1200"), ("44843", "0.1200"), ("44844", "0.1200"),
                   ("44845", "0.1200"), ("44870", "0.1500"), ("44871", "0.1500"), ("44872", "0.1500"),
                   ("44873", "0.1500"))),
    Block("IE Ireland", "353", "1/1", fixed="0.0160", mobile="0.0400", other="0.0900",
          toll_free_inbound="0.0400", fixed_prefixes=("3531", "3532", "3534", "3535", "3536", "3539"),
          mobile_prefixes=("35383", "35385", "35386", "35387", "35388", "35389"),
          toll_free_prefixes=("3531800",), premium=(("35315", "1.5000"),)),
    Block("DE Germany", "49", "60/60", fixed="0.0140", mobile="0.0450", other="0.0800",
          toll_free_inbound="0.0320", fixed_prefixes=tuple(f"49{d}" for d in "23456789"),
          mobile_prefixes=("4915", "4916", "4917"), toll_free_prefixes=("49800",),
          premium=(("49137", "0.7000"), ("49900", "1.9000"))),
    Block("FR France", "33", "1/1", fixed="0.0130", mobile="0.0380", other="0.0900",
          toll_free_inbound="0.0300", fixed_prefixes=("331", "332", "333", "334", "335", "339"),
          mobile_prefixes=("336", "337"), toll_free_prefixes=tuple(f"3380{d}" for d in "012345"),
          premium=(("3389", "1.2000"),)),
    Block("NL Netherlands", "31", "1/1", fixed="0.0150", mobile="0.0500", other="0.0900",
          toll_free_inbound="0.0350", fixed_prefixes=("311", "312", "313", "314", "315", "317"),
          mobile_prefixes=("316",), toll_free_prefixes=("31800",),
          premium=(("31900", "1.1000"), ("31906", "1.1000"), ("31909", "1.1000"))),
    Block("BE Belgium", "32", "1/1", fixed="0.0150", mobile="0.0450", toll_free_inbound="0.0350",
          mobile_prefixes=("3245", "3246", "3247", "3248", "3249"), toll_free_prefixes=("32800",),
          premium=(("3290", "1.1000"),)),
    Block("LU Luxembourg", "352", "1/1", fixed="0.0150", mobile="0.0400", toll_free_inbound="0.0350",
          mobile_prefixes=("3526",), toll_free_prefixes=("352800",),
          premium=(("352900", "1.1000"), ("352901", "1.1000"), ("352905", "1.1000"))),
    Block("ES Spain", "34", "30/6", fixed="0.0140", mobile="0.0350", other="0.0900", fee="0.02",
          toll_free_inbound="0.0330", fixed_prefixes=("348", "349"), mobile_prefixes=("346", "347"),
          special=(("34901", "other", "0.0600"), ("34902", "other", "0.0600")), toll_free_prefixes=("34800", "34900"),
          premium=(("34803", "1.3000"), ("34806", "1.3000"), ("34807", "1.3000"), ("34905", "0.5000"))),
    Block("PT Portugal", "351", "30/6", fixed="0.0150", mobile="0.0350", toll_free_inbound="0.0350",
          mobile_prefixes=("3519",), toll_free_prefixes=("351800", "351802"), premium=(("35176", "1.2000"),)),
    Block("IT Italy", "39", "30/6", fixed="0.0150", mobile="0.0300", other="0.0900",
          toll_free_inbound="0.0340", fixed_prefixes=("390",), mobile_prefixes=("393",),
          toll_free_prefixes=("39800", "39803"), premium=(("3989", "1.4000"),)),
    Block("AT Austria", "43", "1/1", fixed="0.0150", mobile="0.0400", toll_free_inbound="0.0360",
          mobile_prefixes=("4365", "4366", "4367", "4368", "4369"), toll_free_prefixes=("43800",),
          premium=(("43900", "1.3000"), ("43901", "1.3000"), ("43930", "1.3000"), ("43931", "1.3000"),
                   ("43939", "1.3000"))),
    Block("CH Switzerland", "41", "1/1", fixed="0.0200", mobile="0.0600", toll_free_inbound="0.0450",
          mobile_prefixes=("4175", "4176", "4177", "4178", "4179"), toll_free_prefixes=("41800",),
          premium=(("41900", "1.6000"), ("41901", "1.6000"), ("41906", "1.6000"))),
    Block("PL Poland", "48", "30/6", fixed="0.0200", mobile="0.0300", toll_free_inbound="0.0380",
          mobile_prefixes=tuple(f"48{n}" for n in ("45", "50", "51", "53", "57", "60", "66", "69", "72", "73",
                                                   "78", "79", "88")),
          toll_free_prefixes=("48800",),
          premium=tuple((f"4870{d}", "0.9000") for d in "0134678")),
    Block("DK Denmark", "45", "1/1", fixed="0.0150", toll_free_inbound="0.0350",
          toll_free_prefixes=("4580",), premium=(("4590", "1.2000"),)),
    Block("SE Sweden", "46", "30/6", fixed="0.0150", mobile="0.0320", toll_free_inbound="0.0360",
          mobile_prefixes=("4670", "4672", "4673", "4676", "4679"), toll_free_prefixes=("4620",),
          premium=(("46900", "1.1000"), ("46939", "1.1000"), ("46944", "1.1000"))),
    Block("NO Norway", "47", "1/1", fixed="0.0150", mobile="0.0400", toll_free_inbound="0.0400",
          mobile_prefixes=("474", "479"), toll_free_prefixes=("47800", "47801"),
          premium=(("47820", "1.3000"), ("47829", "1.3000"))),
    Block("FI Finland", "358", "1/1", fixed="0.0200", mobile="0.0450", toll_free_inbound="0.0400",
          mobile_prefixes=("3584", "35850"), toll_free_prefixes=("358800",),
          premium=(("358600", "1.2000"), ("358700", "1.2000"))),
    Block("AU Australia", "61", "30/6", fixed="0.0250", mobile="0.0450", other="0.1200", fee="0.05",
          toll_free_inbound="0.0450", fixed_prefixes=("612", "613", "617", "618"), mobile_prefixes=("614",),
          toll_free_prefixes=("61180",), premium=(("61190", "2.0000"),)),
    Block("NZ New Zealand", "64", "30/6", fixed="0.0250", mobile="0.0500", toll_free_inbound="0.0500",
          mobile_prefixes=("642",), toll_free_prefixes=("64508", "64800"), premium=(("6490", "2.0000"),)),
    Block("JP Japan", "81", "1/1", fixed="0.0400", mobile="0.0900", toll_free_inbound="0.0700",
          mobile_prefixes=("8170", "8180", "8190"), special=(("8150", "other", "0.0500"),),
          toll_free_prefixes=("81120", "81800"), premium=(("81990", "1.6000"),)),
    Block("HK Hong Kong", "852", "60/60", fixed="0.0200", mobile="0.0250", toll_free_inbound="0.0500",
          mobile_prefixes=("8525", "8526", "8529"), toll_free_prefixes=("852800",),
          premium=(("852900", "1.5000"),)),
    Block("SG Singapore", "65", "60/60", fixed="0.0200", mobile="0.0250", toll_free_inbound="0.0500",
          mobile_prefixes=("658", "659"), toll_free_prefixes=("65800", "651800"), premium=(("651900", "1.5000"),)),
    # India: the catch-all is fixed; mobiles are the 6–9 ranges.
    Block("IN India", "91", "60/60", fixed="0.0300", mobile="0.0250", toll_free_inbound="0.0900",
          mobile_prefixes=("916", "917", "918", "919"), toll_free_prefixes=("911800",),
          premium=(("911861", "0.9000"), ("911862", "0.9000"))),
    # Brazil: a mobile number is area code + 9; every area code is listed.
    Block("BR Brazil", "55", "30/6", fixed="0.0350", mobile="0.0900", toll_free_inbound="0.0800",
          mobile_prefixes=tuple(f"55{area}9" for area in (
              *(f"{a}{b}" for a in "14689" for b in "123456789"), "21", "22", "24", "27", "28",
              "31", "32", "33", "34", "35", "37", "38", "51", "53", "54", "55",
              "71", "73", "74", "75", "77", "79")),
          toll_free_prefixes=("55800",), premium=(("55500", "1.2000"), ("55900", "1.2000"))),
    # Mexico: since 2019 fixed and mobile numbers share one plan, so one catch-all rate.
    Block("MX Mexico", "52", "60/60", fixed="0.0250", toll_free_inbound="0.0600",
          toll_free_prefixes=("52800", "52888"), premium=(("52900", "1.0000"),)),
)


@dataclass(frozen=True, slots=True)
class Changes:
    """What a later version changes: outbound USD rates by prefix (conference dial-out
    follows), and per calling code the increment, connection fee or toll-free inbound rate."""

    rates: Mapping[str, str] = field(default_factory=dict)
    increments: Mapping[str, str] = field(default_factory=dict)
    fees: Mapping[str, str] = field(default_factory=dict)
    toll_free_inbound: Mapping[str, str] = field(default_factory=dict)


VERSIONS = (
    ("2026-01", "2026-01-01T00:00:00Z", Changes()),
    ("2027-01", "2027-01-01T00:00:00Z", Changes(
        rates={"1": "0.0090", "447": "0.0150", "4915": "0.0400", "4916": "0.0400", "4917": "0.0400",
               "916": "0.0280", "917": "0.0280", "918": "0.0280", "919": "0.0280", "449": "2.0000"},
        increments={"33": "30/6"},
        fees={"61": "0.06"},
        toll_free_inbound={"44": "0.0240"},
    )),
)


@dataclass(frozen=True, slots=True)
class Row:
    """One ``[[version.rate]]`` in USD, before conversion."""

    call_class: str
    prefix: str
    kind: str
    increment: str
    rate_usd: Decimal
    fee_usd: Decimal


def _outbound(block: Block, changes: Changes) -> list[Row]:
    fee = Decimal(block.fee)
    catch_all = ("other", block.other) if block.other is not None else ("fixed", block.fixed)
    priced = [(block.code, *catch_all, fee)]
    priced += [(p, "fixed", block.fixed, fee) for p in block.fixed_prefixes]
    priced += [(p, "mobile", block.mobile, fee) for p in block.mobile_prefixes]
    priced += [(p, kind, usd, fee) for p, kind, usd in block.special]
    priced += [(p, "toll_free", "0", FREE) for p in block.toll_free_prefixes]
    priced += [(p, "premium", usd, PREMIUM_FEE_USD) for p, usd in block.premium]
    rows = []
    for prefix, kind, usd, fee_usd in sorted(priced):
        increment = PREMIUM_INCREMENT if kind == "premium" else block.increment
        rows.append(Row("outbound", prefix, kind, increment, Decimal(changes.rates.get(prefix, usd)), fee_usd))
    return rows


def _conf_dialout(outbound: list[Row]) -> list[Row]:
    return [replace(row, call_class="conf_dialout", rate_usd=(row.rate_usd * CONF_MARKUP).quantize(RATE_QUANTUM,
                                                                                                    ROUND_HALF_UP))
            for row in outbound]


def _toll_free_inbound(block: Block, changes: Changes) -> list[Row]:
    usd = Decimal(changes.toll_free_inbound.get(block.code, block.toll_free_inbound))
    prefixes = sorted((block.code, *block.toll_free_prefixes))
    return [Row("toll_free_inbound", prefix, "toll_free", block.increment, usd, FREE) for prefix in prefixes]


def _block(block: Block, changes: Changes) -> Block:
    return replace(block, increment=changes.increments.get(block.code, block.increment),
                   fee=changes.fees.get(block.code, block.fee))


def generate() -> list[tuple[str, str, list[tuple[str, list[Row]]]]]:
    """Versions as (id, effective_from, [(section comment, rows)]), classes in file order."""
    versions = []
    for version_id, effective_from, changes in VERSIONS:
        blocks = [_block(block, changes) for block in BLOCKS]
        outbound = [(block.label, _outbound(block, changes)) for block in blocks]
        sections = [(f"outbound — {label}", rows) for label, rows in outbound]
        sections += [(f"conf_dialout — {label}", _conf_dialout(rows)) for label, rows in outbound]
        sections += [(f"toll_free_inbound — {block.label}", _toll_free_inbound(block, changes)) for block in blocks]
        versions.append((version_id, effective_from, sections))
    return versions


def _amounts(usd: Decimal, quantum: Mapping[str, Decimal]) -> str:
    parts = (f'{currency} = "{(usd * rate).quantize(quantum[currency], ROUND_HALF_UP)}"'
             for currency, rate in FX.items())
    return "{ " + ", ".join(parts) + " }"


FX_TEXT = ", ".join(f"{currency} {rate}" for currency, rate in FX.items() if currency != "USD")
HEADER = f"""\
# GENERATED by tools/gen_tariff.py: do not edit by hand. Edit the tables in the script and run
#     .venv/bin/python tools/gen_tariff.py
# (tests/test_catalog.py fails when this file and a fresh generation differ).
#
# The rater's default tariff (SPEC §1.3). Realistic, not real prices. Operators replace it
# with `rater worker --tariff PATH` or RATER_TARIFF=PATH; the format is in docs/catalog.md and in
# rater/datafiles/tariffs.py. A call is rated by the [[version]] in force at its start time.
#
# Per rate: class (outbound | toll_free_inbound | conf_dialout), prefix (E.164 digits after
# "+", longest prefix wins), kind (informational), increment ("first/next" seconds),
# rate_per_min per currency (up to 6 decimals), connection_fee per currency (optional,
# in the currency's minor units).
#
# How this file is priced: in USD, converted at fixed rates ({FX_TEXT}
# per USD), rounded half-up (rates to 4 decimals, fees to the minor unit). Each country
# calling code is a catch-all ("fixed", or "other" where the geographic ranges are listed);
# NANP (+1): US and Canada share the "1" price, Puerto Rico (1787, 1939) and the other
# NANP countries' area codes have their own. Calls to toll-free numbers are free to the
# caller; premium rows bill {PREMIUM_INCREMENT} with a {PREMIUM_FEE_USD} USD connection fee; conf_dialout is
# {CONF_MARKUP} x outbound. A destination outside every listed country code has no rate.
"""


def render(versions: list[tuple[str, str, list[tuple[str, list[Row]]]]]) -> str:
    """The committed file's exact text."""
    exponents = currency_exponents()
    rate_quantum = dict.fromkeys(FX, RATE_QUANTUM)
    fee_quantum = {currency: Decimal(1).scaleb(-exponents[currency]) for currency in FX}
    lines = [HEADER, "format = 1"]
    for version_id, effective_from, sections in versions:
        lines += ["", "[[version]]", f'id = "{version_id}"', f'effective_from = "{effective_from}"']
        for comment, rows in sections:
            lines += ["", f"# {comment}"]
            for row in rows:
                lines += ["[[version.rate]]", f'class = "{row.call_class}"', f'prefix = "{row.prefix}"',
                          f'kind = "{row.kind}"', f'increment = "{row.increment}"',
                          f"rate_per_min = {_amounts(row.rate_usd, rate_quantum)}"]
                if row.fee_usd:
                    lines.append(f"connection_fee = {_amounts(row.fee_usd, fee_quantum)}")
    return "\n".join(lines) + "\n"


def rows(versions: list[tuple[str, str, list[tuple[str, list[Row]]]]]) -> Iterator[tuple[str, Row]]:
    """Every (version id, row), for checks."""
    for version_id, _effective_from, sections in versions:
        for _comment, section_rows in sections:
            for row in section_rows:
                yield version_id, row


if __name__ == "__main__":
    generated = generate()
    TARGET.write_text(render(generated))
    print(f"wrote {TARGET} ({sum(1 for _ in rows(generated))} rates)", file=sys.stderr)
