"""The notifier's pure pieces: settings, the retry ladder, ids and signatures, which
webhook addresses are refused, the e-mail's shape. No broker."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from rater.notifier import delivery, retry
from rater.notifier.app import least_buffer, max_poll_records
from rater.notifier.delivery import Outcome, Refused
from rater.notifier.settings import NotifySettings
from rater.shell.settings import SettingsError


def test_settings_defaults_and_one_line_errors() -> None:
    settings = NotifySettings.from_env({"RATER_TOPIC_PREFIX": "p."})
    assert (settings.app_id, settings.smtp_port, settings.smtp_tls) == ("p.rater-notify", 587, "starttls")
    assert settings.retry_delays_s == (60.0, 600.0, 3600.0, 21600.0)
    assert (settings.buffer, NotifySettings.from_env({"RATER_NOTIFY_BUFFER": "64"}).buffer) == (4096, 64)
    assert NotifySettings.from_env({"RATER_SMTP_TLS": "tls"}).smtp_port == 465
    allowed = NotifySettings.from_env({"RATER_NOTIFY_WEBHOOK_ALLOW_CIDRS": "127.0.0.1/32, 10.0.0.0/8"})
    assert allowed.webhook_allowed_networks == (ipaddress.ip_network("127.0.0.1/32"),
                                                ipaddress.ip_network("10.0.0.0/8"))
    assert NotifySettings.from_env({"RATER_NOTIFY_FROM": "Billing <b@x.example>"}).mail_domain == "x.example"
    for name, value in (("RATER_NOTIFY_RETRY_DELAYS", "60,30"), ("RATER_NOTIFY_RETRY_DELAYS", "1,2,3,4,5"),
                        ("RATER_NOTIFY_WEBHOOK_ALLOW_CIDRS", "10.0.0.0/33"), ("RATER_NOTIFY_FROM", "nobody"),
                        ("RATER_SMTP_TLS", "ssl"), ("RATER_NOTIFY_CONCURRENCY", "0"),
                        ("RATER_NOTIFY_BUFFER", "-1")):
        with pytest.raises(SettingsError, match=name):
            NotifySettings.from_env({name: value})


def test_rater_notify_exits_2_with_one_line_for_a_bad_setting() -> None:
    done = subprocess.run([sys.executable, "-m", "rater", "notify"], capture_output=True, text=True, timeout=60,
                          env={"RATER_NOTIFY_RETRY_DELAYS": "soon", "PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "Error: RATER_NOTIFY_RETRY_DELAYS='soon': must be 1 to 4 comma-separated delays in seconds > 0, not"
        " decreasing, e.g. 60,600,3600,21600"]


def test_rater_help_does_not_import_faust() -> None:
    code = "import sys; from rater.cli import main; assert 'faust' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_ladder_climbs_then_gives_up() -> None:
    delays = (1.0, 5.0, 30.0)
    transient = Outcome(delivery.TRANSIENT, "smtp: down")
    assert retry.after(delivery.OK, 1, delays, 6) is None
    assert [retry.after(transient, n, delays, 6) for n in range(1, 6)] == [
        retry.Retry(1, 1.0), retry.Retry(2, 5.0), retry.Retry(3, 30.0), retry.Retry(3, 30.0), retry.Retry(3, 30.0)]
    assert retry.after(transient, 6, delays, 6) == retry.GiveUp("exhausted")
    assert retry.after(Outcome(delivery.PERMANENT, "550"), 1, delays, 6) == retry.GiveUp("permanent")
    assert retry.after(Outcome(delivery.REFUSED, "private"), 1, delays, 6) == retry.GiveUp("refused")


def test_ids_and_signature_are_derived_and_verifiable() -> None:
    mid = delivery.message_id("t/low_balance/x", "a@b.test", "rater.test")
    assert mid == delivery.message_id("t/low_balance/x", "a@b.test", "rater.test")
    assert mid != delivery.message_id("t/low_balance/x", "c@b.test", "rater.test")
    assert mid.startswith("<")
    assert mid.endswith("@rater.test>")
    assert len(mid) == 32 + len("<@rater.test>")
    header = delivery.signature("secret", 1_700_000_000, b'{"a":1}')
    t, v1 = (part.split("=", 1)[1] for part in header.split(","))
    assert t == "1700000000"
    assert hmac.compare_digest(v1, hmac.new(b"secret", b'1700000000.{"a":1}', hashlib.sha256).hexdigest())


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "::1", "fe80::1",
                                     "fc00::1", "::ffff:127.0.0.1", "ff02::1"])
def test_private_loopback_link_local_reserved_and_multicast_addresses_are_refused(address: str) -> None:
    assert not delivery.address_allowed(ipaddress.ip_address(address), ())


def test_public_addresses_and_allowed_networks_pass() -> None:
    assert delivery.address_allowed(ipaddress.ip_address("93.184.216.34"), ())
    assert delivery.address_allowed(ipaddress.ip_address("2606:2800:220:1::1"), ())
    assert delivery.address_allowed(ipaddress.ip_address("127.0.0.1"), (ipaddress.ip_network("127.0.0.1/32"),))
    assert not delivery.address_allowed(ipaddress.ip_address("127.0.0.2"), (ipaddress.ip_network("127.0.0.1/32"),))


def test_urls_are_vetted_before_any_connection() -> None:
    strict = NotifySettings()
    with pytest.raises(Refused, match="only https"):
        asyncio.run(delivery.vetted_addresses(URL("http://93.184.216.34/hook"), strict))
    with pytest.raises(Refused, match="not public"):
        asyncio.run(delivery.vetted_addresses(URL("https://[::1]:8443/hook"), strict))
    with pytest.raises(Refused, match="not public"):
        asyncio.run(delivery.vetted_addresses(URL("https://localhost/hook"), strict))  # resolved here, then vetted
    [vetted] = asyncio.run(delivery.vetted_addresses(URL("https://93.184.216.34/hook"), strict))
    assert (vetted["host"], vetted["port"], vetted["hostname"]) == ("93.184.216.34", 443, "93.184.216.34")


def test_a_refused_webhook_is_final_and_never_connects() -> None:
    settings = NotifySettings(webhook_secret="s")
    event = {"type": "low_balance", "event_id": "e1", "tenant_id": "t"}
    outcome = asyncio.run(delivery.send_webhook(event, "https://10.0.0.1/hook", settings))
    assert (outcome.status, outcome.final) == (delivery.REFUSED, True)


def test_the_email_is_multipart_alternative_with_derived_ids() -> None:
    settings = NotifySettings(mail_from="Billing <billing@rater.test>")
    event = {"type": "balance_depleted", "schema_version": 1, "event_id": "t/bd/1", "tenant_id": "t",
             "occurred_at": "2026-11-02T10:00:00Z", "currency": "USD"}
    message = delivery.email_message(event, "a@t.test", "zh-CN", settings)
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Message-ID"] == delivery.message_id("t/bd/1", "a@t.test", "rater.test")
    assert (message["To"], message["X-Rater-Event-Type"], message["Content-Language"]) == (
        "a@t.test", "balance_depleted", "zh-CN")
    with pytest.raises(ValueError, match="pool_exhausted"):
        delivery.email_message({**event, "type": "pool_exhausted"}, "a@t.test", "en", settings)


def test_contacts_are_held_to_the_notify_rules_field_by_field() -> None:
    from rater.notifier.app import contacts_of  # noqa: PLC0415 - faust is imported with it

    def upsert(notify: object) -> dict[str, object]:
        return {"type": "tenant_upserted", "tenant_id": "t1", "notify": notify}

    assert contacts_of(upsert({"emails": ["ops at acme", "ana@acme.example", "ana@acme.example", 7],
                               "locale": "pt_BR", "sms": "+1555"})) == {
        "emails": ["ana@acme.example"], "webhook_url": None, "locale": "pt_BR"}
    assert contacts_of(upsert({"emails": "ana@acme.example", "webhook_url": "ftp://x", "locale": "pt BR"})) == {
        "emails": ["ana@acme.example"], "webhook_url": None, "locale": "en"}
    assert contacts_of(upsert({"webhook_url": "https://hooks.acme.example/r"})) == {
        "emails": [], "webhook_url": "https://hooks.acme.example/r", "locale": "en"}
    assert contacts_of(upsert({"emails": [f"a{n}@acme.example" for n in range(12)]}))["emails"] == [  # type: ignore[index]
        f"a{n}@acme.example" for n in range(10)]
    for nothing in (None, {}, {"emails": ["bad"]}, {"emails": None, "webhook_url": None}, "str", [1]):
        assert contacts_of(upsert(nothing)) is None, nothing


def test_a_dry_run_builds_every_delivery_and_sends_nothing() -> None:
    settings = NotifySettings.from_env({"RATER_NOTIFY_DRY_RUN": "on", "RATER_NOTIFY_FROM": "b@rater.test"})
    assert settings.dry_run
    assert not NotifySettings.from_env({}).dry_run
    event = {"type": "balance_depleted", "schema_version": 1, "event_id": "t1/balance_depleted/x", "tenant_id": "t1",
             "occurred_at": "2026-12-04T10:00:00Z", "currency": "EUR"}
    # a port nothing listens on and an address no one may call: nothing is sent, both "delivered"
    assert delivery.dry_run(event, delivery.EMAIL, "ana@acme.example", "it", settings) == delivery.OK
    assert delivery.dry_run(event, "webhook", "https://10.0.0.1/hook", None, settings) == delivery.OK
    with pytest.raises(ValueError, match="pool_exhausted"):  # the e-mail is really made: a kind it cannot write fails
        delivery.dry_run({**event, "type": "pool_exhausted"}, delivery.EMAIL, "ana@acme.example", "it", settings)


def test_every_labelled_series_is_shown_at_0_from_the_start() -> None:
    """A series born with its first increment hides it from rate() and increase(): the
    first failures after a start would never reach the dashboard nor the alerts."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415 - only here

    from rater.notifier.metrics import NotifyMetrics  # noqa: PLC0415
    from rater.notifier.render import KINDS  # noqa: PLC0415

    registry = CollectorRegistry()
    NotifyMetrics(registry)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    for kind in KINDS:
        for channel in delivery.CHANNELS:
            for outcome in ("delivered", "duplicate", "retry", "failed"):
                assert value("rater_notify_deliveries_total", kind=kind, channel=channel, outcome=outcome) == 0
    for channel in delivery.CHANNELS:
        assert value("rater_notify_delivery_latency_seconds_count", channel=channel) == 0
        for level in ("1", "2", "3", "4"):
            assert value("rater_notify_retries_total", channel=channel, level=level) == 0
        for reason in ("permanent", "refused", "exhausted"):
            assert value("rater_notify_failures_total", channel=channel, reason=reason) == 0
    for reason in ("other_type", "invalid", "too_old", "no_contacts"):
        assert value("rater_notify_skipped_total", reason=reason) == 0
    for action in ("set", "cleared", "invalid"):
        assert value("rater_notify_contacts_updates_total", action=action) == 0


@given(st.integers(1, 256), st.integers(0, 100_000))
def test_no_buffer_ever_fills_whatever_its_partitions_fetch(partitions: int, extra: int) -> None:
    """Faust stops fetching a partition once one of its records is put into a buffer at
    ``floor(buffer / 1.25)`` or more (mode's FlowControlQueue), and hands out what it
    fetched already: each partition at most one fetch more. The tables' changelogs share
    one buffer (2 × partitions): before any put, every buffer holds fewer than
    ``buffer`` records, so the fetch loop never waits on one."""
    buffer = least_buffer(partitions) + extra
    fetch = max_poll_records(buffer, partitions)
    assert fetch >= 1
    assert math.floor(buffer / 1.25) + 2 * partitions * fetch < buffer
    if least_buffer(partitions) > 1:
        smaller = least_buffer(partitions) - 1
        assert math.floor(smaller / 1.25) + 2 * partitions * max_poll_records(smaller, partitions) >= smaller
