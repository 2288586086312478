"""rater.notifier.render: what the notifier's e-mails say (issue 14), without Kafka.

Golden files: tests/golden/notifier/<locale>/<kind>.txt (the subject line, then the plain
text) and .html, for every kind × locale. ``UPDATE_GOLDEN=1 pytest tests/test_notifier_render.py``
rewrites them from the templates and catalogs; a rewrite is reviewed like code.

Review: the golden subjects and bodies of all six locales (en, pt-BR, es, ru, zh-CN, it) were
read and corrected against the seed articles' terms (Créditos de Comunicação, créditos de
comunicaciones, кредиты на связь, 通信点数, Crediti comunicazioni) — helper review, 2026-12-04.
"""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from rater import schemas
from rater.notifier.render import KINDS, KNOWN_REASONS, LOCALES, Rendered, catalog, render, resolve_locale

GOLDEN = Path(__file__).resolve().parent / "golden" / "notifier"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

# One currency per locale, the one its tenants would likely use.
CURRENCY = {"en": "USD", "pt-BR": "BRL", "es": "EUR", "ru": "RUB", "zh-CN": "CNY", "it": "EUR"}


def event(kind: str, currency: str = "USD", **fields: Any) -> dict[str, Any]:
    """A valid rater output event of ``kind`` (checked against its schema)."""
    base: dict[str, Any] = {
        "type": kind, "schema_version": 1, "event_id": f"{kind}:acme-corp:rq-7f3a:0",
        "tenant_id": "acme-corp", "occurred_at": "2026-12-04T13:47:05Z",
    }
    by_kind: dict[str, dict[str, Any]] = {
        "recharge_succeeded": {"request_id": "rq-7f3a", "amount": "1000.00", "balance": "1012.50",
                               "currency": currency},
        "recharge_failed": {"request_id": "rq-7f3a", "reason": "card_expired",
                            "retry_after": "2026-12-04T14:47:05Z"},
        "balance_depleted": {"currency": currency},
        "low_balance": {"balance": "4.75", "threshold": "10.00", "currency": currency},
    }
    payload = {**base, **by_kind[kind], **fields}
    assert schemas.first_error(kind, payload) is None, schemas.first_error(kind, payload)
    return payload


def _golden(kind: str, locale: str) -> tuple[str, str]:
    rendered = render(event(kind, CURRENCY[locale]), locale)
    return f"Subject: {rendered.subject}\n\n{rendered.text}", rendered.html


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", KINDS)
def test_golden(kind: str, locale: str) -> None:
    text, html = _golden(kind, locale)
    folder = GOLDEN / locale
    if UPDATE:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{kind}.txt").write_text(text, encoding="utf-8")
        (folder / f"{kind}.html").write_text(html, encoding="utf-8")
    assert (folder / f"{kind}.txt").read_text(encoding="utf-8") == text
    assert (folder / f"{kind}.html").read_text(encoding="utf-8") == html


def test_golden_folder_holds_nothing_else() -> None:
    expected = {f"{locale}/{kind}.{fmt}" for locale in LOCALES for kind in KINDS for fmt in ("txt", "html")}
    assert {p.relative_to(GOLDEN).as_posix() for p in GOLDEN.rglob("*") if p.is_file()} == expected


@pytest.mark.parametrize(("tag", "expected"), [
    ("en", "en"), ("en-US", "en"), ("EN-gb", "en"),
    ("pt", "pt-BR"), ("pt-BR", "pt-BR"), ("pt-br", "pt-BR"), ("pt-PT", "pt-BR"), ("pt_BR", "pt-BR"),
    ("es", "es"), ("es-MX", "es"), ("ES-es", "es"),
    ("ru", "ru"), ("ru-RU", "ru"),
    ("zh", "zh-CN"), ("zh-CN", "zh-CN"), ("zh-Hans", "zh-CN"), ("zh-Hans-CN", "zh-CN"), ("ZH-HANS-cn", "zh-CN"),
    ("it", "it"), ("it-CH", "it"), ("it-IT", "it"),
    (None, "en"), ("", "en"), ("de", "en"), ("x", "en"), ("fr-CA", "en"), ("eng", "en"),
])
def test_resolve_locale(tag: str | None, expected: str) -> None:
    assert resolve_locale(tag) == expected


