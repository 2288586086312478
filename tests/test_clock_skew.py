"""A worker whose host clock is hours off the broker's (issue 11, finding 6): a real
worker process under libfaketime (Debian's ``faketime``: only the worker is faked, the
broker and this test keep the machine's clock, so "the broker's clock" here is
``time.time()``).

Kafka 4 refuses a record stamped more than ``log.message.timestamp.after.max.ms``
(1 h) ahead of the broker; a worker stamping its records with a host clock 2 h ahead
died on its first unit, and again after every restart. One 2 h behind was not refused
but ticked its partitions 2 h late (lots expired 2 h late) and stamped every record 2 h
in the past. Both must rate, tick and stamp records with the broker's time, and say so
once in the log.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from rater.core.times import parse_time_us
from rater.topics import load_topics
from tests.support import (
    OUTPUT_TOPICS,
    TEST_PARTITIONS,
    Worker,
    alter_topic,
    cdr,
    collect,
    create_topics,
    event,
    send_events,
)

pytestmark = pytest.mark.kafka

LIBFAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), None)
SLACK_S = 60.0
"""How far from the broker's clock a record's timestamp or a tick's ``now`` may be."""


def skewed(skew: str) -> dict[str, str]:
    """The environment of a worker whose wall clock is ``skew`` off (libfaketime's
    ``+2h`` form); its monotonic clock stays true, as a real host's does."""
    assert LIBFAKETIME is not None, "install Debian's faketime package (.ci/run does)"
    return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": skew, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "RATER_TICK_INTERVAL": "1"}


