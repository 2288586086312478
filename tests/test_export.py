"""``rater export usage``: a tenant's rated CDRs of a month as CSV, read from the real
broker — CDRs rated by a real worker, and rated_cdr records produced directly (other
tenants on the same partition, other months, duplicates, records outside the month's
window, records deleted by retention)."""

from __future__ import annotations

import asyncio
import csv
import io
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from click.testing import CliRunner, Result

from rater import schemas
from rater.cli import main
from rater.export import HEADER, Progress, month_window, read_month, tenant_partition
from tests.support import TEST_PARTITIONS, alter_topic, cdr, collect, create_topics, event, fresh_worker, send_events

pytestmark = pytest.mark.kafka

NOW = datetime.now(UTC)
MONTH = NOW.strftime("%Y-%m")


def at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def export(bootstrap: str, prefix: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["export", "usage", *args],
                              env={"RATER_BOOTSTRAP": bootstrap, "RATER_TOPIC_PREFIX": prefix})


def parse(text: str) -> list[dict[str, str]]:
    assert text.startswith(",".join(HEADER) + "\r\n")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def told(result: Result) -> str:
    """What an export said: its exit code, stderr, stdout, and the exception it raised."""
    raised = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else ""
    return (f"exit {result.exit_code}\n--- stderr:\n{result.stderr}--- stdout:\n{result.stdout}"
            f"{'--- raised:' + chr(10) + raised if raised else ''}")


def usage_ids(result: Result) -> list[str]:
    """The Usage IDs an export that exited 0 wrote to stdout."""
    assert result.exit_code == 0, told(result)
    return [r["Usage ID"] for r in parse(result.stdout_bytes.decode())]


def rated_cdr(tenant: str, usage_id: str, *, month: str = MONTH, status: str = "rated", seconds: int = 61,
              **overrides: Any) -> dict[str, Any]:
    """A schema-valid rated_cdr, as a worker would emit it."""
    start = month_window(month)[0] + timedelta(days=1, hours=9)
    value = {
        "type": "rated_cdr", "schema_version": 1, "event_id": f"rated-{usage_id}-{uuid.uuid4().hex[:6]}",
        "tenant_id": tenant, "occurred_at": at(start + timedelta(seconds=seconds)),
        "usage_id": usage_id, "call_id": f"call-{usage_id}", "conference_id": None, "user_id": "alice",
        "user_location": "US", "call_type": "user_out", "number_type": "geographic",
        "caller_number": "+14155550100", "destination_number": "+442071838750",
        "start_time": at(start), "end_time": at(start + timedelta(seconds=seconds)), "duration_seconds": seconds,
        "status": status, "reason": None, "billing_month": month, "destination_country": "GB",
        "scope": "international", "pool_usage": [], "credit_seconds": seconds, "charged_seconds": 120,
        "connection_fee": "0.05", "charge": "0.49", "uncollected": "0.00", "overage": "0.00", "currency": "USD",
        "capability": "MCOPSTNPP", "lot_debits": [{"lot_id": "lot-1", "amount": "0.49"}], "balance_after": "9.51",
    }
    value.update(overrides)
    assert schemas.first_error("rated_cdr", value) is None
    return value


