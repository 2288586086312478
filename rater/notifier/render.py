"""What a notification e-mail says: subject, plain text and HTML, in the tenant's locale.

placeholder: replaced by the i18n renderer (English only here; the interface is the real one).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

KINDS = ("recharge_succeeded", "recharge_failed", "balance_depleted", "low_balance")
LOCALES = ("en", "pt-BR", "es", "ru", "zh-CN", "it")


def resolve_locale(tag: str | None) -> str:
    """The written locale closest to BCP 47 ``tag`` (``en`` for any other)."""
    if not tag:
        return "en"
    for locale in LOCALES:
        if locale.lower() == tag.lower():
            return locale
    language = tag.split("-")[0].lower()
    return next((locale for locale in LOCALES if locale.split("-")[0].lower() == language), "en")


@dataclass(frozen=True, slots=True)
class Rendered:
    """One e-mail's subject, plain-text body and HTML body."""

    subject: str
    text: str
    html: str


_SUBJECTS = {
    "recharge_succeeded": "Recharge of {amount} {currency} succeeded",
    "recharge_failed": "Recharge failed: {reason}",
    "balance_depleted": "Your balance reached zero",
    "low_balance": "Low balance: {balance} {currency}",
}


def render(event: dict[str, Any], locale: str | None) -> Rendered:
    """The e-mail for ``event`` (one of :data:`KINDS`); ``ValueError`` for another kind."""
    kind = event.get("type")
    if kind not in _SUBJECTS:
        raise ValueError(f"no e-mail for events of type {kind!r}")
    resolve_locale(locale)
    subject = _SUBJECTS[kind].format_map({k: v for k, v in event.items() if isinstance(v, str)} | {
        "amount": event.get("amount", ""), "currency": event.get("currency", ""),
        "reason": event.get("reason", ""), "balance": event.get("balance", "")})
    text = f"{subject}\n\nTenant: {event.get('tenant_id')}\nEvent: {event.get('event_id')}\n"
    body = f"<p>{html.escape(subject)}</p><p>Tenant: {html.escape(str(event.get('tenant_id')))}</p>"
    return Rendered(subject=subject, text=text, html=f"<html><body>{body}</body></html>")
