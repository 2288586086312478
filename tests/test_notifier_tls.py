"""The notifier's TLS, against real servers with certificates from a throwaway CA
(trustme): SMTP with STARTTLS and a login (aiosmtpd), webhooks over https (aiohttp).

The CA is trusted only through the notifier's settings (``RATER_SMTP_CA_FILE``,
``RATER_NOTIFY_WEBHOOK_CA_FILE``). A certificate that does not verify — signed by a CA
the notifier does not trust, or issued for another name — ends the attempt before
anything is sent (no message, no request body, no password), as a *transient* failure
that the retries end in ``notification-failures`` (docs/notifications.md, "TLS")."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
import trustme

from rater import schemas
from rater.notifier import delivery
from rater.notifier.delivery import OK, TRANSIENT, Outcome
from rater.notifier.settings import NotifySettings
from rater.shell.settings import SettingsError
from tests.notify_support import (
    MAIL_FROM,
    SECRET,
    MailServer,
    NotifierProc,
    Receiver,
    notification,
    read_topic,
    upsert,
    verify_signature,
    wait_for,
)
from tests.support import create_topics, send_events

USER, PASSWORD = "rater", "s3cret-Passw0rd"
VERIFY_FAILED = "certificate verify failed"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    """A server's TLS context with a certificate for ``names`` signed by ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def settings(**changes: object) -> NotifySettings:
    base = NotifySettings(smtp_host="127.0.0.1", smtp_tls="starttls", smtp_user=USER, smtp_password=PASSWORD,
                          mail_from=MAIL_FROM, webhook_secret=SECRET,
                          webhook_allowed_networks=NotifySettings.from_env(
                              {"RATER_NOTIFY_WEBHOOK_ALLOW_CIDRS": "127.0.0.1/32"}).webhook_allowed_networks,
                          timeout_s=10.0)
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def tls_mail(ca: trustme.CA) -> Iterator[MailServer]:
    server = MailServer(starttls=server_context(ca, "127.0.0.1", "localhost"), login=(USER, PASSWORD)).start()
    yield server
    server.stop()


def _https(context: ssl.SSLContext) -> Receiver:
    return Receiver(tls=context).start()


# --- SMTP with STARTTLS ----------------------------------------------------------------


def test_starttls_with_a_login_delivers_over_tls_with_the_ca_from_the_settings(
        tls_mail: MailServer, ca_file: Path) -> None:
    event = notification("low_balance", "tls-t1", 1)
    outcome = asyncio.run(delivery.send_email(event, "admin@t1.test", "it", settings(
        smtp_port=tls_mail.port, smtp_ca_file=ca_file)))
    assert outcome == OK, outcome
    [mail] = tls_mail.to("admin@t1.test")
    assert mail.event_id == event["event_id"]
    assert tls_mail.sessions_tls == [True]
    assert tls_mail.logins == [(USER, True)]


def test_a_mail_server_certificate_of_an_unknown_ca_sends_nothing_not_even_the_password(
        tls_mail: MailServer) -> None:
    event = notification("balance_depleted", "tls-t2", 1)
    outcome = asyncio.run(delivery.send_email(event, "admin@t2.test", None, settings(smtp_port=tls_mail.port)))
    assert outcome.status == TRANSIENT
    assert VERIFY_FAILED in (outcome.error or ""), outcome
    assert tls_mail.mails == []
    assert tls_mail.logins == []  # the login never went to a server that did not prove who it is


def _depleted_mail(n: int, **changes: object) -> Outcome:
    """Tenant ``tls-t{n}``'s balance_depleted e-mailed to ``a@t{n}.test`` with the
    test's settings and ``changes``."""
    event = notification("balance_depleted", f"tls-t{n}", 1)
    return asyncio.run(delivery.send_email(event, f"a@t{n}.test", None, settings(**changes)))


