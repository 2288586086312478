"""``rater simulate``: the traffic simulator's CDRs rated by a real worker, the payment
simulator answering a real worker's recharge requests — real broker, real processes."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer
from rich.console import Console

from rater import schemas
from rater.core.times import parse_time_us
from rater.simulate import simulate
from rater.simulators.display import show
from rater.simulators.pacing import TokenBucket
from rater.simulators.payments import PaymentRules, answer, parse_fail
from tests.support import Worker, cdr, collect, create_topics, event, send_events

RATED = {"rated", "partially_funded", "blocked"}


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def test_token_bucket_keeps_the_rate_whatever_the_sleeps_do() -> None:
    bucket = TokenBucket(100.0, 100.0, now_s=0.0)
    assert bucket.take(0.0, 1000) == 1  # the first message goes at once
    sent, now_s = 1, 0.0
    for step_s in (0.013, 0.0, 0.05, 0.0071, 0.2, 0.03) * 10:  # late, early, irregular wake-ups
        now_s += step_s
        sent += bucket.take(now_s, 1000)
    assert abs(sent - (1 + 100 * now_s)) <= 1  # no drift: the tokens follow the time that passed
    assert bucket.take(now_s, 1000) == 0
    assert 0 < bucket.wait_s(now_s) <= 0.01
    assert bucket.take(now_s + 60, 1000) == 100  # a stall catches up by the capacity only


def test_a_payment_result_is_a_function_of_its_request() -> None:
    request = {"type": "recharge_request", "schema_version": 1, "event_id": "r1", "tenant_id": "t1",
               "occurred_at": "2026-12-04T10:00:00Z", "request_id": "t1/recharge/1", "amount": "20.00",
               "currency": "USD", "balance": "1.00", "trigger_amount": "5.00"}
    ok = answer(request, PaymentRules(failing={}))
    assert ok == answer(request, PaymentRules(failing={}))  # a redelivery repeats the same bytes
    assert (ok["status"], ok["reason"], ok["processed_at"]) == ("succeeded", None, "2026-12-04T10:00:00Z")
    assert schemas.first_error("recharge_result", ok) is None
    failed = answer(request, PaymentRules(failing=dict([parse_fail("t1")]), delay_s=2.5))
    assert (failed["status"], failed["reason"], failed["processed_at"]) == (
        "failed", "card_expired", "2026-12-04T10:00:02.500000Z")
    assert parse_fail("t1:insufficient_funds") == ("t1", "insufficient_funds")


@pytest.mark.parametrize("terminal", [True, False])
def test_the_display_is_a_live_table_on_a_terminal_and_plain_lines_when_piped(terminal: bool) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=100)

    async def run() -> None:
        stop = asyncio.Event()
        shown = asyncio.create_task(show("sim", lambda: [("sent", "42"), ("  user_out", "40")], stop,
                                         interval_s=0.2, console=console))
        await asyncio.sleep(0.5)
        stop.set()
        await shown

    asyncio.run(run())
    text = out.getvalue()
    if terminal:
        assert text.count("\x1b[1A") >= 4, "redrawn in place (cursor up)"
        assert "│ 42 │" in text, "a table"
    else:
        lines = text.splitlines()
        assert len(lines) == 2
        assert lines[0] == "sim: sent 42  user_out 40"


def test_compose_runs_both_simulators_after_the_topics_with_options_they_take() -> None:
    services = yaml.safe_load((Path(__file__).resolve().parent.parent / "docker-compose.yml").read_text())["services"]
    commands = {}
    for name in ("traffic", "payments"):
        service = services[name]
        assert service["image"] == services["topics"]["image"], "the rater image"
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert service["environment"]["RATER_BOOTSTRAP"] == "kafka:9092"
        assert service["command"][:2] == ["simulate", name]
        command = simulate.commands[name]
        commands[name] = command.make_context(name, list(service["command"][2:])).params  # parses, or raises
    # the failing tenant is one the traffic creates: its ids are s{seed}t{tenants}u{users}-NNNNN
    traffic = commands["traffic"]
    [failing] = commands["payments"]["fail"]
    tenant = failing.split(":")[0]
    assert tenant.startswith(f"s{traffic['seed']}t{traffic['tenants']}u{traffic['users']}-")
    assert int(tenant.rsplit("-", 1)[1]) < traffic["tenants"]


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A real worker carrying the wall clock into its partitions, as deployed."""
    prefix = f"sim{uuid.uuid4().hex[:8]}."
    create_topics(kafka_bootstrap, prefix)
    started = Worker(kafka_bootstrap, prefix, tmp_path_factory.mktemp("sim-worker"),
                     {"RATER_TICK_INTERVAL": "1"}).start()
    yield started
    started.stop()


def _env(worker: Worker) -> dict[str, str]:
    return dict(os.environ, RATER_BOOTSTRAP=worker.bootstrap, RATER_TOPIC_PREFIX=worker.prefix)