def test_render_takes_any_tag_of_a_written_locale() -> None:
    assert render(event("low_balance"), "pt-PT") == render(event("low_balance"), "pt-BR")
    assert render(event("low_balance"), "de-DE") == render(event("low_balance"), None)


def test_catalogs_have_the_same_keys_and_placeholders() -> None:
    def flat(messages: dict[str, Any], prefix: str = "") -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for key, value in messages.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[prefix + key] = {name for _, name, _, _ in string.Formatter().parse(value) if name}
        return out

    english = flat(dict(catalog("en")))
    assert set(english) >= {f"reasons.{reason}" for reason in KNOWN_REASONS}
    for locale in LOCALES:
        assert flat(dict(catalog(locale))) == english, locale
    shipped = {p.name for p in resources.files("rater.notifier").joinpath("locales").iterdir()}
    assert shipped == {f"{locale}.json" for locale in LOCALES}
    for locale in LOCALES:  # valid JSON with no duplicate keys
        text = resources.files("rater.notifier").joinpath("locales", f"{locale}.json").read_text(encoding="utf-8")
        json.loads(text, object_pairs_hook=lambda pairs: dict(_no_duplicates(pairs)))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), keys
    return pairs


HOSTILE = "<script>alert('x')</script>&"


def test_html_escapes_a_hostile_tenant_id_and_reason() -> None:
    # The schema keeps tenant ids to [A-Za-z0-9._-]; the renderer does not rely on it.
    payload = event("recharge_failed", reason=HOSTILE)
    payload["tenant_id"] = HOSTILE
    for locale in LOCALES:
        rendered = render(payload, locale)
        assert "<script>" not in rendered.html
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;" in rendered.html
        assert HOSTILE in rendered.text  # plain text shows it as it is
        assert HOSTILE in rendered.subject


def test_the_subject_is_one_line_whatever_a_value_holds() -> None:
    payload = event("low_balance")
    payload["tenant_id"] = "acme\r\nBcc: victim@example.com"
    subject = render(payload, "en").subject
    assert "\n" not in subject
    assert "\r" not in subject
    assert subject.startswith("[acme Bcc: victim@example.com] ")
    assert "\xa0" in render(event("recharge_succeeded", "BRL"), "pt-BR").subject  # R$\xa01.000,00 stays together


@pytest.mark.parametrize("reason", KNOWN_REASONS)
def test_each_known_reason_has_its_own_sentence(reason: str) -> None:
    for locale in LOCALES:
        rendered = render(event("recharge_failed", reason=reason), locale)
        assert catalog(locale)["reasons"][reason] in rendered.text
        assert reason not in rendered.text  # the code itself is not shown


def test_an_unknown_reason_is_quoted_after_a_generic_sentence() -> None:
    rendered = render(event("recharge_failed", reason="xyz_limit_exceeded"), "en")
    assert "The payment processor declined the payment (reason: xyz_limit_exceeded)." in rendered.text
    assert "(reason: xyz_limit_exceeded)." in rendered.html
    assert "update it" in rendered.text  # a decline: the admin is asked to check the payment method
    unknown = event("recharge_failed", reason="xyz_limit_exceeded")
    assert "(motivo: xyz_limit_exceeded)." in render(unknown, "pt-BR").text
    assert "（原因：xyz_limit_exceeded）。" in render(unknown, "zh-CN").text


def test_a_timeout_asks_for_nothing_but_says_when_it_retries() -> None:
    text = render(event("recharge_failed", reason="timeout"), "en").text
    assert "The payment processor did not respond." in text
    assert "No action is needed on your part." in text
    assert "update it" not in text
    assert "tried again after December 4, 2026, 2:47:05\u202fPM UTC." in text