async def _produce(bootstrap: str, topic: str, records: list[tuple[dict[str, Any], datetime | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for value, stamp in records:
            await producer.send_and_wait(topic, orjson.dumps(value), key=value["tenant_id"].encode(),
                                         timestamp_ms=None if stamp is None else int(stamp.timestamp() * 1000))
    finally:
        await producer.stop()


def produce(bootstrap: str, prefix: str, records: list[tuple[dict[str, Any], datetime | None]]) -> None:
    asyncio.run(_produce(bootstrap, prefix + "rated-cdrs", records))


def neighbour_of(tenant: str) -> str:
    """Another tenant id on the same partition."""
    want = tenant_partition(tenant, TEST_PARTITIONS)
    return next(name for n in range(1000)
                if tenant_partition(name := f"{tenant}-n{n}", TEST_PARTITIONS) == want)


def test_cdrs_rated_by_a_worker_come_out_as_the_usage_report(kafka_bootstrap: str, tmp_path: Path) -> None:
    worker = fresh_worker(kafka_bootstrap, "export", tmp_path / "worker")
    try:
        bootstrap, prefix = kafka_bootstrap, worker.prefix
        tenant = f"exp-{uuid.uuid4().hex[:6]}"
        opened = at(NOW - timedelta(hours=2))
        send_events(bootstrap, prefix, [
            ("account-commands", event("tenant_upserted", tenant, "e1", at=opened, command_id="c1", country="US",
                                       currency="USD", billing_model="prepaid_credits")),
            ("account-commands", event("licenses_assigned", tenant, "e2", at=opened, command_id="c2",
                                       user_id="alice", usage_location="US", capabilities=["PAYG"])),
            ("account-commands", event("funds_added", tenant, "e3", at=opened, command_id="lot-1", amount="20.00",
                                       currency="USD", purchased_at=opened)),
        ])
        collect(bootstrap, prefix, lambda outs: any(o.event.get("caused_by") == "lot-1" for o in outs), worker)
        start = max(NOW - timedelta(hours=1), month_window(MONTH)[0])  # in this month, even in its first hour
        calls = [cdr(tenant, f"{tenant}-u{n}", 30 + 47 * n, destination=destination, start=at(start),
                     end=at(start + timedelta(seconds=30 + 47 * n)), call_id=f'call "{n}", with a comma')
                 for n, destination in enumerate(["+12125550123", "+442071838750", "+4930901820"])]
        send_events(bootstrap, prefix, [("cdrs", c) for c in [*calls, calls[0]]])  # the last one: a duplicate
        outs = collect(bootstrap, prefix, lambda outs: sum(o.topic == "rated-cdrs" for o in outs) >= 4, worker)
        rated = [o.event for o in outs if o.topic == "rated-cdrs" and o.event["status"] != "duplicate"]
        assert len(rated) == 3

        target = tmp_path / "usage.csv"
        result = export(bootstrap, prefix, "--tenant", tenant, "--month", MONTH, "-o", str(target))
        assert result.exit_code == 0, result.output
        assert result.stdout == ""
        [line] = result.stderr.splitlines()  # not a terminal: no progress bar
        assert line.startswith(f"3 row(s) of {tenant} for {MONTH}; 1 duplicate(s) left out")
        data = target.read_bytes()
        assert data.count(b"\r\n") == 4
        assert b'"call ""0"", with a comma"' in data  # RFC 4180 quoting
        rows = parse(data.decode())
        assert [r["Usage ID"] for r in rows] == [r["usage_id"] for r in rated]
        for got, want in zip(rows, rated, strict=True):
            assert got == {
                "Usage ID": want["usage_id"], "Call ID": want["call_id"], "User": "alice", "User location": "US",
                "Caller ID": "+14155550100", "Call type": "user_out", "Number type": "geographic",
                "Domestic/International": want["scope"], "Destination dialed": want["destination_country"],
                "Destination number": want["destination_number"], "Start time": want["start_time"],
                "End time": want["end_time"], "Duration seconds": str(want["duration_seconds"]),
                "Connection fee": want["connection_fee"], "Charge": want["charge"], "Currency": "USD",
                "Capability": want["capability"] or "", "Status": want["status"], "Uncollected": want["uncollected"],
            }
        assert {r["Domestic/International"] for r in rows} == {"domestic", "international"}

        # the same on stdout, nothing else there
        piped = export(bootstrap, prefix, "--tenant", tenant, "--month", MONTH)
        assert piped.exit_code == 0
        assert piped.stdout_bytes == data
    finally:
        worker.stop()


def test_only_the_tenants_month_without_duplicates_and_only_inside_the_window(kafka_bootstrap: str,
                                                                             topic_prefix: str) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    # u-stale is older than rated-cdrs' 31 days: alone in its segment (a record older than
    # segment.ms rolls it), the broker's retention check (every minute) would delete it
    # at any moment of the test
    asyncio.run(alter_topic(kafka_bootstrap, topic_prefix + "rated-cdrs",
                            {"cleanup.policy": "delete", "retention.ms": "-1"}))
    tenant = f"win-{uuid.uuid4().hex[:6]}"
    other = neighbour_of(tenant)
    previous = (month_window(MONTH)[0] - timedelta(days=1)).strftime("%Y-%m")
    odd_user = rated_cdr(tenant, "u-odd", user_id='=cmd|"x"\n2', status="blocked", reason="no_license",
                         capability=None, scope=None, destination_country=None, charge="0.00",
                         connection_fee="0.00", lot_debits=[], credit_seconds=0, charged_seconds=0)
    produce(kafka_bootstrap, topic_prefix, [
        (rated_cdr(tenant, "u-stale"), NOW - timedelta(days=70)),  # before the window: not read
        (rated_cdr(tenant, "u1"), None),
        (rated_cdr(other, "o1"), None),  # same partition, another tenant
        (rated_cdr(tenant, "u1", status="duplicate", lot_debits=[], charge="0.00"), None),
        (rated_cdr(tenant, "u-prev", month=previous), month_window(MONTH)[0] + timedelta(hours=1)),  # in its grace
        (odd_user, None),
        (rated_cdr(tenant, "u2", status="partially_funded", reason="no_funds", uncollected="0.20",
                   lot_debits=[{"lot_id": "lot-1", "amount": "0.29"}]), None),
    ])
    result = export(kafka_bootstrap, topic_prefix, "--tenant", tenant, "--month", MONTH)
    assert result.exit_code == 0, told(result)
    rows = parse(result.stdout_bytes.decode())
    assert [(r["Usage ID"], r["Status"], r["Uncollected"]) for r in rows] == [
        ("u1", "rated", "0.00"), ("u-odd", "blocked", "0.00"), ("u2", "partially_funded", "0.20")]
    assert (rows[1]["User"], rows[1]["Capability"], rows[1]["Domestic/International"]) == ('=cmd|"x"\n2', "", "")
    assert result.stderr.splitlines()[0].startswith(f"3 row(s) of {tenant} for {MONTH}; 1 duplicate(s) left out"
                                                    " (read 6 record(s)")

    everything = export(kafka_bootstrap, topic_prefix, "--tenant", tenant, "--month", MONTH, "--from-beginning")
    assert usage_ids(everything) == ["u-stale", "u1", "u-odd", "u2"], told(everything)
    last_month = export(kafka_bootstrap, topic_prefix, "--tenant", tenant, "--month", previous)
    assert usage_ids(last_month) == ["u-prev"], told(last_month)
    empty = export(kafka_bootstrap, topic_prefix, "--tenant", "nobody", "--month", "2020-01")
    assert usage_ids(empty) == [], told(empty)


async def _delete_before(bootstrap: str, tp: TopicPartition, offset: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(before_offset=offset)})
    finally:
        await admin.close()


def test_records_deleted_by_retention_make_the_export_exit_3(kafka_bootstrap: str, topic_prefix: str,
                                                             tmp_path: Path) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    tenant = f"ret-{uuid.uuid4().hex[:6]}"
    produce(kafka_bootstrap, topic_prefix, [(rated_cdr(tenant, f"u{n}"), None) for n in range(3)])
    tp = TopicPartition(topic_prefix + "rated-cdrs", tenant_partition(tenant, TEST_PARTITIONS))
    asyncio.run(_delete_before(kafka_bootstrap, tp, 1))
    target = tmp_path / "usage.csv"
    result = export(kafka_bootstrap, topic_prefix, "--tenant", tenant, "--month", MONTH, "-o", str(target))
    assert result.exit_code == 3
    assert [r["Usage ID"] for r in parse(target.read_bytes().decode())] == ["u1", "u2"]
    assert result.stderr.splitlines()[-1] == (
        f"warning: {tp.topic} partition {tp.partition} no longer holds its records before offset 1 (retention):"
        f" rows of {MONTH} may be missing")


class DeletedOnStart(Progress):
    """Retention striking between the export's offset look-ups and its read: deletes the
    partition's records before ``offset`` when the read is about to start."""

    def __init__(self, bootstrap: str, tp: TopicPartition, offset: int) -> None:
        super().__init__(shown=False)
        self.bootstrap, self.tp, self.offset = bootstrap, tp, offset

    def start(self, total: int, label: str) -> None:
        with ThreadPoolExecutor(1) as other:  # the export's loop is running in this thread
            other.submit(asyncio.run, _delete_before(self.bootstrap, self.tp, self.offset)).result()
        super().start(total, label)


@pytest.mark.parametrize("from_beginning", [False, True])
def test_records_deleted_while_the_export_reads_make_it_incomplete_not_empty(
        kafka_bootstrap: str, topic_prefix: str, from_beginning: bool) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    tenant = f"del-{uuid.uuid4().hex[:6]}"
    produce(kafka_bootstrap, topic_prefix, [(rated_cdr(tenant, f"u{n}"), None) for n in range(4)])
    tp = TopicPartition(topic_prefix + "rated-cdrs", tenant_partition(tenant, TEST_PARTITIONS))
    rows: list[list[str]] = []
    summary = asyncio.run(read_month(kafka_bootstrap, tp.topic, tenant, MONTH, write=rows.append,
                                     progress=DeletedOnStart(kafka_bootstrap, tp, 2),
                                     from_beginning=from_beginning, stall_s=30))
    assert [r[0] for r in rows] == ["u2", "u3"]
    assert (summary.first_offset, summary.stop_offset, summary.records) == (0, 4, 2)
    assert (summary.incomplete, summary.gone_before) == (True, 2)
    assert summary.notes[-1] == "records 0–1 were deleted (retention) before they were read"


def test_bad_options_and_an_unreachable_broker(tmp_path: Path) -> None:
    target = tmp_path / "usage.csv"
    bad_month = CliRunner().invoke(main, ["export", "usage", "--tenant", "acme", "--month", "2026-13"])
    assert (bad_month.exit_code, bad_month.stderr) == (2, "Error: --month '2026-13': must be a month YYYY-MM,"
                                                          " e.g. 2026-11\n")
    unreachable = CliRunner().invoke(main, ["export", "usage", "--tenant", "acme", "--month", "2026-11",
                                            "--bootstrap", "127.0.0.1:1", "-o", str(target)])
    assert unreachable.exit_code == 1
    assert unreachable.stderr == "Error: cannot reach the Kafka broker at 127.0.0.1:1 (--bootstrap, RATER_BOOTSTRAP)\n"
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


def test_a_missing_topic(kafka_bootstrap: str, topic_prefix: str) -> None:
    result = export(kafka_bootstrap, topic_prefix, "--tenant", "acme", "--month", "2026-11")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (f"Error: topic {topic_prefix}rated-cdrs does not exist on"
                                              f" {kafka_bootstrap}; `rater topics create` makes it")
