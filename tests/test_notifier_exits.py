"""The notifier's documented exit codes (docs/notifications.md, "Exit codes"), each for
real: 2 for a setting it cannot use (tests/test_notifier_units.py), 1 when it cannot
start (missing topics: tests/test_notifier.py; an unreachable broker: here), 3 when a
delivery task raises — here the broker refusing the notifier's own write to
``notification-failures`` (the topic's ``max.message.bytes`` set too small by hand): the
process stops with the traceback at ERROR and the event uncommitted, and the next start,
once the topic is fixed, handles that event again. 0 for SIGTERM is in test_notifier.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import TopicPartition

from rater.localkafka import free_port
from tests.notify_support import MailServer, NotifierProc, notification, read_topic, upsert, wait_for
from tests.support import create_topics, send_events


def test_an_unreachable_broker_stops_the_start_with_exit_1_and_one_line() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    done = subprocess.run([sys.executable, "-m", "rater", "notify"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RATER_BOOTSTRAP": bootstrap}, check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert errors, done.stderr[-2000:]
    assert f"cannot read the topics from the Kafka broker at {bootstrap} (RATER_BOOTSTRAP)" in errors[-1]


async def _set_max_message_bytes(bootstrap: str, topic: str, value: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                  {"max.message.bytes": str(value)})])
    finally:
        await admin.close()


async def _committed(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()


@pytest.mark.kafka
def test_a_delivery_task_that_raises_stops_the_notifier_with_exit_3_and_its_event_is_read_again(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    tenant = f"hal-{uuid.uuid4().hex[:6]}"
    failures = f"{topic_prefix}notification-failures"
    create_topics(kafka_bootstrap, topic_prefix)
    asyncio.run(_set_max_message_bytes(kafka_bootstrap, failures, 200))  # a failure record is ~700 bytes
    mail = MailServer().start()
    proc = NotifierProc(kafka_bootstrap, topic_prefix, tmp_path, mail.port).start()
    try:
        # a webhook to a private address: refused at once, its failure record must be written
        send_events(kafka_bootstrap, topic_prefix, [("account-commands", upsert(tenant, {
            "emails": ["h@hal.test"], "webhook_url": "https://10.9.8.7/hook"}))])
        wait_for(lambda: proc.metric("rater_notify_contacts_updates_total", action="set") == 1, 60,
                 "contacts applied", proc.check_alive)
        event = notification("balance_depleted", tenant, 1)
        send_events(kafka_bootstrap, topic_prefix, [("notifications", event)])
        assert proc.proc.wait(timeout=120) == 3, proc.log.read_text()[-3000:]
        log = proc.log.read_text(errors="replace")
        assert "failed: stopping (its offset is not committed)" in log, log[-3000:]
        assert "Traceback" in log
        # the e-mail went out before the crash (its delivery is remembered); the event was not committed
        wait_for(lambda: mail.to("h@hal.test"), 5, "the e-mail sent before the crash")
        committed = asyncio.run(_committed(kafka_bootstrap, f"{topic_prefix}rater-notify"))
        on_notifications = {tp.partition: offset for tp, offset in committed.items()
                            if tp.topic == f"{topic_prefix}notifications"}
        assert all(offset <= 0 for offset in on_notifications.values()), on_notifications  # the only event: offset 0

        asyncio.run(_set_max_message_bytes(kafka_bootstrap, failures, 8 * 1024 * 1024))  # the operator's fix
        proc.start()
        [failure] = read_topic(kafka_bootstrap, failures, lambda seen: len(seen) >= 1)
        assert (failure["reason"], failure["event"]) == ("refused", event)
        wait_for(lambda: proc.metric("rater_notify_consumer_lag", topic="notifications") == 0, 30,
                 "the event committed", proc.check_alive)
        assert len(mail.to("h@hal.test")) == 1  # remembered as delivered: not sent again
        assert proc.metric("rater_notify_deliveries_total", channel="email", outcome="duplicate") == 1
    finally:
        proc.stop()
        mail.stop()
    assert proc.proc.returncode == 0


@pytest.mark.kafka
def test_a_retry_record_that_is_not_the_notifier_s_is_skipped_not_a_crash(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """The retry topics are the notifier's own, but a hand-written or truncated record
    there is bad input, not a bug: counted (``skipped{reason="invalid"}``), logged, and
    the notifier goes on (it crashed on it with exit 3 before, and again at every start)."""
    tenant = f"ivy-{uuid.uuid4().hex[:6]}"
    create_topics(kafka_bootstrap, topic_prefix)
    mail = MailServer().start()
    proc = NotifierProc(kafka_bootstrap, topic_prefix, tmp_path, mail.port).start()
    try:
        send_events(kafka_bootstrap, topic_prefix, [("account-commands", upsert(tenant, {"emails": ["i@ivy.test"]}))])
        wait_for(lambda: proc.metric("rater_notify_contacts_updates_total", action="set") == 1, 60,
                 "contacts applied", proc.check_alive)
        broken = {"channel": "email", "target": "i@ivy.test", "attempts": 1}  # no due_at, no event
        send_events(kafka_bootstrap, topic_prefix, [("notify-retry-1", {**broken, "tenant_id": tenant}),
                                                    ("notifications", notification("low_balance", tenant, 1))])
        wait_for(lambda: proc.metric("rater_notify_skipped_total", reason="invalid") == 1, 30,
                 "the bad retry record skipped", proc.check_alive)
        wait_for(lambda: mail.to("i@ivy.test"), 30, "the next event delivered", proc.check_alive)
        wait_for(lambda: proc.metric("rater_notify_consumer_lag", topic="notify-retry-1") == 0, 30,
                 "the bad record committed", proc.check_alive)
        assert "not a notification_retry record: skipped" in proc.log.read_text()
        assert proc.error_lines() == []
    finally:
        proc.stop()
        mail.stop()
    assert proc.proc.returncode == 0