def _simulate(*args: str) -> list[str]:
    return [sys.executable, "-m", "rater", "simulate", *args]



@pytest.mark.kafka
def test_traffic_at_a_small_rate_is_rated_by_a_real_worker(worker: Worker) -> None:
    sent_at = datetime.now(UTC)
    done = subprocess.run(
        _simulate("traffic", "--rate", "10", "--count", "30", "--tenants", "3", "--users", "12", "--seed", "7",
                  "--run-id", "t1", "--interval", "1"),
        env=_env(worker), capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1].startswith("traffic: sent 30 CDRs in "), lines
    assert any(line.startswith("rater simulate traffic: phase sending") for line in lines), "plain lines when piped"

    def mine(outs):  # type: ignore[no-untyped-def]
        return [o.event for o in outs if o.topic == "rated-cdrs" and "/sim-t1/" in o.event["usage_id"]]

    outs = collect(worker.bootstrap, worker.prefix, lambda o: len(mine(o)) >= 30, worker)
    rated = mine(outs)
    assert sorted(int(e["usage_id"].rsplit("/", 1)[1]) for e in rated) == list(range(30))  # each once
    assert {e["status"] for e in rated} <= RATED
    assert {e["tenant_id"] for e in rated} <= {f"s7t3u12-{n:05d}" for n in range(3)}
    assert not [o for o in outs if o.topic == "dead-letters"], "the setup made every CDR rateable"
    ends = sorted(parse_time_us(e["end_time"]) for e in rated)
    assert 2.5e6 <= ends[-1] - ends[0] <= 15e6, "30 CDRs at 10/s: about 3 s of end times"
    assert abs(ends[0] - parse_time_us(_rfc3339(sent_at))) < 60e6, "CDRs end when they are sent"


def _account(tenant: str, at: datetime) -> list[tuple[str, dict[str, Any]]]:
    when = _rfc3339(at)
    return [
        ("account-commands", event("tenant_upserted", tenant, "c1", when, command_id=f"{tenant}-c1", country="US",
                                   currency="USD", billing_model="prepaid_credits")),
        ("account-commands", event("licenses_assigned", tenant, "c2", when, command_id=f"{tenant}-lic",
                                   user_id="alice", usage_location="US", capabilities=["PAYG"])),
        ("account-commands", event("funds_added", tenant, "c3", when, command_id=f"{tenant}-lot1", amount="6.00",
                                   currency="USD", purchased_at=when)),
        ("account-commands", event("auto_recharge_configured", tenant, "c4", when, command_id=f"{tenant}-ar",
                                   enabled=True, trigger_amount="5.00", recharge_amount="20.00")),
    ]


