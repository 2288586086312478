"""Generate ``rater/data/country_prefixes.json``: E.164 digit prefix → ISO 3166 country.

The table comes from Google's libphonenumber metadata (the ``phonenumbers`` package, a dev
dependency): every country calling code maps to its main region; regions that share a
code get their own longer prefixes — NANP area codes (+1 416 → CA, +1 787 → PR) from
each region's number pattern, the others from their ``leading_digits``. The rater looks
up the longest prefix. Regenerate after upgrading phonenumbers:

    .venv/bin/python tools/gen_country_prefixes.py

``tests/test_country_prefixes.py`` fails when the committed file and a fresh generation
differ.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from pathlib import Path

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE
from phonenumbers.phonemetadata import PhoneMetadata

TARGET = Path(__file__).resolve().parent.parent / "rater" / "data" / "country_prefixes.json"
MAX_PREFIX_DIGITS = 5  # the longest leading-digits prefix in the metadata (IM 74576, VA 06698)


def _minimal_prefixes(pattern: str) -> list[str]:
    """The shortest digit strings that fully match ``pattern`` (a leading-digits regex)
    and have no shorter matching prefix: ``8[024]9`` → 809, 829, 849."""
    regex = re.compile(pattern)
    found: list[str] = []
    for length in range(1, MAX_PREFIX_DIGITS + 1):
        for digits in itertools.product("0123456789", repeat=length):
            text = "".join(digits)
            if any(text.startswith(shorter) for shorter in found):
                continue
            if regex.fullmatch(text):
                found.append(text)
    return found


def _nanp_regions() -> dict[str, str]:
    """Area code → region for NANP area codes not of the main region (US): the region
    libphonenumber gives valid numbers of that area code (Canada has no leading digits)."""
    found: dict[str, str] = {}
    for area in range(200, 1000):
        votes: dict[str, int] = {}
        for subscriber in ("2345678", "2223333", "4567890", "8675309", "3214567", "7654321"):
            number = phonenumbers.parse(f"+1{area}{subscriber}")
            if phonenumbers.is_valid_number(number):
                region = phonenumbers.region_code_for_number(number)
                votes[region] = votes.get(region, 0) + 1
        if votes:
            region = max(sorted(votes), key=lambda r: votes[r])
            if region != "US":
                found[str(area)] = region
    return found


def generate() -> dict[str, str]:
    """Prefix (digits after '+') → ISO 3166-1 alpha-2 region code."""
    table: dict[str, str] = {}
    for code, all_regions in sorted(COUNTRY_CODE_TO_REGION_CODE.items()):
        regions = tuple(r for r in all_regions if r != "001")  # 001: non-geographic (satellite etc.)
        if not regions:
            continue
        table[str(code)] = regions[0]  # the main region takes what no longer prefix claims
        for region in regions[1:]:
            metadata = PhoneMetadata.metadata_for_region(region)
            if metadata is None:
                continue
            if metadata.leading_digits:
                prefixes = _minimal_prefixes(metadata.leading_digits)
            else:
                continue  # shares the code with no distinguishing prefix (e.g. GG, JE → GB)
            for prefix in prefixes:
                table.setdefault(f"{code}{prefix}", region)
    for area, region in _nanp_regions().items():  # e.g. Canada, which has no leading digits
        table.setdefault(f"1{area}", region)
    return dict(sorted(table.items()))


def render(table: dict[str, str]) -> str:
    """The committed file's exact text."""
    body = {"source": f"phonenumbers {phonenumbers.__version__}", "prefixes": table}
    return json.dumps(body, indent=0, sort_keys=True) + "\n"


if __name__ == "__main__":
    prefixes = generate()
    TARGET.write_text(render(prefixes))
    print(f"wrote {TARGET} ({len(prefixes)} prefixes)", file=sys.stderr)