def test_a_mail_server_certificate_for_another_name_sends_nothing(ca: trustme.CA, ca_file: Path) -> None:
    server = MailServer(starttls=server_context(ca, "mail.elsewhere.test"), login=(USER, PASSWORD)).start()
    try:
        outcome = _depleted_mail(3, smtp_port=server.port, smtp_ca_file=ca_file)
    finally:
        server.stop()
    assert outcome.status == TRANSIENT
    assert VERIFY_FAILED in (outcome.error or "") or "match" in (outcome.error or ""), outcome
    assert (server.mails, server.logins) == ([], [])


def test_a_wrong_password_is_refused_and_nothing_is_sent(tls_mail: MailServer, ca_file: Path) -> None:
    outcome = _depleted_mail(4, smtp_port=tls_mail.port, smtp_ca_file=ca_file, smtp_password="wrong")
    assert outcome.status == TRANSIENT  # login trouble: the operator's to fix, retried meanwhile
    assert "535" in (outcome.error or ""), outcome
    assert tls_mail.mails == []
    assert tls_mail.logins  # tried (aiosmtplib tries each mechanism the server offers) and refused
    assert all(user == USER and not accepted for user, accepted in tls_mail.logins)


def test_starttls_required_never_falls_back_to_plain_text(ca_file: Path) -> None:
    plain = MailServer().start()  # offers no STARTTLS
    try:
        outcome = _depleted_mail(5, smtp_port=plain.port, smtp_ca_file=ca_file)
    finally:
        plain.stop()
    assert outcome.status == TRANSIENT
    assert "STARTTLS" in (outcome.error or ""), outcome
    assert plain.mails == []


# --- webhooks over https --------------------------------------------------------------


def test_an_https_webhook_with_the_ca_from_the_settings_is_delivered(ca: trustme.CA, ca_file: Path) -> None:
    hooks = _https(server_context(ca, "localhost"))
    try:
        event = notification("recharge_succeeded", "tls-w1", 1)
        outcome = asyncio.run(delivery.send_webhook(event, hooks.url("/w1"), settings(webhook_ca_file=ca_file)))
    finally:
        hooks.stop()
    assert outcome == OK, outcome
    [call] = hooks.to("/w1")
    assert verify_signature(call)
    assert orjson.loads(call.body) == event


@pytest.mark.parametrize("case", ["unknown CA", "another name"])
def test_an_https_webhook_whose_certificate_does_not_verify_gets_no_request(
        case: str, ca: trustme.CA, ca_file: Path) -> None:
    if case == "unknown CA":
        context, trusted = server_context(trustme.CA(), "localhost"), ca_file
    else:
        context, trusted = server_context(ca, "hooks.elsewhere.test"), ca_file
    hooks = _https(context)
    try:
        outcome = asyncio.run(delivery.send_webhook(notification("recharge_succeeded", "tls-w2", 1),
                                                    hooks.url("/w2"), settings(webhook_ca_file=trusted)))
    finally:
        hooks.stop()
    assert outcome.status == TRANSIENT
    assert "certificate" in (outcome.error or "").lower(), outcome
    assert hooks.calls == []


def test_without_the_ca_setting_a_private_ca_is_not_trusted(ca: trustme.CA) -> None:
    hooks = _https(server_context(ca, "localhost"))
    try:
        outcome = asyncio.run(delivery.send_webhook(notification("low_balance", "tls-w3", 1), hooks.url("/w3"),
                                                    settings()))
    finally:
        hooks.stop()
    assert outcome.status == TRANSIENT
    assert VERIFY_FAILED in (outcome.error or ""), outcome
    assert hooks.calls == []


# --- the settings ------------------------------------------------------------------------