async def _read_all(bootstrap: str, topic: str, count: int) -> list[tuple[bytes, dict[str, Any]]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    seen: list[tuple[bytes, dict[str, Any]]] = []
    try:
        for _ in range(100):
            for records in (await consumer.getmany(timeout_ms=300)).values():
                seen += [(r.key, orjson.loads(r.value)) for r in records]
            if len(seen) >= count:
                break
    finally:
        await consumer.stop()
    return seen


@pytest.mark.kafka
def test_payments_answers_recharge_requests_succeeding_or_failing_by_tenant(worker: Worker, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    good, bad, expired = f"pays-{tag}", f"fails-{tag}", f"expired-{tag}"
    now = datetime.now(UTC)
    send_events(worker.bootstrap, worker.prefix, [m for t in (good, bad, expired) for m in _account(t, now)])
    collect(worker.bootstrap, worker.prefix, lambda outs: {o.event["caused_by"] for o in outs if o.topic == "balances"}
            >= {f"{t}-ar" for t in (good, bad, expired)}, worker)

    log = tmp_path / "payments.log"
    with log.open("w") as out:
        payments = subprocess.Popen(_simulate("payments", "--fail", f"{bad}:insufficient_funds", "--fail", expired,
                                              "--interval", "1"),
                                    env=_env(worker), stdout=out, stderr=subprocess.STDOUT)
    try:
        long_call = [("cdrs", cdr(t, f"{t}-long", 7200, start=_rfc3339(now - timedelta(seconds=7200)),
                                  end=_rfc3339(now))) for t in (good, bad, expired)]
        send_events(worker.bootstrap, worker.prefix, long_call)

        def answered(outs):  # type: ignore[no-untyped-def]
            kinds = {(o.event["type"], o.event["tenant_id"]) for o in outs if o.topic == "notifications"}
            # the balance the success made is in the same transaction, on another topic:
            # read until it is here too
            paid = {o.event["request_id"] for o in outs if o.event["type"] == "recharge_succeeded"}
            shown = {o.event["caused_by"] for o in outs if o.topic == "balances"}
            asked = {o.event["tenant_id"] for o in outs if o.topic == "recharge-requests"}  # read below too
            return kinds >= {("recharge_succeeded", good), ("recharge_failed", bad), ("recharge_failed", expired)} \
                and paid <= shown and asked >= {good, bad, expired}

        outs = collect(worker.bootstrap, worker.prefix, answered, worker)
    finally:
        payments.send_signal(signal.SIGTERM)
        code = payments.wait(timeout=60)
    output = log.read_text()
    assert code == 0, output
    assert "payments: 3 requests, 1 succeeded, 2 failed, 0 skipped" in output.splitlines()[-1]

    notes = {(o.event["type"], o.event["tenant_id"]): o.event for o in outs if o.topic == "notifications"}
    assert notes["recharge_failed", bad]["reason"] == "insufficient_funds"
    assert notes["recharge_failed", expired]["reason"] == "card_expired"
    requests = {o.event["tenant_id"]: o.event for o in outs if o.topic == "recharge-requests"}
    succeeded = notes["recharge_succeeded", good]
    assert succeeded["request_id"] == requests[good]["request_id"]
    before = [o.event for o in outs if o.topic == "balances" and o.event["caused_by"] == f"{good}-long"][-1]
    after = [o.event for o in outs if o.topic == "balances" and o.event["caused_by"] == succeeded["request_id"]][-1]
    assert Decimal(after["balance"]) == Decimal(before["balance"]) + Decimal("20.00")
    assert succeeded["request_id"] in [lot["lot_id"] for lot in after["lots"]]

    # at least once, committed after the acks: the same group started again answers nothing twice
    with (tmp_path / "again.log").open("w") as out:
        again = subprocess.Popen(_simulate("payments", "--interval", "0.5"), env=_env(worker), stdout=out,
                                 stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "partitions 4" not in (tmp_path / "again.log").read_text():  # it has every partition, and fetched
            assert again.poll() is None, (tmp_path / "again.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "again.log").read_text()
            time.sleep(0.2)
        time.sleep(1)
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(timeout=60)
    rerun = (tmp_path / "again.log").read_text()
    assert again.returncode == 0, rerun
    assert "payments: 0 requests" in rerun.splitlines()[-1], rerun

    results = asyncio.run(_read_all(worker.bootstrap, worker.prefix + "recharge-results", 3))
    mine = {value["tenant_id"]: (key, value) for key, value in results if value["tenant_id"] in requests}
    assert set(mine) == {good, bad, expired}
    for tenant, (key, result) in mine.items():
        assert schemas.first_error("recharge_result", result) is None
        assert key == tenant.encode()  # the request's key
        assert result["request_id"] == requests[tenant]["request_id"]
        assert result["processed_at"] == requests[tenant]["occurred_at"]
        assert (result["amount"], result["currency"]) == ("20.00", "USD")


@pytest.mark.kafka
def test_exit_codes_say_a_topic_is_missing_or_no_worker_applied_the_accounts(kafka_bootstrap: str,
                                                                           topic_prefix: str) -> None:
    env = dict(os.environ, RATER_BOOTSTRAP=kafka_bootstrap, RATER_TOPIC_PREFIX=topic_prefix)
    missing = subprocess.run(_simulate("traffic", "--count", "1"), env=env, capture_output=True, text=True,
                             timeout=120, check=False)
    assert missing.returncode == 1, missing.stderr
    assert f"no topic {topic_prefix}account-commands, {topic_prefix}cdrs" in missing.stderr
    bad = subprocess.run(_simulate("traffic", "--tenants", "5", "--users", "3"), env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert bad.returncode == 2, bad.stderr
    create_topics(kafka_bootstrap, topic_prefix)  # and no worker
    alone = subprocess.run(_simulate("traffic", "--count", "1", "--setup-timeout", "2"), env=env,
                           capture_output=True, text=True, timeout=120, check=False)
    assert alone.returncode == 3, alone.stdout + alone.stderr
    assert "no worker applied the accounts of 10 of 10 tenants within 2 s" in alone.stderr


def test_with_a_notify_domain_every_simulated_tenant_gets_a_valid_contact_in_its_language() -> None:
    from rater.simulators.traffic import LOCALE_OF_COUNTRY, dated_setup  # noqa: PLC0415 - one test's import
    from rater.workload import Workload  # noqa: PLC0415

    workload = Workload(40, 80, seed=3)
    plain = dated_setup(workload, 1_790_000_000_000_000)
    assert all("notify" not in command for command in plain)
    upserts = [e for e in dated_setup(Workload(40, 80, seed=3), 1_790_000_000_000_000, "Example.Test")
               if e["type"] == "tenant_upserted"]
    assert len(upserts) == 40
    for upsert in upserts:
        assert schemas.first_error("tenant_upserted", upsert) is None
        assert schemas.definition_error("notify", upsert["notify"]) is None
        assert upsert["notify"]["emails"] == [f"admin@{upsert['tenant_id']}.example.test"]
        assert upsert["notify"]["locale"] == LOCALE_OF_COUNTRY.get(upsert["country"], "en")
    assert {"es", "it", "pt-BR", "en"} <= {e["notify"]["locale"] for e in upserts}
