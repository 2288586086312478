"""Issue 12: the worker's metrics, health and readiness.

The counts a batch makes (rater/shell/tally.py) are checked against the outputs
themselves, recounted here from their JSON with Decimal arithmetic; the exposition is
checked with Prometheus's own parser (``promtool check metrics`` when it is installed —
CI installs it); and a real worker on the real broker is scraped: what /metrics says it
rated is what came out on the topics.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import iso4217
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rater import edge
from rater.catalog import rating_context
from rater.core.times import parse_time_us
from rater.schemas import INPUT_TYPES, NOTIFIER_TYPES, schema_names
from rater.shell import tally
from rater.shell.driver import Driver
from rater.shell.metrics import INPUT_TOPICS, SOURCE_TOPICS, Histogram, Metrics, expected_series, registry
from rater.shell.settings import Settings
from rater.shell.task import TICKS, MemoryStore, PartitionTask, tick_value
from rater.workload import Workload
from tests.support import Worker, fresh_worker
from tests.test_scenarios import Tenant, tenant_id

CTX = rating_context()


def _minor(amount: str, currency: str) -> int:
    return int(Decimal(amount).scaleb(iso4217.Currency(currency).exponent or 0))


def _workload_records() -> list[edge.Record]:
    """A seeded workload whose tenants run out of money (low balance, recharge
    requests, depleted, uncollected charges), some postpaid (overage), with hostile
    records between them (dead letters) and ticks (recharge timeouts)."""
    work = Workload(tenants=12, users=60, seed=7)
    items: list[tuple[str, bytes]] = []
    for topic, command in work.setup():
        if command["type"] == "funds_added":  # little money: the tenants run out
            command["amount"] = "300" if command["currency"] in ("JPY", "INR") else "3.00"
        items.append((topic, orjson.dumps(command)))
    cdrs = list(work.cdrs(1500, per_second=2.0))
    for n, call in enumerate(cdrs):
        items.append(("cdrs", orjson.dumps(call)))
        if n % 150 == 0:
            items.append(("cdrs", b"{not json"))
            items.append(("account-commands", orjson.dumps({"type": "funds_added", "tenant_id": "x"})))
            items.append((TICKS, tick_value(parse_time_us(call["end_time"]) + 3_600_000_000)))
    offsets: Counter[str] = Counter()
    records = []
    for topic, raw in items:
        key = None if topic == TICKS else (orjson.loads(raw).get("tenant_id", "") if raw[:1] == b"{" and
                                           raw != b"{not json" else "").encode()
        records.append(edge.Record(topic, 0, offsets[topic], key, raw, 1_790_000_000_000))
        offsets[topic] += 1
    return records


def test_a_batchs_counts_are_its_outputs_recounted() -> None:
    store = MemoryStore()
    task = PartitionTask(0, CTX, store)
    counts: Counter[tuple[str, ...]] = Counter()
    ends: list[int] = []
    outputs = []
    records = _workload_records()
    for start in range(0, len(records), 400):
        batch = task.process(records[start:start + 400])
        store.write(batch)
        counts.update(batch.counts)
        ends.extend(batch.call_ends_us)
        outputs.extend(batch.outputs)
    expected: Counter[tuple[str, ...]] = Counter()
    rated_ends = []
    for out in outputs:
        event = orjson.loads(out.value)
        expected[(tally.OUTPUT, out.topic, event["type"])] += 1
        if event["type"] == "dead_letter":
            expected[(tally.DEAD_LETTER, event["reason"], event["source_topic"])] += 1
        elif event["type"] == "rated_cdr":
            currency = event["currency"]
            expected[(tally.RATED, event["status"], event["capability"] or "none")] += 1
            for kind, field in ((tally.CHARGED, "charge"), (tally.OVERAGE, "overage"),
                                (tally.UNCOLLECTED, "uncollected")):
                expected[(kind, currency)] += _minor(event[field], currency)
            expected[(tally.DEBITED, currency)] += sum(_minor(d["amount"], currency) for d in event["lot_debits"])
            rated_ends.append(parse_time_us(event["end_time"]))
        elif event["type"] == "recharge_request":
            expected[(tally.RECHARGE_REQUESTED, event["currency"])] += 1
    expected = +expected  # zero amounts are not counted
    assert counts == expected
    assert sorted(ends) == sorted(rated_ends)
    shown = set(expected_series(CTX))
    assert set(counts) <= shown, f"counted but not shown at 0 from the start: {set(counts) - shown}"
    seen = {key[0] for key in counts} | {key[2] for key in counts if key[0] == tally.OUTPUT}
    for wanted in (tally.CHARGED, tally.DEBITED, tally.OVERAGE, tally.UNCOLLECTED, tally.RECHARGE_REQUESTED,
                   tally.DEAD_LETTER, "low_balance", "balance_depleted", "recharge_failed"):
        assert wanted in seen, f"the workload made no {wanted}: the test proves less than it says"


def test_every_output_event_type_is_known_to_the_metrics() -> None:
    inputs = {kind for kinds in INPUT_TYPES.values() for kind in kinds}
    notifiers = {kind for kinds in NOTIFIER_TYPES.values() for kind in kinds}  # rater notify's, not the worker's
    outputs = set(schema_names()) - inputs - notifiers
    assert sorted(kind for _, kind in tally.OUTPUT_TYPES) == sorted(outputs)


def test_known_series_are_shown_at_zero_before_their_first_event() -> None:
    """A counter that appears with its first increment hides it from increase()."""
    metrics = Metrics("0.1.0", "pure")
    metrics.expect(expected_series(CTX), INPUT_TOPICS)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry(metrics)).decode())}

    def labels(family: str, *names: str) -> set[tuple[str, ...]]:
        samples = [s for s in families[family].samples if s.name == family + "_total"]
        assert all(s.value == 0 for s in samples)
        return {tuple(s.labels[name] for name in names) for s in samples}

    rated = labels("rater_cdrs_rated", "status", "capability")
    assert ("rated", "MCOPSTNPP") in rated
    assert ("blocked", "none") in rated
    assert ("no_rate", "cdrs") in labels("rater_dead_letters", "reason", "topic")
    assert ("rated-cdrs", "rated_cdr") in labels("rater_output_records", "topic", "type")
    assert {("USD",), ("EUR",)} <= labels("rater_debited_minor_units", "currency")
    assert ("USD",) in labels("rater_recharge_requests", "currency")
    assert labels("rater_input_records", "topic") == {(topic,) for topic in INPUT_TOPICS}
    assert {s.labels["topic"] for s in families["rater_record_to_commit_seconds"].samples} == set(INPUT_TOPICS)
    assert {topic for (topic,) in labels("rater_dead_letters", "topic")} == set(SOURCE_TOPICS)


def test_a_task_that_does_not_count_decides_the_same() -> None:
    records = _workload_records()[:900]
    counted, silent = MemoryStore(), MemoryStore()
    a = PartitionTask(0, CTX, counted).process(records)
    b = PartitionTask(0, CTX, silent, counting=False).process(records)
    assert [o.value for o in a.outputs] == [o.value for o in b.outputs]
    assert a.states == b.states
    assert a.counts
    assert not b.counts
    assert not b.call_ends_us


def test_histogram_buckets_are_prometheus_le_buckets() -> None:
    histogram = Histogram((1.0, 2.0))
    for value in (0.5, 1.0, 1.5, 2.0, 7.0):
        histogram.observe(value)
    assert histogram.buckets() == [("1.0", 2.0), ("2.0", 4.0), ("+Inf", 5.0)]
    assert histogram.sum == 12.0


@given(st.lists(st.integers(min_value=-5_000_000, max_value=100_000_000_000), max_size=60),
       st.sampled_from([1, 1000, 1_000_000]))
def test_a_unit_observed_at_once_is_what_one_observe_each_would_give(ages: list[int], per_second: int) -> None:
    now = 200_000_000_000
    bounds = (0.01, 0.025, 1.0, 3600.0)
    ages += [round(b * per_second) for b in bounds]  # exactly on a bound: le
    one, each = Histogram(bounds), Histogram(bounds)
    one.observe_ages(now, [now - age for age in ages], per_second)
    for age in ages:
        each.observe(max(0, age) / per_second)
    assert one.counts == each.counts
    assert one.sum == pytest.approx(each.sum, rel=1e-9)


def _exposition() -> str:
    metrics = Metrics("0.1.0", "pure (RATER_PURE is set)")
    records = _workload_records()[:600]
    task = PartitionTask(0, CTX, MemoryStore())
    batch = task.process(records)
    metrics.committed(batch.counts, batch.call_ends_us, ((r.topic, r.timestamp_ms) for r in records), 0.02,
                      1_790_000_001_000)
    metrics.restoring(3).target = 10
    return generate_latest(registry(metrics)).decode()


def test_the_exposition_parses_and_carries_what_was_committed() -> None:
    text = _exposition()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    rated = families["rater_cdrs_rated"]
    assert rated.type == "counter"
    assert sum(s.value for s in rated.samples if s.name == "rater_cdrs_rated_total") > 0
    assert families["rater_cdr_end_to_commit_seconds"].type == "histogram"
    assert [s.labels["core_build"] for s in families["rater_info"].samples] == ["pure"]
    assert {s.labels["topic"] for s in families["rater_input_records"].samples} >= {"cdrs", "account-commands"}
    assert any(s.labels.get("partition") == "3" for s in families["rater_restore_target_records"].samples)
    for sample in families["rater_charged_minor_units"].samples:
        assert sample.value == int(sample.value)


def test_promtool_finds_nothing_wrong_with_the_exposition(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    done = subprocess.run([promtool, "check", "metrics"], input=_exposition(), capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr).strip() == ""  # no lint finding


def test_readiness_before_the_group_gave_partitions() -> None:
    driver = Driver(Settings(), CTX)
    assert driver.readiness() == (False, {"partitions": [], "restoring": [], "reason": "joining the consumer group"})
    driver.joined = True
    assert driver.readiness()[0]
    driver.rebalancing = True
    assert driver.readiness()[1]["reason"] == "rebalancing"


# -- a real worker ------------------------------------------------------------------------


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, w) in ls for k, w in labels.items()))


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    started = fresh_worker(kafka_bootstrap, "met", tmp_path_factory.mktemp("metrics"))
    yield started
    started.stop()


def _wait_ready(worker: Worker) -> dict[str, Any]:
    async def ready() -> dict[str, Any]:
        for _ in range(600):
            worker.check_alive()
            try:
                status, body = _get(worker.url + "/readyz")
            except OSError:
                status, body = 0, "{}"
            if status == 200:
                return dict(orjson.loads(body))
            await asyncio.sleep(0.1)
        raise AssertionError(f"{worker.url}/readyz never said ready: {body}")
    return asyncio.run(ready())


@pytest.mark.kafka
def test_a_worker_serves_what_it_committed(worker: Worker) -> None:
    ready = _wait_ready(worker)
    assert ready["ready"] is True
    assert ready["restoring"] == []
    assert _get(worker.url + "/healthz") == (200, "ok\n")
    t = Tenant(worker, tenant_id("met"))
    t.open(funds="0.20", users={"alice": ("US", ["PAYG"])})  # 45 minutes at $0.01: it runs out
    t.send(t.call("a", 600), t.call("b", 900), t.call("c", 1200, start="2026-11-02T11:00:00Z"))
    t.send_raw([("cdrs", t.id.encode(), b"{broken")])
    # the balance_depleted the metrics are compared with is on notifications: waited for too
    outs = t.wait(t.all_rated("a", "b", "c"), lambda o: any(x.topic == "dead-letters" for x in o),
                  t.has("balance_depleted"))
    rated = t.events(outs, "rated_cdr")
    charged = sum(_minor(r["charge"], "USD") for r in rated)
    uncollected = sum(_minor(r["uncollected"], "USD") for r in rated)
    debited = sum(_minor(d["amount"], "USD") for r in rated for d in r["lot_debits"])
    assert charged > debited > 0  # the tenant ran out of money:
    assert uncollected > 0  # some of it was not collected

    async def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        for _ in range(300):  # the unit is in Kafka before the metrics count it: wait for them
            status, text = _get(worker.url + "/metrics")
            assert status == 200
            samples = _samples(text)
            if _total(samples, "rater_cdrs_rated_total") >= len(rated) and _total(
                    samples, "rater_dead_letters_total") >= 1:
                return samples
            await asyncio.sleep(0.1)
        raise AssertionError("the metrics never counted what the topics hold")

    samples = asyncio.run(scraped())
    assert _total(samples, "rater_cdrs_rated_total") == len(rated)  # this worker rated only this tenant's calls
    assert _total(samples, "rater_dead_letters_total", reason="invalid_json", topic="cdrs") == 1
    assert _total(samples, "rater_charged_minor_units_total", currency="USD") == charged
    assert _total(samples, "rater_uncollected_minor_units_total", currency="USD") == uncollected
    assert _total(samples, "rater_debited_minor_units_total", currency="USD") == debited
    assert _total(samples, "rater_balance_depleted_events_total") == len(t.events(outs, "balance_depleted"))
    assert _total(samples, "rater_cdr_end_to_commit_seconds_count") == len(rated)
    assert _total(samples, "rater_unit_commits_total") >= 1
    assert _total(samples, "rater_unit_failures_total") == 0
    assert _total(samples, "rater_partitions_owned") == _total(samples, "rater_partitions_ready") > 0
    assert _total(samples, "rater_ready") == 1
    lag = {dict(labels)["topic"]: value for (name, labels), value in samples.items()
           if name == "rater_consumer_lag_records"}
    assert lag.get("cdrs") == 0  # measured, and everything sent was rated
    owned = int(_total(samples, "rater_partitions_owned"))

    def partitions(metric: str) -> list[str]:
        return [dict(labels)["partition"] for (name, labels), _ in samples.items() if name == metric]

    assert len(partitions("rater_restore_seconds")) == owned  # every owned partition restored (or had nothing to)
    # ticks are off for these workers: a partition's tick age counts from when it became
    # ready, so a worker that never ticks still shows (and alerts on) an age that grows
    assert len(partitions("rater_tick_age_seconds")) == owned
    assert _total(samples, "rater_tick_age_seconds") > 0
    assert _total(samples, "process_resident_memory_bytes") > 0


@pytest.mark.kafka
def test_a_worker_whose_port_is_taken_says_so_and_stops(kafka_bootstrap: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = Worker(kafka_bootstrap, "taken.", tmp_path, extra_env={"RATER_WEB_PORT": str(port)})
        worker.start()
        worker.web_port = port
        assert worker.proc.wait(timeout=60) == 1
    errors = [line for line in worker.log.read_text().splitlines() if " ERROR " in line]
    assert len(errors) == 1, worker.log.read_text()
    assert f"cannot listen on 127.0.0.1:{port} (RATER_WEB_HOST, RATER_WEB_PORT)" in errors[0]
    assert "Traceback" not in worker.log.read_text()
