"""``rater notify`` on a real broker, with a real SMTP server and a real HTTP receiver:
events produced on ``notifications`` / ``low-balance`` (schema-valid, as the rater writes
them) come out as e-mails and signed webhooks; failures retry on the retry topics without
holding up other tenants, and end in ``notification-failures``."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from rater import schemas
from rater.notifier.app import least_buffer
from rater.notifier.delivery import message_id
from rater.notifier.settings import RETRY_TOPICS
from tests.notify_support import (
    MailServer,
    NotifierProc,
    Receiver,
    describe_topic,
    notification,
    read_topic,
    upsert,
    utc,
    verify_signature,
    wait_for,
)
from tests.support import TEST_PARTITIONS, create_topics, produce, send_events

pytestmark = pytest.mark.kafka

DOMAIN = "rater.test"


@pytest.fixture
def mail() -> Iterator[MailServer]:
    server = MailServer().start()
    yield server
    server.stop()


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


def notifier(bootstrap: str, prefix: str, workdir: Path, mail: MailServer, **env: str) -> NotifierProc:
    create_topics(bootstrap, prefix)
    return NotifierProc(bootstrap, prefix, workdir, mail.port, extra_env=env).start()


def contacts_applied(proc: NotifierProc, count: int) -> None:
    wait_for(lambda: proc.metric("rater_notify_contacts_updates_total") >= count, 60,
             f"{count} tenant_upserted applied", proc.check_alive)


def test_events_become_signed_webhooks_and_emails_and_failures_hold_up_nobody(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, mail: MailServer, hooks: Receiver) -> None:
    """Tenant A: two addresses and a webhook get every kind, with ids derived from the
    event; B's webhook is slow and failing, yet A's e-mails sent after it arrive at once and
    B's e-mail too; C's webhooks point at a private and a link-local address: refused,
    never called, in notification-failures; D has no contacts; other kinds and old events
    are skipped, counted."""
    run = uuid.uuid4().hex[:6]
    a, b, c, c2, d = (f"{name}-{run}" for name in ("ana", "bob", "cat", "cid", "dan"))
    hooks.answers["/b"] = (3.0, 500)  # slow, then a server error: transient, retried, then given up
    proc = notifier(kafka_bootstrap, topic_prefix, tmp_path, mail, RATER_NOTIFY_MAX_AGE="3600")
    try:
        send_events(kafka_bootstrap, topic_prefix, [
            ("account-commands", upsert(a, {"emails": ["a1@acme.test"], "locale": "pt-BR"})),
            ("account-commands", upsert(a, {"emails": ["a1@acme.test", "a2@acme.test"],
                                            "webhook_url": hooks.url("/a"), "locale": "pt-BR"}, 2)),
            ("account-commands", upsert(b, {"emails": ["b1@bob.test"], "webhook_url": hooks.url("/b")})),
            ("account-commands", upsert(c, {"webhook_url": "http://10.1.2.3/hook"})),
            ("account-commands", upsert(c2, {"webhook_url": "https://169.254.169.254/latest/meta-data"})),
            ("account-commands", upsert(d, {"emails": ["d@dan.test"]})),
            ("account-commands", upsert(d, None, 2)),  # a full upsert: no notify, no contacts
        ])
        contacts_applied(proc, 7)
        # the broker creates no topic by itself: the notifier made its tables' changelogs
        for table in ("contacts", "delivered"):
            assert describe_topic(kafka_bootstrap, f"{topic_prefix}rater-notify-{table}-changelog") == (
                TEST_PARTITIONS, "compact")

        send_events(kafka_bootstrap, topic_prefix, [("notifications", notification("recharge_succeeded", b, 1))])
        wait_for(lambda: hooks.to("/b"), 30, "B's webhook called", proc.check_alive)
        kinds = ("recharge_succeeded", "recharge_failed", "balance_depleted")
        a_events = [notification(kind, a, 1) for kind in kinds]
        a_low = notification("low_balance", a, 1)
        send_events(kafka_bootstrap, topic_prefix, [
            *(("notifications", e) for e in a_events),
            ("low-balance", a_low),
            ("notifications", notification("pool_exhausted", a, 1)),  # not for the notifier
            ("notifications", notification("recharge_succeeded", a, 9, at=utc(hours=-2))),  # older than max age
            ("low-balance", notification("low_balance", c, 1)),
            ("notifications", notification("balance_depleted", c2, 1)),
            ("notifications", notification("balance_depleted", d, 1)),
        ])
        wanted = [*a_events, a_low]
        wait_for(lambda: len(mail.to("a1@acme.test")) >= 4 and len(mail.to("a2@acme.test")) >= 4, 30,
                 "A's e-mails", proc.check_alive)
        b_first_answer = hooks.to("/b")[0].at + 3.0
        # A's e-mails (sent while B's slow webhook was under way) did not wait for it
        assert all(m.at < b_first_answer for m in mail.to("a1@acme.test")), "A waited for B's webhook"
        wait_for(lambda: len(hooks.to("/a")) >= 4 and mail.to("b1@bob.test"), 30, "A's webhooks, B's e-mail",
                 proc.check_alive)
        # every event handled (B's after its last attempt) before anything is found missing:
        # a count goes up only after what it counts was seen (the servers got the message,
        # the retry or failure record is written), and D's event is handled among the skipped
        metric = proc.metric  # (m is a mail below)

        def counts() -> dict[str, float]:
            return {
                "email delivered": metric("rater_notify_deliveries_total", channel="email", outcome="delivered"),
                "webhook delivered": metric("rater_notify_deliveries_total", channel="webhook", outcome="delivered"),
                "webhook retry": metric("rater_notify_deliveries_total", channel="webhook", outcome="retry"),
                "webhook exhausted": metric("rater_notify_failures_total", channel="webhook", reason="exhausted"),
                "webhook refused": metric("rater_notify_failures_total", channel="webhook", reason="refused"),
                "skipped other_type": metric("rater_notify_skipped_total", reason="other_type"),
                "skipped too_old": metric("rater_notify_skipped_total", reason="too_old"),
                "skipped no_contacts": metric("rater_notify_skipped_total", reason="no_contacts"),
                "email latency count": metric("rater_notify_delivery_latency_seconds_count", channel="email"),
            }

        expected = {"email delivered": 9, "webhook delivered": 4, "webhook retry": 3, "webhook exhausted": 1,
                    "webhook refused": 2, "skipped other_type": 1, "skipped too_old": 1, "skipped no_contacts": 1,
                    "email latency count": 9}
        try:
            wait_for(lambda: counts() == expected, 60, "every event handled and counted", proc.check_alive)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {counts()}") from None

        for rcpt in ("a1@acme.test", "a2@acme.test"):
            got = mail.to(rcpt)
            assert sorted(m.event_id for m in got) == sorted(e["event_id"] for e in wanted)
            for m in got:
                assert m.message["Message-ID"] == message_id(m.event_id, rcpt, DOMAIN)
                assert m.message["To"] == rcpt
                assert m.message["From"] == "Rater Billing <billing@rater.test>"
                assert m.message["Content-Language"] == "pt-BR"
                assert m.message.get_content_type() == "multipart/alternative"
                text, html = (m.message.get_body(preferencelist=(kind,)) for kind in ("plain", "html"))
                assert text is not None
                assert html is not None
                assert m.message["Subject"]
                assert text.get_content().strip()
                assert html.get_content().strip()
        assert sorted(m.kind for m in mail.to("a1@acme.test")) == sorted(
            ("recharge_succeeded", "recharge_failed", "balance_depleted", "low_balance"))

        calls = hooks.to("/a")
        assert sorted(call.headers["Idempotency-Key"] for call in calls) == sorted(e["event_id"] for e in wanted)
        for call in calls:
            assert verify_signature(call)
            body = orjson.loads(call.body)
            assert body == next(e for e in wanted if e["event_id"] == call.headers["Idempotency-Key"])
            assert schemas.first_error(body["type"], body) is None
            tampered = type(call)(call.path, call.headers, call.body.replace(b"USD", b"EUR"), call.at)
            assert body["type"] == "recharge_failed" or not verify_signature(tampered)

        # B's webhook: 4 attempts (the ladder), then given up; C's never called
        failures = read_topic(kafka_bootstrap, f"{topic_prefix}notification-failures", lambda seen: len(seen) >= 3)
        for failure in failures:  # the wire contract: schemas/notification_failed.json
            assert schemas.first_error("notification_failed", failure) is None, failure
        for level in (1, 2, 3):  # B's three retries, one per level: schemas/notification_retry.json
            [waited] = read_topic(kafka_bootstrap, f"{topic_prefix}notify-retry-{level}", lambda seen: len(seen) >= 1)
            assert schemas.first_error("notification_retry", waited) is None, waited
            assert (waited["attempts"], waited["target"]) == (level, hooks.url("/b"))
        by_target = {f["target"]: f for f in failures}
        assert set(by_target) == {hooks.url("/b"), "http://10.1.2.3/hook", "https://169.254.169.254/latest/meta-data"}
        exhausted = by_target[hooks.url("/b")]
        assert (exhausted["reason"], exhausted["attempts"], exhausted["channel"]) == ("exhausted", 4, "webhook")
        assert exhausted["event"]["event_id"] == f"{b}/recharge_succeeded/1"
        assert "HTTP 500" in exhausted["last_error"] or "Timeout" in exhausted["last_error"]
        assert len(hooks.to("/b")) == 4
        for target in ("http://10.1.2.3/hook", "https://169.254.169.254/latest/meta-data"):
            refused = by_target[target]
            assert (refused["reason"], refused["attempts"]) == ("refused", 1)
            assert "not public" in refused["last_error"]
        assert {c.path for c in hooks.calls} == {"/a", "/b"}
        assert mail.to("d@dan.test") == []

        assert counts() == expected  # and they stayed
        wait_for(lambda: all(metric("rater_notify_consumer_lag", topic=t) == 0
                             for t in ("account-commands", "notifications", "low-balance")), 30,
                 "every input committed", proc.check_alive)
        assert proc.error_lines() == []
    finally:
        proc.stop()
    assert proc.proc.returncode == 0


def test_a_mail_server_down_for_a_while_loses_nothing(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, mail: MailServer) -> None:
    """Connection refused is transient: the e-mail waits on the retry topics and goes out
    once the server is back, once."""
    tenant = f"eve-{uuid.uuid4().hex[:6]}"
    proc = notifier(kafka_bootstrap, topic_prefix, tmp_path, mail, RATER_NOTIFY_MAX_ATTEMPTS="10")
    try:
        send_events(kafka_bootstrap, topic_prefix, [("account-commands", upsert(tenant, {"emails": ["e@eve.test"]}))])
        contacts_applied(proc, 1)
        mail.stop()
        event = notification("balance_depleted", tenant, 1)
        send_events(kafka_bootstrap, topic_prefix, [("notifications", event)])
        wait_for(lambda: proc.metric("rater_notify_retries_total", channel="email") >= 3, 30, "three retries",
                 proc.check_alive)
        mail.start()
        wait_for(lambda: mail.to("e@eve.test"), 30, "the e-mail once the server is back", proc.check_alive)
        wait_for(lambda: proc.metric("rater_notify_deliveries_total", outcome="delivered") == 1, 10, "counted")
        [got] = mail.to("e@eve.test")
        assert got.event_id == event["event_id"]
        assert got.message["Message-ID"] == message_id(event["event_id"], "e@eve.test", DOMAIN)
        assert proc.metric("rater_notify_failures_total") == 0
        assert proc.error_lines() == []
    finally:
        proc.stop()


def test_sigkill_mid_stream_loses_nothing_and_repeats_only_with_the_same_ids(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, mail: MailServer, hooks: Receiver) -> None:
    """A notifier killed while delivering, restarted on a wiped local store (its tables
    come back from their changelogs): every event reaches every target at least once, and
    a repeat carries the same Message-ID / Idempotency-Key."""
    run = uuid.uuid4().hex[:6]
    tenants = [f"t{i}-{run}" for i in range(8)]
    mail.delay_s = 0.03  # slow enough to be killed mid-stream
    proc = notifier(kafka_bootstrap, topic_prefix, tmp_path, mail)
    send_events(kafka_bootstrap, topic_prefix, [
        ("account-commands", upsert(t, {"emails": [f"admin@{t}.test"], "webhook_url": hooks.url(f"/{t}")}))
        for t in tenants])
    contacts_applied(proc, len(tenants))
    kinds = ("recharge_succeeded", "recharge_failed", "balance_depleted", "low_balance")
    events = [notification(kinds[n % 4], t, n) for n in range(25) for t in tenants]
    send_events(kafka_bootstrap, topic_prefix, [
        ("low-balance" if e["type"] == "low_balance" else "notifications", e) for e in events])
    wait_for(lambda: len(mail.mails) >= 40, 60, "some e-mails", proc.check_alive)
    proc.kill()
    sent_before = len(mail.mails)
    assert sent_before < len(events), "the notifier finished before the kill: nothing was tested"
    shutil.rmtree(proc.workdir / "data")
    proc.start()
    try:
        expected = {(e["event_id"], f"admin@{e['tenant_id']}.test") for e in events}
        _every_mail_and_webhook(proc, mail, hooks, events, expected)
        for m in mail.mails:
            assert m.message["Message-ID"] == message_id(m.event_id, m.rcpt, DOMAIN)
        by_id = {e["event_id"]: e for e in events}
        for call in hooks.calls:
            assert verify_signature(call)
            assert orjson.loads(call.body) == by_id[call.headers["Idempotency-Key"]]
        assert proc.metric("rater_notify_failures_total") == 0
        wait_for(lambda: all(proc.metric("rater_notify_consumer_lag", topic=t) == 0
                             for t in ("notifications", "low-balance")), 30, "every event committed",
                 proc.check_alive)
        repeats = len(mail.mails) - len(expected)
        print(f"{len(events)} events, {sent_before} e-mails before the kill, {repeats} sent twice")
        assert proc.error_lines() == []
    finally:
        proc.stop()


def test_sigterm_while_a_retry_waits_stops_at_once_and_the_retry_survives(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, mail: MailServer) -> None:
    """A retry due in 20 s does not hold up SIGTERM; after a restart the retry record is
    read again and the e-mail goes out when it is due."""
    tenant = f"fay-{uuid.uuid4().hex[:6]}"
    proc = notifier(kafka_bootstrap, topic_prefix, tmp_path, mail, RATER_NOTIFY_RETRY_DELAYS="20")
    send_events(kafka_bootstrap, topic_prefix, [("account-commands", upsert(tenant, {"emails": ["f@fay.test"]}))])
    contacts_applied(proc, 1)
    mail.stop()
    event = notification("recharge_failed", tenant, 1)
    send_events(kafka_bootstrap, topic_prefix, [("notifications", event)])
    wait_for(lambda: proc.metric("rater_notify_retries_total", channel="email", level="1") == 1, 30,
             "a retry scheduled", proc.check_alive)
    stopping = time.monotonic()
    proc.stop()
    assert (proc.proc.returncode, time.monotonic() - stopping < 10) == (0, True)
    mail.start()
    proc.start()
    try:
        wait_for(lambda: mail.to("f@fay.test"), 40, "the retried e-mail", proc.check_alive)
        [got] = mail.to("f@fay.test")
        assert got.message["Message-ID"] == message_id(event["event_id"], "f@fay.test", DOMAIN)
        assert proc.error_lines() == []
    finally:
        proc.stop()


def test_retries_waiting_past_the_buffer_hold_up_no_new_notification(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, mail: MailServer) -> None:
    """Faust reads every topic in one fetch loop, which waits whenever an agent's buffer
    is full. A retry level's records wait for their due time (here an hour) in its agent's
    slots and buffer: had they filled the buffer, the loop would have waited with them and
    no new notification would have been read for an hour. Faust stops fetching a
    partition once its buffer is four fifths full, and a fetch brings at most the rest
    shared by the partitions (``max_poll_records``): the buffer cannot fill."""
    waiting, fresh = f"gil-{uuid.uuid4().hex[:6]}", f"hal-{uuid.uuid4().hex[:6]}"
    create_topics(kafka_bootstrap, topic_prefix)
    due_at = time.time() + 3600
    retries = [{"type": "notification_retry", "schema_version": 1, "event": notification("low_balance", waiting, n),
                "channel": "email", "target": "g@gil.test", "locale": None, "attempts": 1,
                "last_error": "connection refused", "due_at": due_at} for n in range(80)]
    for record in retries:
        assert schemas.first_error("notification_retry", record) is None
    # all there before the notifier starts: its first fetch brings them in one batch
    send_events(kafka_bootstrap, topic_prefix, [("account-commands", upsert(waiting, {"emails": ["g@gil.test"]})),
                                                ("account-commands", upsert(fresh, {"emails": ["h@hal.test"]}))])
    asyncio.run(produce(kafka_bootstrap, topic_prefix,
                        [(RETRY_TOPICS[0], waiting.encode(), orjson.dumps(r)) for r in retries]))
    proc = notifier(kafka_bootstrap, topic_prefix, tmp_path, mail, RATER_NOTIFY_CONCURRENCY="2",
                    RATER_NOTIFY_BUFFER=str(least_buffer(TEST_PARTITIONS)))  # fetches of 1 record
    try:
        contacts_applied(proc, 2)
        first = notification("balance_depleted", fresh, 1)
        send_events(kafka_bootstrap, topic_prefix, [("notifications", first)])
        wait_for(lambda: mail.to("h@hal.test"), 30, "an e-mail while 80 retries wait", proc.check_alive)
        second = notification("recharge_succeeded", fresh, 2)
        send_events(kafka_bootstrap, topic_prefix, [("notifications", second)])
        wait_for(lambda: len(mail.to("h@hal.test")) == 2, 30, "the next e-mail while 80 retries wait",
                 proc.check_alive)
        assert [m.event_id for m in mail.to("h@hal.test")] == [first["event_id"], second["event_id"]]
        assert mail.to("g@gil.test") == []  # due in an hour
        assert proc.error_lines() == []
    finally:
        proc.stop()


def test_missing_topics_stop_the_start_with_one_line(kafka_bootstrap: str, topic_prefix: str) -> None:
    done = subprocess.run([sys.executable, "-m", "rater", "notify"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "RATER_BOOTSTRAP": kafka_bootstrap, "RATER_TOPIC_PREFIX": topic_prefix},
                          check=False)
    assert done.returncode == 1
    [line] = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert f"topics missing: {topic_prefix}account-commands" in line
    assert "`rater topics create` makes them" in line


def test_a_buffer_too_small_for_the_partitions_stops_the_start_with_one_line(
        kafka_bootstrap: str, topic_prefix: str) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    done = subprocess.run([sys.executable, "-m", "rater", "notify"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "RATER_BOOTSTRAP": kafka_bootstrap, "RATER_TOPIC_PREFIX": topic_prefix,
                               "RATER_NOTIFY_BUFFER": str(least_buffer(TEST_PARTITIONS) - 1)}, check=False)
    assert done.returncode == 1
    [line] = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert (f"RATER_NOTIFY_BUFFER={least_buffer(TEST_PARTITIONS) - 1} is too small for {TEST_PARTITIONS} partitions:"
            f" at least {least_buffer(TEST_PARTITIONS)}") in line


def test_rebalances_before_and_after_the_first_commit_lose_nothing(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, mail: MailServer, hooks: Receiver) -> None:
    """While one notifier delivers, a second joins the group (a rebalance: the partitions
    are split) and is killed (another, when its session expires: the first takes them all
    back) — twice. The first time nothing of ``notifications`` is committed yet (a slow
    webhook holds the agent's first event): Faust's consumer drops what it had fetched
    for the partitions it pauses, and aiokafka does not seek a partition without a
    committed offset back. Every event reaches every target at least once."""
    run = uuid.uuid4().hex[:6]
    tenants = [f"r{i}-{run}" for i in range(8)]
    slow = f"slow-{run}"
    hooks.answers[f"/{slow}"] = (12.0, 204)
    mail.delay_s = 0.03
    env = {"RATER_NOTIFY_TIMEOUT": "30"}
    first = notifier(kafka_bootstrap, topic_prefix, tmp_path / "a", mail, **env)
    send_events(kafka_bootstrap, topic_prefix, [
        ("account-commands", upsert(t, {"emails": [f"admin@{t}.test"], "webhook_url": hooks.url(f"/{t}")}))
        for t in [*tenants, slow]])
    contacts_applied(first, len(tenants) + 1)
    kinds = ("recharge_succeeded", "recharge_failed", "balance_depleted", "low_balance")
    events = [notification("balance_depleted", slow, 1),
              *(notification(kinds[n % 4], t, n) for n in range(40) for t in tenants)]
    send_events(kafka_bootstrap, topic_prefix, [
        ("low-balance" if e["type"] == "low_balance" else "notifications", e) for e in events])
    expected = {(e["event_id"], f"admin@{e['tenant_id']}.test") for e in events}
    try:
        for round_ in range(2):
            if round_:
                wait_for(lambda: len(mail.mails) >= 120, 90, "more e-mails", first.check_alive)
            other = NotifierProc(kafka_bootstrap, topic_prefix, tmp_path / f"b{round_}", mail.port,
                                 extra_env=env).start()
            wait_for(lambda r=round_: len(mail.mails) >= 60 + 100 * r, 90, "e-mails from both", first.check_alive)
            other.kill()
        assert len({(m.event_id, m.rcpt) for m in mail.mails}) < len(expected), "finished before the rebalances"
        _every_mail_and_webhook(first, mail, hooks, events, expected)
        try:
            wait_for(lambda: all(first.metric("rater_notify_consumer_lag", topic=t) == 0
                                 for t in ("notifications", "low-balance")), 30, "every event committed",
                     first.check_alive)
        except AssertionError as exc:
            lag = {t: first.metric("rater_notify_consumer_lag", topic=t) for t in ("notifications", "low-balance")}
            raise AssertionError(f"{exc}; lag {lag}") from None
        print(f"{len(events)} events, {len(mail.mails) - len(expected)} e-mails sent twice")
        assert first.error_lines() == []
    finally:
        first.stop()


def _every_mail_and_webhook(proc: NotifierProc, mail: MailServer, hooks: Receiver, events: list[dict[str, Any]],
                            expected: set[tuple[str, str]]) -> None:
    """Wait until every ``expected`` (event id, recipient) e-mail and every event's webhook
    arrived; a timeout says what is missing and the notifier's consumer lag."""
    try:
        wait_for(lambda: {(m.event_id, m.rcpt) for m in mail.mails} >= expected, 120, "every e-mail",
                 proc.check_alive)
    except AssertionError as exc:
        missing = sorted(expected - {(m.event_id, m.rcpt) for m in mail.mails})
        lag = {t: proc.metric("rater_notify_consumer_lag", topic=t) for t in ("notifications", "low-balance")}
        raise AssertionError(f"{exc}; missing {missing}; lag {lag}") from None
    wait_for(lambda: {c.headers["Idempotency-Key"] for c in hooks.calls} >= {e["event_id"] for e in events},
             60, "every webhook", proc.check_alive)
