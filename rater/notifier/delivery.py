"""One delivery attempt to one target: an e-mail over SMTP or a signed webhook POST.

An attempt ends in an :class:`Outcome`: delivered, transient (worth another attempt
later: the server is down, busy or slow) or permanent (another attempt cannot help: the
mail server refused the recipient, the webhook answered 4xx, or its address is one a
tenant may not make the notifier call). Nothing here touches Kafka.

TLS is always verified, against the system's CA certificates and the operator's
(``RATER_SMTP_CA_FILE``, ``RATER_NOTIFY_WEBHOOK_CA_FILE``); a certificate that does not
verify (unknown CA, expired, another name) ends the attempt before anything is sent, as
a transient failure: certificates get renewed and CA files fixed, and the bounded retries
end in ``notification-failures`` with the verification error if they are not.

Both channels carry ids derived from the event, the same on every attempt, so a receiver
recognises a re-delivery: e-mails a ``Message-ID`` made from the event id and the
recipient, webhooks an ``Idempotency-Key`` header with the event id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

import rater
from rater.notifier.render import render, resolve_locale
from rater.notifier.settings import Network, NotifySettings

EMAIL = "email"
WEBHOOK = "webhook"
CHANNELS = (EMAIL, WEBHOOK)

DELIVERED = "delivered"
TRANSIENT = "transient"
PERMANENT = "permanent"
REFUSED = "refused"
"""A webhook URL the notifier will not call (scheme or address): permanent, never retried."""

SIGNATURE_HEADER = "Rater-Signature"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended; ``error`` says why it did not deliver."""

    status: str
    error: str | None = None

    @property
    def final(self) -> bool:
        """Whether another attempt cannot change anything."""
        return self.status != TRANSIENT


OK = Outcome(DELIVERED)


def delivery_key(event_id: str, channel: str, target: str) -> str:
    """The identity of one delivery: what the delivered table remembers."""
    return f"{event_id} {channel} {target}"