def test_the_ca_settings_take_a_pem_file_and_refuse_anything_else(ca_file: Path, tmp_path: Path) -> None:
    loaded = NotifySettings.from_env({"RATER_SMTP_CA_FILE": str(ca_file), "RATER_NOTIFY_WEBHOOK_CA_FILE": str(ca_file)})
    assert (loaded.smtp_ca_file, loaded.webhook_ca_file) == (ca_file, ca_file)
    assert NotifySettings.from_env({}).smtp_ca_file is None
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    for name in ("RATER_SMTP_CA_FILE", "RATER_NOTIFY_WEBHOOK_CA_FILE"):
        for value in (str(tmp_path / "missing.pem"), str(not_pem)):
            with pytest.raises(SettingsError, match=f"{name}=.*must be a readable PEM file of CA certificates"):
                NotifySettings.from_env({name: value})


# --- end to end: a real notifier --------------------------------------------------------


@pytest.mark.kafka
def test_a_notifier_delivers_over_starttls_and_https_and_reports_a_bad_certificate(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, ca: trustme.CA, ca_file: Path,
        tls_mail: MailServer) -> None:
    """Tenant ``good``: e-mail over STARTTLS with a login, webhook over https, both
    trusted through the settings: delivered. Tenant ``bad``: its webhook's certificate is
    signed by a CA nobody trusts: never called, retried, then in notification-failures
    (``exhausted``) with the verification error."""
    good_hooks = _https(server_context(ca, "localhost"))
    bad_hooks = _https(server_context(trustme.CA(), "localhost"))
    run = uuid.uuid4().hex[:6]
    good, bad = f"good-{run}", f"bad-{run}"
    create_topics(kafka_bootstrap, topic_prefix)
    proc = NotifierProc(kafka_bootstrap, topic_prefix, tmp_path, tls_mail.port, extra_env={
        "RATER_SMTP_TLS": "starttls", "RATER_SMTP_USER": USER, "RATER_SMTP_PASSWORD": PASSWORD,
        "RATER_SMTP_CA_FILE": str(ca_file), "RATER_NOTIFY_WEBHOOK_CA_FILE": str(ca_file),
        "RATER_NOTIFY_MAX_ATTEMPTS": "2"}).start()
    try:
        send_events(kafka_bootstrap, topic_prefix, [
            ("account-commands", upsert(good, {"emails": ["g@good.test"], "webhook_url": good_hooks.url("/g")})),
            ("account-commands", upsert(bad, {"webhook_url": bad_hooks.url("/b")})),
        ])
        wait_for(lambda: proc.metric("rater_notify_contacts_updates_total", action="set") >= 2, 60,
                 "contacts applied", proc.check_alive)
        good_event, bad_event = notification("recharge_failed", good, 1), notification("recharge_failed", bad, 1)
        send_events(kafka_bootstrap, topic_prefix, [("notifications", good_event), ("notifications", bad_event)])
        wait_for(lambda: tls_mail.to("g@good.test") and good_hooks.to("/g"), 30, "the good tenant's deliveries",
                 proc.check_alive)
        [failure] = read_topic(kafka_bootstrap, f"{topic_prefix}notification-failures", lambda seen: len(seen) >= 1)
        assert schemas.first_error("notification_failed", failure) is None, failure
        assert (failure["reason"], failure["attempts"], failure["channel"]) == ("exhausted", 2, "webhook")
        assert failure["event"] == bad_event
        assert VERIFY_FAILED in failure["last_error"], failure["last_error"]
        assert bad_hooks.calls == []
        assert tls_mail.sessions_tls == [True]
        assert all(accepted for _, accepted in tls_mail.logins)
        assert verify_signature(good_hooks.to("/g")[0])
        # counted once the server answered (the deliveries) or the record was written (the
        # failure): a moment after what the test saw
        wait_for(lambda: (proc.metric("rater_notify_failures_total", channel="webhook", reason="exhausted"),
                          proc.metric("rater_notify_deliveries_total", outcome="delivered")) == (1, 2), 10,
                 "the failure and the two deliveries counted", proc.check_alive)
        assert proc.error_lines() == []
    finally:
        proc.stop()
        good_hooks.stop()
        bad_hooks.stop()
