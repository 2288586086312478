"""Money exactly once through SIGKILL (issue 4): real broker, real worker processes.

20,000 CDRs for 200 tenants stream in while the worker is killed with SIGKILL five
times — at points chosen by a seeded random generator (three seeds), measured in
committed CDR offsets — and restarted, with its RocksDB folder wiped after every other kill (the
state then comes from the changelog alone). Afterwards the outputs a read_committed
consumer sees must equal, byte for byte, what an independent run of the same input
through the partition tasks produces in one process: every rated CDR exactly once, and
every tenant's final state (balance, lots, pools, ledger totals) identical.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import GroupCoordinatorNotAvailableError

from rater.localkafka import LocalKafka
from rater.shell.driver import STATE_TOPIC
from rater.shell.task import PARTITION_KEY
from rater.workload import Workload

from .reconcile import committed_and_end, partition_of, produce_values, read_all, reconcile
from .support import OUTPUT_TOPICS as OUTPUTS
from .support import TEST_PARTITIONS, Worker, cdr, create_topics, event

pytestmark = pytest.mark.kafka

TENANTS, USERS, CDRS, KILLS = 200, 2_000, 20_000, 5


def _partition(tenant_id: str) -> int:
    return partition_of(tenant_id, TEST_PARTITIONS)


class _Run:
    """One scenario: topics, the seeded input, the worker processes, the final check."""

    def __init__(self, bootstrap: str, prefix: str, tmp_path: Path, seed: int) -> None:
        self.bootstrap, self.prefix, self.tmp_path, self.seed = bootstrap, prefix, tmp_path, seed
        create_topics(bootstrap, prefix)
        workload = Workload(TENANTS, USERS, seed=seed)
        self.setup = [(topic, orjson.dumps(e), _partition(e["tenant_id"])) for topic, e in workload.setup()]
        self.cdrs = [("cdrs", orjson.dumps(e), _partition(e["tenant_id"])) for e in workload.cdrs(CDRS)]
        self.workers: dict[str, Worker] = {}
        self.sent_ms = time.time_ns() // 1_000_000
        """Every input record's Kafka timestamp: the independent run sees the same ones (a
        command's occurred_at counts at most a day past it while there is no tick)."""

    def start(self, name: str) -> Worker:
        self.workers[name] = Worker(self.bootstrap, self.prefix, self.tmp_path / name).start()
        return self.workers[name]

    def applied(self, topic: str) -> tuple[int, int]:
        try:
            return asyncio.run(committed_and_end(self.bootstrap, f"{self.prefix}rater", self.prefix + topic,
                                                 TEST_PARTITIONS))
        except GroupCoordinatorNotAvailableError:
            return -1, 0  # the group has not committed anything yet

    def all_applied(self, topic: str, total: int | None = None) -> bool:
        done, end = self.applied(topic)
        return done == end and (total is None or end == total)

    supervise = False
    """Restart a worker that stopped by itself (as Kubernetes would) instead of failing."""
    restarts = 0

    def wait(self, until: Any, timeout_s: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not until():
            for name, worker in list(self.workers.items()):
                if self.supervise and worker.proc.poll() is not None:
                    self.restarts += 1
                    self.start(name)
                    continue
                worker.check_alive()
            assert time.monotonic() < deadline, "the workers did not catch up"
            time.sleep(0.2)

    def run(self, points: int, disrupt: Any) -> None:
        """Apply the setup, stream the CDRs, and call ``disrupt(n)`` when the committed
        CDR offsets pass each of ``points`` seeded random points."""
        asyncio.run(produce_values(self.bootstrap, self.prefix, self.setup, self.sent_ms))
        self.wait(lambda: self.all_applied("account-commands"))
        feeding = threading.Thread(target=lambda: asyncio.run(
            produce_values(self.bootstrap, self.prefix, self.cdrs, self.sent_ms)))
        feeding.start()
        marks = sorted(random.Random(self.seed).sample(range(CDRS // 20, CDRS - CDRS // 20), points))
        try:
            for n, mark in enumerate(marks):
                self.wait(lambda mark=mark: self.applied("cdrs")[0] >= mark)
                disrupt(n)
            feeding.join(timeout=300)
            assert not feeding.is_alive()
            self.wait(lambda: self.all_applied("cdrs", CDRS))
        finally:
            for worker in self.workers.values():
                worker.stop()
            feeding.join(timeout=60)

    def check(self) -> None:
        """What read_committed consumers saw equals an independent in-process run
        (tests/reconcile.py): every rated CDR exactly once, every tenant's final state."""
        found = asyncio.run(reconcile(self.bootstrap, self.prefix, TEST_PARTITIONS))
        assert found.inputs["cdrs"] == CDRS
        assert found.problems == []


@pytest.mark.parametrize("seed", [20261123, 7, 1999])
def test_sigkill_crashes_never_charge_twice_nor_lose_a_cdr(kafka_bootstrap: str, tmp_path: Path,
                                                           topic_prefix: str, seed: int) -> None:
    run = _Run(kafka_bootstrap, topic_prefix, tmp_path, seed)
    run.start("w")

    def kill(n: int) -> None:
        worker = run.workers["w"]
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(timeout=30)
        if n % 2 == 1:
            shutil.rmtree(worker.workdir / "data", ignore_errors=True)  # restore from the changelog alone
        run.start("w")

    run.run(KILLS, kill)
    run.check()


def test_a_second_worker_joining_and_leaving_mid_stream_changes_no_money(kafka_bootstrap: str, tmp_path: Path,
                                                                         topic_prefix: str) -> None:
    """Rebalances: partitions move to a second worker (its own, empty RocksDB folder) and
    back, once with a clean stop and once with SIGKILL."""
    run = _Run(kafka_bootstrap, topic_prefix, tmp_path, seed=4242)
    run.start("a")

    def churn(n: int) -> None:
        if n in (0, 2):
            run.start("b")
            run.wait(lambda: "partition" in run.workers["b"].log.read_text(errors="replace"))  # got a share
        elif n == 1:
            run.workers.pop("b").stop()  # SIGTERM: a clean leave (its stale folder is reused at n == 2)
        else:
            os.kill(run.workers["b"].proc.pid, signal.SIGKILL)
            run.workers["b"].proc.wait(timeout=30)
            run.workers.pop("b")

    run.run(4, churn)
    run.check()


def test_a_broker_restart_mid_stream_changes_no_money(tmp_path: Path) -> None:
    """The broker is stopped (SIGTERM) and started again while CDRs stream in. A worker
    whose sends or commits fail stops itself; like a supervisor, the test restarts it.
    Uses a broker of its own (a shared or external one cannot be restarted)."""
    with LocalKafka() as kafka:
        run = _Run(kafka.bootstrap, "restart.", tmp_path, seed=31337)
        run.supervise = True
        run.start("w")
        node = kafka.members[0]

        def restart_broker(_n: int) -> None:
            kafka.stop_node(node)
            kafka.start_node(node)

        run.run(2, restart_broker)
        run.check()


def test_sigterm_under_load_stops_cleanly_and_soon_and_changes_no_money(kafka_bootstrap: str, tmp_path: Path,
                                                                        topic_prefix: str) -> None:
    """SIGTERM while a backlog streams in: the worker finishes the unit in flight, leaves
    the group and exits 0 within seconds (a busy worker must not ignore the signal, as
    the Faust probe's did for minutes); restarted, it goes on where the last unit ended."""
    run = _Run(kafka_bootstrap, topic_prefix, tmp_path, seed=555)
    run.start("w")
    stops: list[float] = []

    def terminate(_n: int) -> None:
        worker = run.workers["w"]
        began = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        code = worker.proc.wait(timeout=30)
        stops.append(time.monotonic() - began)
        assert code == 0, worker.log.read_text(errors="replace")[-3000:]
        seen = worker.log.stat().st_size  # the log is appended to by each worker of the folder
        fresh = run.start("w")
        # the next SIGTERM goes to a worker at work (one still importing dies of it, harmlessly)
        run.wait(lambda: b"caught up" in fresh.log.read_bytes()[seen:])

    run.run(3, terminate)
    run.check()
    assert len(stops) == 3
    assert max(stops) < 10, f"SIGTERM took {max(stops):.1f} s"


async def _set_topic_config(bootstrap: str, topic: str, config: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=config)])
    finally:
        await admin.close()


def test_a_unit_with_a_refused_batch_commits_nothing_and_the_worker_stops(kafka_bootstrap: str, tmp_path: Path,
                                                                          topic_prefix: str) -> None:
    """The broker refuses one batch of a unit (here: rated CDRs over the topic's size
    limit). aiokafka would still commit the rest; the worker must not: no output, no
    state, no offset of the unit may become visible, and the worker exits non-zero. Once
    the topic takes the records again, a restarted worker rates the CDR exactly once."""
    prefix = topic_prefix
    create_topics(kafka_bootstrap, prefix)
    tenant = "refused-1"
    setup = [
        event("tenant_upserted", tenant, "e1", command_id="c1", country="US", currency="USD",
              billing_model="prepaid_credits"),
        event("licenses_assigned", tenant, "e2", command_id="c2", user_id="alice", usage_location="US",
              capabilities=["PAYG"]),
        event("funds_added", tenant, "e3", command_id="c3", amount="5.00", currency="USD",
              purchased_at="2026-11-01T00:00:00Z"),
    ]
    p = _partition(tenant)
    run = _Run.__new__(_Run)  # only its offset helpers
    run.bootstrap, run.prefix = kafka_bootstrap, prefix
    worker = Worker(kafka_bootstrap, prefix, tmp_path / "w").start()
    asyncio.run(produce_values(kafka_bootstrap, prefix, [("account-commands", orjson.dumps(e), p) for e in setup]))
    deadline = time.monotonic() + 90
    while not run.all_applied("account-commands", 3):
        worker.check_alive()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    before = asyncio.run(read_all(kafka_bootstrap, [f"{prefix}{t}" for t in (*OUTPUTS, STATE_TOPIC)], TEST_PARTITIONS))
    asyncio.run(_set_topic_config(kafka_bootstrap, f"{prefix}rated-cdrs", {"max.message.bytes": "300"}))
    asyncio.run(produce_values(kafka_bootstrap, prefix, [("cdrs", orjson.dumps(cdr(tenant, "call-1", 90)), p)]))
    assert worker.proc.wait(timeout=60) != 0, "the worker went on after a refused batch"
    after = asyncio.run(read_all(kafka_bootstrap, [f"{prefix}{t}" for t in (*OUTPUTS, STATE_TOPIC)], TEST_PARTITIONS))
    assert sorted((r.topic, r.key, r.value) for r in after) == sorted((r.topic, r.key, r.value) for r in before)
    assert run.applied("cdrs")[0] <= 0  # no offset committed for the CDR

    asyncio.run(_set_topic_config(kafka_bootstrap, f"{prefix}rated-cdrs", {"max.message.bytes": "1048588"}))
    worker = Worker(kafka_bootstrap, prefix, tmp_path / "w").start()
    deadline = time.monotonic() + 90
    while not run.all_applied("cdrs", 1):
        worker.check_alive()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    worker.stop()
    final = asyncio.run(read_all(kafka_bootstrap, [f"{prefix}rated-cdrs"], TEST_PARTITIONS))
    assert [orjson.loads(r.value)["status"] for r in final] == ["rated"]


def test_a_partition_that_cannot_be_made_ready_stops_the_worker_instead_of_stalling(
        kafka_bootstrap: str, tmp_path: Path, topic_prefix: str) -> None:
    """A partition record this version cannot read (a newer worker wrote it): the worker
    must not go on without that partition (aiokafka swallows errors of rebalance
    callbacks); it exits non-zero and says why."""
    create_topics(kafka_bootstrap, topic_prefix)

    async def newer_record() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(f"{topic_prefix}{STATE_TOPIC}", b'{"v": 99}', key=PARTITION_KEY, partition=2)
        finally:
            await producer.stop()

    asyncio.run(newer_record())
    worker = Worker(kafka_bootstrap, topic_prefix, tmp_path / "w").start()
    assert worker.proc.wait(timeout=60) != 0
    assert "partition record version 99" in worker.log.read_text(errors="replace")


def test_a_big_changelog_restores_on_a_new_machine_beside_the_heartbeats_and_the_partition_then_rates(
        kafka_bootstrap: str, tmp_path: Path, topic_prefix: str) -> None:
    """A new machine (no RocksDB folder) takes a partition whose changelog holds
    1,000,000 id records: the store catches up in a task beside the group's heartbeats
    (aiokafka stops them while a rebalance callback runs), the worker joins the group
    once, and the partition's CDRs are rated once it is ready."""
    create_topics(kafka_bootstrap, topic_prefix)
    tenant = next(t for t in (f"big-{n}" for n in range(100)) if _partition(t) == 0)

    async def big_changelog() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks=1, linger_ms=20,
                                    max_batch_size=512 * 1024)
        await producer.start()
        try:
            topic = f"{topic_prefix}{STATE_TOPIC}"
            for n in range(1_000_000):
                await producer.send(topic, b"fingerprint-000000000000", key=b"!old/u/2026-10/call-%d" % n, partition=0)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(big_changelog())
    worker = Worker(kafka_bootstrap, topic_prefix, tmp_path / "w").start()
    setup = [
        event("tenant_upserted", tenant, "e1", command_id="c1", country="US", currency="USD",
              billing_model="prepaid_credits"),
        event("licenses_assigned", tenant, "e2", command_id="c2", user_id="alice", usage_location="US",
              capabilities=["PAYG"]),
        event("funds_added", tenant, "e3", command_id="c3", amount="5.00", currency="USD",
              purchased_at="2026-11-01T00:00:00Z"),
    ]
    asyncio.run(produce_values(kafka_bootstrap, topic_prefix, [
        *(("account-commands", orjson.dumps(e), 0) for e in setup), ("cdrs", orjson.dumps(cdr(tenant, "c-1", 90)), 0)]))
    run = _Run.__new__(_Run)  # only its offset helpers
    run.bootstrap, run.prefix = kafka_bootstrap, topic_prefix
    deadline = time.monotonic() + 180
    while not run.all_applied("cdrs", 1):
        worker.check_alive()
        assert time.monotonic() < deadline, "the CDR was not rated"
        time.sleep(0.2)
    worker.stop()
    log = worker.log.read_text(errors="replace")
    assert "partition 0: 1000000 changelog records caught up" in log
    assert log.count("Joined group") == 1, "the worker lost its place in the group during the restore"
