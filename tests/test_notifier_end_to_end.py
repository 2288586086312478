"""A real ``rater worker`` rates real CDRs and recharge results, and a real ``rater
notify`` e-mails what it emitted: recharge_succeeded, recharge_failed (card_expired),
balance_depleted and low_balance, each to the tenant's address, in its locale."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rater.notifier.delivery import message_id
from tests.notify_support import MailServer, NotifierProc, wait_for
from tests.support import Worker, create_topics, event
from tests.test_scenarios import NEW_YORK, Tenant, tenant_id

pytestmark = pytest.mark.kafka


@pytest.fixture
def mail() -> Iterator[MailServer]:
    server = MailServer().start()
    yield server
    server.stop()


def test_the_worker_s_notifications_are_emailed(
        kafka_bootstrap: str, tmp_path: Path, mail: MailServer) -> None:
    prefix = f"nee{uuid.uuid4().hex[:8]}."
    create_topics(kafka_bootstrap, prefix)
    worker = Worker(kafka_bootstrap, prefix, tmp_path / "worker").start()
    proc = NotifierProc(kafka_bootstrap, prefix, tmp_path / "notify", mail.port).start()
    try:
        t = Tenant(worker, tenant_id("mail"))
        admin = f"admin@{t.id}.test"
        t.open(funds="6.00", users={"alice": ("US", ["PAYG"])}, extra=(
            ("account-commands", event(
                "tenant_upserted", t.id, f"{t.id}-e-notify", command_id=f"{t.id}-c-notify", country="US",
                currency="USD", billing_model="prepaid_credits", notify={"emails": [admin], "locale": "es"})),
            ("account-commands", event(
                "auto_recharge_configured", t.id, f"{t.id}-e-ar", command_id=f"{t.id}-ar", enabled=True,
                trigger_amount="5.00", recharge_amount="5.00")),
        ))
        wait_for(lambda: proc.metric("rater_notify_contacts_updates_total", action="set") >= 1, 60,
                 "the contacts applied", proc.check_alive)

        t.send(t.call("long", 7200))  # 1.20: 6.00 → 4.80, below 5.00: low balance, recharge 1
        outs = t.wait(t.has("recharge_request"), t.has("low_balance"))
        [first] = t.events(outs, "recharge_request")
        t.send(("recharge-results", event(
            "recharge_result", t.id, f"{t.id}-e-res1", at="2026-11-02T12:01:00Z", request_id=first["request_id"],
            status="succeeded", amount="5.00", currency="USD", reason=None, processed_at="2026-11-02T12:01:00Z")))
        t.wait(t.has("recharge_succeeded"))
        # 13.34 from 9.80: zero (balance_depleted), low again, recharge 2 — which fails
        t.send(t.call("huge", 80000, start="2026-11-02T12:10:00Z", destination=NEW_YORK))
        outs = t.wait(t.has("balance_depleted"), t.has("recharge_request", 2), t.has("low_balance", 2))
        second = t.events(outs, "recharge_request")[1]
        t.send(("recharge-results", event(
            "recharge_result", t.id, f"{t.id}-e-res2", at="2026-11-02T12:20:00Z", request_id=second["request_id"],
            status="failed", amount="5.00", currency="USD", reason="card_expired",
            processed_at="2026-11-02T12:20:00Z")))
        outs = t.wait(t.has("recharge_failed"), t.has("balance_depleted"), t.has("recharge_succeeded"),
                      t.has("low_balance", 2))
        emitted = [o.event for o in outs if o.event.get("tenant_id") == t.id and o.event["type"] in (
            "recharge_succeeded", "recharge_failed", "balance_depleted", "low_balance")]
        assert {e["type"] for e in emitted} == {"recharge_succeeded", "recharge_failed", "balance_depleted",
                                                "low_balance"}
        [failed] = [e for e in emitted if e["type"] == "recharge_failed"]
        assert failed["reason"] == "card_expired"

        want = {e["event_id"] for e in emitted}
        wait_for(lambda: {m.event_id for m in mail.to(admin)} >= want, 60, "every notification e-mailed",
                 proc.check_alive)
        for m in mail.to(admin):
            assert m.message["Message-ID"] == message_id(m.event_id, admin, "rater.test")
            assert m.message["Content-Language"] == "es"
        assert {m.kind for m in mail.to(admin)} == {e["type"] for e in emitted}
        assert proc.error_lines() == []
    finally:
        proc.stop()
        worker.stop()