@pytest.mark.parametrize(("locale", "amount", "currency", "shown"), [
    ("pt-BR", "10.00", "BRL", "R$\xa010,00"),
    ("es", "10.00", "EUR", "10,00\xa0€"),
    ("it", "10.00", "EUR", "10,00\xa0€"),
    ("ru", "1000.00", "RUB", "1\xa0000,00\xa0₽"),
    ("en", "1000", "JPY", "¥1,000"),
    ("zh-CN", "1000", "JPY", "JP¥1,000"),  # in zh-CN a bare ¥ is the yuan (CLDR)
    ("zh-CN", "1000.00", "CNY", "¥1,000.00"),
    ("en", "1.2345", "CLF", "CLF1.2345"),  # four decimals, not rounded
    ("es", "1.2345", "CLF", "1,2345\xa0CLF"),
    ("en", "123456789012345678.99", "USD", "$123,456,789,012,345,678.99"),  # no float on the way
    ("en", "0.1", "USD", "$0.10"),
])
def test_money_is_formatted_per_locale_from_the_decimal_string(
        locale: str, amount: str, currency: str, shown: str) -> None:
    rendered = render(event("recharge_succeeded", currency, amount=amount, balance=amount), locale)
    assert shown in rendered.subject
    assert shown in rendered.text
    assert shown in rendered.html


def test_more_digits_than_the_currency_has_are_never_rounded_away() -> None:
    # The rater never sends these (it checks minor units); the renderer still shows the exact amount.
    rendered = render(event("low_balance", "JPY", balance="4.5", threshold="10"), "en")
    assert "¥4.5" in rendered.text
    assert "¥10" in rendered.text


def test_zero_balance_is_shown_in_the_currency() -> None:
    assert "R$\xa00,00" in render(event("balance_depleted", "BRL"), "pt-BR").text
    assert "¥0" in render(event("balance_depleted", "JPY"), "en").text


def test_dates_are_utc_with_the_zone_said() -> None:
    payload = event("recharge_failed", occurred_at="2026-12-31T23:59:59.123456Z", retry_after="2027-01-01T00:04:59Z")
    ru = render(payload, "ru").text
    assert "31 декабря 2026\u202fг., 23:59:59 UTC" in ru  # Babel's narrow no-break space before г.
    assert "после 1 января 2027\u202fг., 00:04:59 UTC." in ru
    assert "2026年12月31日 UTC 23:59:59" in render(payload, "zh-CN").text


def test_unknown_kind_raises_value_error() -> None:
    for kind in ("funds_added", "", None, "RECHARGE_SUCCEEDED"):
        with pytest.raises(ValueError, match="no notification for event type"):
            render({**event("low_balance"), "type": kind}, "en")
    with pytest.raises(ValueError, match="no notification"):
        render({}, "en")


def test_rendering_is_deterministic() -> None:
    for kind in KINDS:
        for locale in LOCALES:
            first = render(event(kind, CURRENCY[locale]), locale)
            again = render(json.loads(json.dumps(event(kind, CURRENCY[locale]))), locale)
            assert isinstance(first, Rendered)
            assert first == again
            assert first.subject.encode() == again.subject.encode()


def test_rendering_is_the_same_in_a_fresh_interpreter() -> None:
    code = ("import json, sys; from rater.notifier.render import render; "
            "r = render(json.loads(sys.argv[1]), 'ru'); print(json.dumps([r.subject, r.text, r.html]))")
    payload = event("recharge_succeeded", "RUB")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(payload)], capture_output=True, text=True,
                         check=True, env={**os.environ, "TZ": "Asia/Tokyo", "LANG": "de_DE.UTF-8"}).stdout
    rendered = render(payload, "ru")
    assert json.loads(out) == [rendered.subject, rendered.text, rendered.html]


def test_money_never_goes_through_a_float() -> None:
    source = resources.files("rater.notifier").joinpath("render.py").read_text(encoding="utf-8")
    assert "float(" not in source
    assert "Decimal(amount)" in source


def test_templates_ship_in_the_package() -> None:
    templates = {p.name for p in resources.files("rater.notifier").joinpath("templates").iterdir()}
    assert templates >= {f"{kind}.{fmt}" for kind in KINDS for fmt in ("txt", "html")} | {"base.txt", "base.html"}
