"""What the notifier's e-mails say: subject, plain text and HTML of one event in one locale.

Pure and deterministic: nothing random, no clock; the same event and locale give the same
bytes. The layout is one Jinja2 template per kind and format (``templates/<kind>.txt`` and
``.html``, both extending ``base.txt`` / ``base.html``); the words are per-locale message
catalogs as data (``locales/<locale>.json``), all with the same keys and placeholders.
Money and dates are formatted per locale with Babel, money from the event's decimal strings
(never a float, never rounded), dates in UTC with the zone said.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache, partial
from importlib import resources
from typing import Any

from babel.dates import format_datetime
from babel.numbers import format_currency
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

KINDS = ("recharge_succeeded", "recharge_failed", "balance_depleted", "low_balance")
LOCALES = ("en", "pt-BR", "es", "ru", "zh-CN", "it")

# recharge_failed reasons with a sentence of their own; any other is quoted after a generic one.
KNOWN_REASONS = (
    "timeout", "card_expired", "insufficient_funds", "card_declined", "do_not_honor",
    "processing_error", "fraud_suspected", "invalid_card",
)
# Failures on the processor's side: the payment method is likely fine, so no action is asked.
TRANSIENT_REASONS = frozenset({"timeout", "processing_error"})

_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
_BY_LANGUAGE = {"en": "en", "pt": "pt-BR", "es": "es", "ru": "ru", "zh": "zh-CN", "it": "it"}
_BABEL = {"en": "en", "pt-BR": "pt_BR", "es": "es", "ru": "ru", "zh-CN": "zh_Hans_CN", "it": "it"}


def resolve_locale(tag: str | None) -> str:
    """The written locale for a BCP 47 tag: its language decides (``pt-PT`` → ``pt-BR``,
    ``es-MX`` → ``es``, ``zh-Hans-CN`` → ``zh-CN``); case-insensitive; anything else → ``en``."""
    if not tag:
        return "en"
    language = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    return _BY_LANGUAGE.get(language, "en")


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str  # plain-text body
    html: str  # HTML alternative (autoescaped)


@cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("rater.notifier", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@cache
def catalog(locale: str) -> Mapping[str, Any]:
    """The message catalog of a written locale (one of LOCALES)."""
    text = resources.files("rater.notifier").joinpath("locales", f"{locale}.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _text(message: str, **values: str) -> str:
    return message.format(**values)


def _html(message: str, **values: str) -> Markup:
    # The message is ours (escaped as text); the values are escaped by Markup.format.
    return escape(message).format(**values)


def _money(amount: str, currency: str, babel_locale: str) -> str:
    # decimal_quantization=False: pad to the currency's digits but never round extra ones away.
    return format_currency(Decimal(amount), currency, locale=babel_locale, decimal_quantization=False)


def _when(timestamp: str, babel_locale: str) -> str:
    moment = datetime.fromisoformat(timestamp)
    if moment.tzinfo is None:
        raise ValueError(f"a time without an offset: {timestamp!r}")
    return format_datetime(moment.astimezone(UTC), "long", tzinfo=UTC, locale=babel_locale)


def _values(event: Mapping[str, Any], locale: str) -> dict[str, str]:
    """Every value a template may show, already formatted for the locale (as text)."""
    kind = event["type"]
    babel_locale = _BABEL[locale]
    values = {
        "tenant": str(event["tenant_id"]),
        "event_id": str(event["event_id"]),
        "occurred_at": _when(event["occurred_at"], babel_locale),
    }
    if kind == "recharge_succeeded":
        values["amount"] = _money(event["amount"], event["currency"], babel_locale)
        values["balance"] = _money(event["balance"], event["currency"], babel_locale)
        values["request_id"] = str(event["request_id"])
    elif kind == "recharge_failed":
        values["request_id"] = str(event["request_id"])
        values["reason"] = str(event["reason"])
        values["retry_after"] = _when(event["retry_after"], babel_locale)
    elif kind == "balance_depleted":
        values["balance"] = _money("0", event["currency"], babel_locale)
    else:  # low_balance
        values["balance"] = _money(event["balance"], event["currency"], babel_locale)
        values["threshold"] = _money(event["threshold"], event["currency"], babel_locale)
    return values


def _reason_message(reason: str, messages: Mapping[str, Any]) -> str:
    if reason in KNOWN_REASONS:
        known: str = messages["reasons"][reason]
        return known
    other: str = messages["reason_other"]
    return other


def _one_line(text: str) -> str:
    """A header-safe line: line breaks and other control characters become one space (no-break spaces stay)."""
    return _CONTROL.sub(" ", text).strip()


def render(event: dict[str, Any], locale: str | None) -> Rendered:
    """Subject, plain text and HTML of one rater output event, in ``locale`` (any BCP 47 tag).

    Raises ValueError for an event type not in KINDS.
    """
    kind = event.get("type")
    if kind not in KINDS:
        raise ValueError(f"no notification for event type {kind!r}")
    written = resolve_locale(locale)
    messages = catalog(written)
    values = _values(event, written)
    heading = _one_line(messages[kind]["subject"].format(**values))
    subject = _one_line(messages["subject_prefix"].format(**values)) + " " + heading
    context: dict[str, Any] = {
        "lang": written,
        "subject": subject,
        "heading": heading,
        "m": messages,
        "k": messages[kind],
        "v": values,
        "reason_message": _reason_message(values["reason"], messages) if "reason" in values else "",
        "transient": values.get("reason") in TRANSIENT_REASONS,
    }
    env = _environment()
    formats: dict[str, Callable[..., str]] = {"txt": _text, "html": _html}
    bodies = {
        fmt: env.get_template(f"{kind}.{fmt}").render(context, t=partial(fill, **values))
        for fmt, fill in formats.items()
    }
    return Rendered(subject=subject, text=bodies["txt"], html=bodies["html"])