def _text(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def _read_all(bootstrap: str, topics: list[str]) -> dict[str, list[Any]]:
    """Every committed record of ``topics``, from the beginning to the current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, list[Any]] = {t: [] for t in topics}
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(TEST_PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        for tp, end in ends.items():
            while await consumer.position(tp) < end:
                for read, records in (await consumer.getmany(timeout_ms=500)).items():
                    found[read.topic].extend(records)
    finally:
        await consumer.stop()
    return found


@pytest.fixture(params=["+2h", "-2h"])
def skew(request: pytest.FixtureRequest) -> str:
    return str(request.param)



def _payg_tenant(tenant: str, lot: str, purchased_at: str) -> list[tuple[str, dict[str, Any]]]:
    """A pre-paid tenant, one PAYG user (alice) and a 10.00 USD lot."""
    return [
        ("account-commands", event("tenant_upserted", tenant, "e1", command_id="c1", country="US",
                                   currency="USD", billing_model="prepaid_credits")),
        ("account-commands", event("licenses_assigned", tenant, "e2", command_id="lic", user_id="alice",
                                   usage_location="US", capabilities=["PAYG"])),
        ("account-commands", event("funds_added", tenant, "e3", command_id=lot, amount="10.00",
                                   currency="USD", purchased_at=purchased_at)),
    ]

def test_a_worker_whose_clock_is_hours_off_rates_ticks_and_stamps_with_the_brokers_time(
        kafka_bootstrap: str, tmp_path: Path, topic_prefix: str, skew: str) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    started = time.time()
    now = datetime.fromtimestamp(started, UTC)
    # a lot bought a year ago that expires 20 s from now: a tick 2 h early forfeits it at
    # once, a tick 2 h late not within this test
    bought = now.replace(year=now.year - 1) + timedelta(seconds=20)
    expires = parse_time_us(_text(bought.replace(year=now.year)))
    tenant = "skewed"
    worker = Worker(kafka_bootstrap, topic_prefix, tmp_path / "w", skewed(skew)).start()
    try:
        send_events(kafka_bootstrap, topic_prefix, [
            *_payg_tenant(tenant, "new-lot", _text(now)),
            ("account-commands", event("funds_added", tenant, "e4", command_id="old-lot", amount="2.50",
                                       currency="USD", purchased_at=_text(bought))),
            ("cdrs", cdr(tenant, "u1", 125, start=_text(now - timedelta(minutes=10)),
                         end=_text(now - timedelta(minutes=10) + timedelta(seconds=125)))),
        ])
        outs = collect(kafka_bootstrap, topic_prefix, lambda o: (
            any(x.event["type"] == "rated_cdr" for x in o) and any(x.event["type"] == "credits_expired" for x in o)),
            worker, timeout_s=90)
        worker.check_alive()
        records = asyncio.run(_read_all(kafka_bootstrap, [
            topic_prefix + t for t in (*OUTPUT_TOPICS, "rater-state", "rater-ticks")]))
        ended = time.time()
    finally:
        worker.stop()
    assert worker.proc.returncode == 0

    # the worker's clock really was off: its own log lines carry it
    log = worker.log.read_text(errors="replace")
    first = next(line for line in log.splitlines() if " INFO " in line)
    logged_at = time.mktime(time.strptime(first[:19], "%Y-%m-%d %H:%M:%S"))
    offset_s = 2 * 3600 if skew.startswith("+") else -2 * 3600
    assert abs(logged_at - started - offset_s) < SLACK_S, first

    [rated] = [o.event for o in outs if o.event["type"] == "rated_cdr"]
    assert rated["status"] == "rated"
    [expired] = [o.event for o in outs if o.event["type"] == "credits_expired"]
    assert expired["lot_id"] == "old-lot"
    # forfeited by a tick carrying the broker's time: not before the expiry, nor long after
    assert expires <= parse_time_us(expired["occurred_at"]) <= expires + int(SLACK_S * 1e6), expired

    low, high = (started - SLACK_S) * 1000, (ended + SLACK_S) * 1000
    stamped = {topic.removeprefix(topic_prefix): [r.timestamp for r in found] for topic, found in records.items()}
    assert all(stamped[t] for t in ("rated-cdrs", "balances", "rater-state", "rater-ticks")), stamped
    for topic, timestamps in stamped.items():
        assert all(low <= ts <= high for ts in timestamps), (topic, timestamps)
    ticks = [orjson.loads(r.value) for r in records[topic_prefix + "rater-ticks"]]
    nows = [parse_time_us(t["now"]) / 1e6 for t in ticks if t.get("type") == "tick"]
    assert nows
    assert all(started - SLACK_S <= at <= ended + SLACK_S for at in nows), nows
    assert stamped["dead-letters"] == []  # the clock probe is no input of the task's

    # one warning says so, and nothing is an error
    lines = log.splitlines()
    warned = [line for line in lines if " WARNING " in line and "clock" in line]
    assert len(warned) == 1, warned
    assert not [line for line in lines if " ERROR " in line or "Traceback" in line or "Unclosed" in line]



def test_a_tick_topic_made_before_cannot_measure_the_clock_and_a_refused_stamp_stops_the_worker_cleanly(
        kafka_bootstrap: str, tmp_path: Path, topic_prefix: str) -> None:
    """On a CreateTime tick topic the worker has no measure of the broker's clock: two
    hours ahead, its first stamp is refused. It stops non-zero (a supervisor restarts
    it) with one line saying what to fix — no traceback, nothing left unclosed."""
    create_topics(kafka_bootstrap, topic_prefix)
    made_before = {**load_topics()["rater-ticks"].config, "message.timestamp.type": "CreateTime"}
    asyncio.run(alter_topic(kafka_bootstrap, f"{topic_prefix}rater-ticks", made_before))
    worker = Worker(kafka_bootstrap, topic_prefix, tmp_path / "w", skewed("+2h")).start()
    try:
        assert worker.proc.wait(timeout=60) != 0
    finally:
        worker.stop()
    lines = worker.log.read_text(errors="replace").splitlines()
    errors = [line for line in lines if " ERROR " in line]
    assert len(errors) == 1, lines
    assert f"{topic_prefix}rater-ticks is not message.timestamp.type=LogAppendTime" in errors[0]
    assert not [line for line in lines if "Traceback" in line or "Unclosed" in line], lines


def test_a_unit_refused_for_its_timestamp_stops_the_worker_cleanly_and_a_restart_rates_it_once(
        kafka_bootstrap: str, tmp_path: Path, topic_prefix: str) -> None:
    """The broker refuses the stamps of a unit although the clock was measured: the
    clocks moved apart since (here the worker's clocks, wall and monotonic, jump 4 s
    ahead, and ``rated-cdrs`` takes stamps at most 1 s ahead; no ticks measure again).
    The unit is aborted, nothing of it shows, the worker stops non-zero with one line
    saying what it measured — no traceback, nothing left unclosed; restarted (its
    clocks still 4 s ahead), it measures afresh and rates the CDR once."""
    assert LIBFAKETIME is not None, "install Debian's faketime package (.ci/run does)"
    create_topics(kafka_bootstrap, topic_prefix)
    declared = load_topics()["rated-cdrs"].config
    asyncio.run(alter_topic(kafka_bootstrap, f"{topic_prefix}rated-cdrs",
                            {**declared, "message.timestamp.after.max.ms": "1000"}))
    tenant = "refused"
    send_events(kafka_bootstrap, topic_prefix, [
        *_payg_tenant(tenant, "lot", "2026-11-01T00:00:00Z"),
    ])
    clock = tmp_path / "clock"
    clock.write_text("+0\n")
    jumping = {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(clock), "FAKETIME_NO_CACHE": "1",
               "RATER_TICK_INTERVAL": "0"}
    worker = Worker(kafka_bootstrap, topic_prefix, tmp_path / "w", jumping).start()
    try:
        collect(kafka_bootstrap, topic_prefix, lambda o: any(x.event.get("caused_by") == "lot" for x in o), worker)
        clock.write_text("+4\n")  # read at the worker's next clock reading
        send_events(kafka_bootstrap, topic_prefix, [("cdrs", cdr(tenant, "u1", 60))])
        assert worker.proc.wait(timeout=60) != 0
    finally:
        worker.stop()
    lines = worker.log.read_text(errors="replace").splitlines()
    errors = [line for line in lines if " ERROR " in line]
    assert len(errors) == 1, lines
    assert re.search(r"refused a record's timestamp \(broker clock − host clock: [+-]0\.0\d\d s at the previous"
                     r" measurement, -(?:3\.9|4\.0)\d\d s now", errors[0]), errors[0]  # 4 s, ± a round trip
    assert not [line for line in lines if "Traceback" in line or "Unclosed" in line], lines
    shown = asyncio.run(_read_all(kafka_bootstrap, [topic_prefix + t for t in OUTPUT_TOPICS]))
    assert shown[f"{topic_prefix}balances"]  # the commands' unit, before the jump
    assert not [r for found in shown.values() for r in found if b"u1" in r.value]

    again = Worker(kafka_bootstrap, topic_prefix, tmp_path / "w2", {
        **jumping, "RATER_DATA_DIR": str(tmp_path / "w" / "data")}).start()
    try:
        collect(kafka_bootstrap, topic_prefix, lambda o: any(x.topic == "rated-cdrs" for x in o), again)
        # a later call of the tenant: rated after anything the restart made of u1, on the
        # same partition, so a second u1 would be read before it
        send_events(kafka_bootstrap, topic_prefix, [("cdrs", cdr(tenant, "u2", 60, start="2026-11-02T10:40:00Z",
                                                                 end="2026-11-02T10:41:00Z"))])
        outs = collect(kafka_bootstrap, topic_prefix, lambda o: any(
            x.topic == "rated-cdrs" and x.event["usage_id"] == "u2" for x in o), again)
        again.check_alive()
    finally:
        again.stop()
    assert [o.event["usage_id"] for o in outs if o.topic == "rated-cdrs"] == ["u1", "u2"]