def message_id(event_id: str, target: str, domain: str) -> str:
    """The e-mail's ``Message-ID``: the same for every attempt of this event to this recipient."""
    digest = hashlib.sha256(f"{event_id}\n{target}".encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Rater-Signature`` header: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "t." + body>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


@cache
def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying client context: the system's CA certificates and ``ca_file``'s."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


# --- e-mail --------------------------------------------------------------------------


def email_message(event: dict[str, Any], target: str, locale: str | None, settings: NotifySettings) -> EmailMessage:
    """The multipart/alternative (plain text + HTML) e-mail of ``event`` to ``target``."""
    rendered = render(event, locale)
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = target
    message["Subject"] = rendered.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id(event["event_id"], target, settings.mail_domain)
    message["X-Rater-Event-Id"] = event["event_id"]
    message["X-Rater-Event-Type"] = event["type"]
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    message["Content-Language"] = resolve_locale(locale)  # after the bodies: set_content drops Content-*
    return message


async def send_email(event: dict[str, Any], target: str, locale: str | None, settings: NotifySettings) -> Outcome:
    """One attempt to mail ``event`` to ``target``."""
    message = email_message(event, target, locale, settings)
    try:
        await aiosmtplib.send(
            message, hostname=settings.smtp_host, port=settings.smtp_port,
            username=settings.smtp_user, password=settings.smtp_password,
            use_tls=settings.smtp_tls == "tls", start_tls=settings.smtp_tls == "starttls",
            tls_context=tls_context(settings.smtp_ca_file), timeout=settings.timeout_s)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        status = PERMANENT if any(code >= 500 for code in codes) else TRANSIENT
        return Outcome(status, f"smtp: recipient refused: {'; '.join(f'{r.code} {r.message}' for r in exc.recipients)}")
    except (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPDataError) as exc:
        return Outcome(PERMANENT if exc.code >= 500 else TRANSIENT, f"smtp: {exc.code} {exc.message}")
    except aiosmtplib.SMTPResponseException as exc:  # the server or our login: not this recipient
        return Outcome(TRANSIENT, f"smtp: {type(exc).__name__}: {exc.code} {exc.message}")
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return Outcome(TRANSIENT, f"smtp: {type(exc).__name__}: {exc}")
    return OK


# --- webhooks ------------------------------------------------------------------------


class Refused(Exception):
    """A webhook URL the notifier will not call."""


def address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                    allowed: tuple[Network, ...]) -> bool:
    """Whether the notifier may connect to ``address``: a public unicast address, or one
    inside a network the operator allowed."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed):
        return True
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_private
                                      or address.is_loopback or address.is_link_local or address.is_unspecified)


async def vetted_addresses(url: URL, settings: NotifySettings) -> list[ResolveResult]:
    """The addresses the notifier may connect to for ``url`` (resolved here, once:
    the connection goes to one of these, so a second DNS answer cannot move it);
    :class:`Refused` when there is none or the scheme is not allowed; ``OSError`` when
    the name does not resolve (transient)."""
    if url.scheme != "https" and not (url.scheme == "http" and settings.webhook_allow_http):
        raise Refused(f"scheme {url.scheme}: only https is allowed")
    host = url.raw_host
    port = url.port
    if not host or port is None:
        raise Refused("no host")
    try:
        literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        candidates = [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, str(literal))]
    else:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        candidates = [(family, str(sockaddr[0])) for family, _t, _p, _c, sockaddr in infos]
    results: list[ResolveResult] = []
    refused: list[str] = []
    for family, text in candidates:
        if address_allowed(ipaddress.ip_address(text.split("%")[0]), settings.webhook_allowed_networks):
            results.append(ResolveResult(hostname=host, host=text, port=port, family=family,
                                         proto=socket.IPPROTO_TCP, flags=socket.AI_NUMERICHOST))
        else:
            refused.append(text)
    if not results:
        raise Refused(f"address {', '.join(sorted(set(refused)))} is not public (RATER_NOTIFY_WEBHOOK_ALLOW_CIDRS)")
    return results


class _Vetted(AbstractResolver):
    """A resolver that answers only with the addresses vetted before the request."""

    def __init__(self, results: list[ResolveResult]) -> None:
        self.results = results

    async def resolve(self, host: str, port: int = 0,  # noqa: ARG002 - vetted for this one host and port
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:  # noqa: ARG002
        return self.results

    async def close(self) -> None:
        return None


def dry_run(event: dict[str, Any], channel: str, target: str, locale: str | None, settings: NotifySettings) -> Outcome:
    """A delivery made but not sent (``RATER_NOTIFY_DRY_RUN``): the e-mail built, or the
    webhook's body signed — the notifier's own work, without the endpoint."""
    if channel == EMAIL:
        email_message(event, target, locale, settings).as_bytes()
    else:
        signature(settings.webhook_secret or "dry-run", 0, webhook_body(event))
    return OK


def webhook_body(event: dict[str, Any]) -> bytes:
    """What a webhook POSTs: the event's JSON."""
    return orjson.dumps(event)


async def send_webhook(event: dict[str, Any], target: str, settings: NotifySettings) -> Outcome:
    """One attempt to POST ``event`` to ``target``."""
    if settings.webhook_secret is None:
        return Outcome(PERMANENT, "webhook: no signing secret set (RATER_NOTIFY_WEBHOOK_SECRET)")
    try:
        url = URL(target)
        addresses = await vetted_addresses(url, settings)
    except Refused as exc:
        return Outcome(REFUSED, f"webhook: refused: {exc}")
    except ValueError as exc:
        return Outcome(REFUSED, f"webhook: refused: bad URL: {exc}")
    except OSError as exc:
        return Outcome(TRANSIENT, f"webhook: cannot resolve {url.raw_host}: {exc}")
    body = webhook_body(event)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"rater-notify/{rater.__version__}",
        "Idempotency-Key": event["event_id"],
        "Rater-Event-Type": event["type"],
        SIGNATURE_HEADER: signature(settings.webhook_secret, int(time.time()), body),
    }
    connector = aiohttp.TCPConnector(resolver=_Vetted(addresses), use_dns_cache=False, force_close=True)
    timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session, \
                session.post(url, data=body, headers=headers, allow_redirects=False,
                             ssl=tls_context(settings.webhook_ca_file)) as response:
            status = response.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return Outcome(TRANSIENT, f"webhook: {type(exc).__name__}: {exc}")
    if 200 <= status < 300:
        return OK
    if status in (408, 429) or status >= 500:
        return Outcome(TRANSIENT, f"webhook: HTTP {status}")
    return Outcome(PERMANENT, f"webhook: HTTP {status}")
