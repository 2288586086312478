"""Sizing a worker for deployment (issue 12): memory, shutdown time and restore rate.

    make sizing            # or: .venv/bin/python benchmarks/sizing.py [--tenants 200 20000]

One real ``rater worker`` process (production settings, one worker owning every partition
of the topics' declared count: the worst case for one pod) on a real broker (a fresh local
one, or ``KAFKA_BOOTSTRAP``), under the benchmark workload (:mod:`rater.workload`), for
each tenant count:

1. worker A applies every tenant's setup commands, then rates CDRs filled meanwhile; when
   half of them are committed its peak RSS is read (``VmHWM`` in ``/proc/PID/status``) and
   it gets SIGTERM: the time from the signal to its exit is the shutdown time under load;
   the CPU seconds it used over the wall time since the CDRs began are the cores it kept
   busy;
2. worker B starts on a wiped (empty) data directory, restores every partition from the
   state changelog and is timed from its start to its first ``/readyz`` 200 (the time from
   the first ``restoring`` answer to ready is the restore proper); the changelog's records
   over that time is the restore rate; its peak RSS after restore is read; then B rates the
   remaining CDRs (peak RSS under load again) and is stopped (shutdown time, now idle);
   its stores' size on disk is summed.

While a worker rates, its RSS is printed every 15 s: it grows until the RocksDB memtables
and block cache fill the budget the stores share (``RATER_STORE_CACHE_MIB``), then levels
off — the default run is long enough (1.5 M CDRs) to show the plateau, not only the start.

Prints the numbers with the machine and the date; docs/deploying.md records them. Not a
test: it takes minutes and its numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from streaming import committed  # a sibling script: run as benchmarks/sizing.py

from rater.localkafka import LocalKafka, spawn, stop_process
from rater.topics import ensure_topics, input_partitions, load_topics
from rater.workload import Workload

POLL_S = 0.05


@dataclass
class Sizing:
    """What one tenant count measured."""

    tenants: int
    users: int
    commands: int
    cdrs: int
    rss_loaded_mib: float
    """Worker A's peak RSS after its setup and half of the CDRs (under load)."""
    shutdown_loaded_s: float
    restore_records: int
    start_to_ready_s: float
    restore_s: float
    rss_restored_mib: float
    rss_after_load_mib: float
    """Worker B's peak RSS after it rated the remaining CDRs."""
    shutdown_idle_s: float
    cores_loaded: float
    """CPU cores worker A kept busy while it rated (CPU seconds / wall seconds)."""
    store_mib: float
    """Worker B's RocksDB stores on disk after it rated everything."""

    @property
    def restore_rate(self) -> float:
        return self.restore_records / self.restore_s if self.restore_s > 0 else float("nan")


def _machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, {platform.machine()}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size so far (``VmHWM``), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _du_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _readyz(port: int) -> tuple[int, dict[str, object]]:
    """(status, body) of the worker's /readyz, (0, {}) while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())
    except OSError:
        return 0, {}


async def _fill(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                max_batch_size=512 * 1024, enable_idempotence=True)
    await producer.start()
    try:
        for value in values:  # keyed by tenant: the default partitioner, as real producers do
            await producer.send(topic, value, key=orjson.loads(value)["tenant_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _end_offsets(bootstrap: str, topic: str, partitions: int) -> int:
    """Records in ``topic`` (the sum of its partitions' end offsets; transaction markers
    count too: the restore reads past them as well)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return sum(ends.values())
    finally:
        await consumer.stop()


def _rss_mib(pid: int) -> float:
    """The process's resident set size now (``VmRSS``), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def _delete_topics(bootstrap: str, prefix: str) -> None:
    """The run's own topics (a shared broker's disk is not ours to fill)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([t for t in await admin.list_topics() if t.startswith(prefix)])
    finally:
        await admin.close()


def _wait_committed(bootstrap: str, group: str, topic: str, partitions: int, count: int, *,
                    timeout_s: float = 3600, pid: int | None = None) -> None:
    """Until ``group`` committed ``count`` records of ``topic``; with ``pid``, print that
    worker's RSS every 15 s meanwhile (does it level off?)."""
    started = time.monotonic()
    shown = started
    while (done := asyncio.run(committed(bootstrap, group, topic, partitions))) < count:
        now = time.monotonic()
        if now - started > timeout_s:
            raise TimeoutError(f"{group} did not commit {count} records of {topic} in {timeout_s:.0f} s")
        if pid is not None and now - shown >= 15:
            shown = now
            print(f"    {now - started:5.0f} s: {done:>9,} committed, RSS {_rss_mib(pid):.0f} MiB", flush=True)
        time.sleep(0.2)


def _sigterm(proc: subprocess.Popen[bytes]) -> float:
    """SIGTERM the worker and wait for it: seconds from the signal to its exit."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    took = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"worker {proc.pid} exited with {code} after SIGTERM")
    return took


@dataclass
class Run:
    """One tenant count's topics (a fresh prefix), its workload's bytes and its workers'
    environment."""

    bootstrap: str
    prefix: str
    partitions: int
    setup: list[bytes]
    cdrs: list[bytes]
    workdir: Path

    @property
    def group(self) -> str:
        return f"{self.prefix}rater"

    def start_worker(self, name: str) -> tuple[subprocess.Popen[bytes], int]:
        """A worker on an empty data directory of its own; returns it and its web port."""
        port = _free_port()
        env = dict(os.environ, RATER_BOOTSTRAP=self.bootstrap, RATER_TOPIC_PREFIX=self.prefix, RATER_APP_ID=self.group,
                   RATER_LOG_LEVEL="warn", RATER_DATA_DIR=str(self.workdir / f"data-{name}"), RATER_WEB_PORT=str(port))
        return spawn([sys.executable, "-m", "rater", "worker"], log=self.workdir / f"worker-{name}.log", env=env), port

    def wait_committed(self, topic: str, count: int, pid: int | None = None) -> None:
        _wait_committed(self.bootstrap, self.group, f"{self.prefix}{topic}", self.partitions, count, pid=pid)


def _loaded_shutdown(run: Run) -> tuple[float, float, float]:
    """Worker A: setup, then CDRs; SIGTERM half-way through them. (Peak RSS MiB, seconds
    from SIGTERM to exit, CPU cores busy while rating.)"""
    asyncio.run(_fill(run.bootstrap, f"{run.prefix}account-commands", run.setup))
    worker, _port = run.start_worker("a")
    try:
        run.wait_committed("account-commands", len(run.setup))
        print(f"  worker A applied {len(run.setup):,} setup commands"
              f" (peak RSS {_peak_rss_mib(worker.pid):.0f} MiB)", flush=True)
        cpu_before, wall_before = _cpu_s(worker.pid), time.monotonic()
        asyncio.run(_fill(run.bootstrap, f"{run.prefix}cdrs", run.cdrs))
        run.wait_committed("cdrs", len(run.cdrs) // 2, worker.pid)
        cores = (_cpu_s(worker.pid) - cpu_before) / (time.monotonic() - wall_before)
        rss = _peak_rss_mib(worker.pid)
        shutdown = _sigterm(worker)
    finally:
        stop_process(worker)
    done = asyncio.run(committed(run.bootstrap, run.group, f"{run.prefix}cdrs", run.partitions))
    print(f"  worker A under load: peak RSS {rss:.0f} MiB, SIGTERM → exit {shutdown:.2f} s"
          f" ({done:,} of {len(run.cdrs):,} CDRs committed when it stopped), {cores:.2f} CPU cores busy", flush=True)
    return rss, shutdown, cores


def _until_ready(worker: subprocess.Popen[bytes], port: int, log: Path) -> tuple[float, float]:
    """(Seconds from now to the worker's first /readyz 200, seconds from its first
    ``restoring`` answer to that.)"""
    started = time.monotonic()
    restoring_at = None
    while True:
        status, body = _readyz(port)
        now = time.monotonic()
        if status == 200:
            return now - started, now - (restoring_at if restoring_at is not None else started)
        if restoring_at is None and body.get("restoring"):
            restoring_at = now
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode}: see {log}")
        if now - started > 1800:
            raise TimeoutError("the worker was not ready in 30 minutes")
        time.sleep(POLL_S)


def measure(bootstrap: str, tenants: int, users: int, cdrs_count: int, workdir: Path) -> Sizing:
    """One tenant count, on topics of their own."""
    prefix = f"sizing{int(time.time())}t{tenants}."
    asyncio.run(ensure_topics(bootstrap, prefix, report=lambda _line: None))
    workload = Workload(tenants, users, seed=1)
    run = Run(bootstrap, prefix, input_partitions(load_topics()), [orjson.dumps(e) for _, e in workload.setup()],
              [orjson.dumps(e) for e in workload.cdrs(cdrs_count)], workdir)
    try:
        rss_loaded, shutdown_loaded, cores = _loaded_shutdown(run)
        # worker B: a wiped store restores from the changelog, then rates the rest
        records = asyncio.run(_end_offsets(bootstrap, f"{prefix}rater-state", run.partitions))
        worker, port = run.start_worker("b")
        try:
            start_to_ready, restore = _until_ready(worker, port, workdir / "worker-b.log")
            rss_restored = _peak_rss_mib(worker.pid)
            print(f"  worker B restored {records:,} changelog records in {restore:.2f} s"
                  f" (start → ready {start_to_ready:.2f} s), peak RSS {rss_restored:.0f} MiB", flush=True)
            run.wait_committed("cdrs", len(run.cdrs), worker.pid)
            rss_after = _peak_rss_mib(worker.pid)
            shutdown_idle = _sigterm(worker)
        finally:
            stop_process(worker)
    finally:
        asyncio.run(_delete_topics(bootstrap, prefix))
    print(f"  worker B rated the rest: peak RSS {rss_after:.0f} MiB, SIGTERM → exit (idle) {shutdown_idle:.2f} s",
          flush=True)
    return Sizing(tenants, users, len(run.setup), len(run.cdrs), rss_loaded, shutdown_loaded, records,
                  start_to_ready, restore, rss_restored, rss_after, shutdown_idle, cores, _du_mib(workdir / "data-b"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, nargs="+", default=[200, 20_000])
    parser.add_argument("--users-per-tenant", type=int, default=3,
                        help="licensed users per tenant (a tenant's state grows with its users)")
    parser.add_argument("--cdrs", type=int, default=1_500_000,
                        help="CDRs per tenant count (enough for the RSS to level off: RocksDB memtables fill first)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # aiokafka's retries while new topics elect leaders are no news
    print(f"rater sizing — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()},"
          f" {_machine()}", flush=True)
    external = os.environ.get("KAFKA_BOOTSTRAP")
    kafka = None if external else LocalKafka().start()
    bootstrap = external or kafka.bootstrap  # type: ignore[union-attr]
    results: list[Sizing] = []
    try:
        with tempfile.TemporaryDirectory(prefix="rater-sizing-") as tmp:
            for tenants in args.tenants:
                print(f"{tenants:,} tenants, {tenants * args.users_per_tenant:,} users, {args.cdrs:,} CDRs", flush=True)
                workdir = Path(tmp) / f"t{tenants}"
                workdir.mkdir()
                results.append(measure(bootstrap, tenants, tenants * args.users_per_tenant, args.cdrs, workdir))
    finally:
        if kafka is not None:
            kafka.stop()
    print()
    print(f"{'tenants':>8} {'users':>8} {'RSS restored':>13} {'RSS load':>9} {'SIGTERM→exit load':>18}"
          f" {'idle':>6} {'changelog':>10} {'restore':>8} {'records/s':>10} {'start→ready':>12} {'CPU':>6}"
          f" {'store':>9}")
    for r in results:
        print(f"{r.tenants:>8,} {r.users:>8,} {r.rss_restored_mib:>9.0f} MiB"
              f" {max(r.rss_loaded_mib, r.rss_after_load_mib):>5.0f} MiB {r.shutdown_loaded_s:>16.2f} s"
              f" {r.shutdown_idle_s:>4.2f}s {r.restore_records:>10,} {r.restore_s:>6.2f} s {r.restore_rate:>10,.0f}"
              f" {r.start_to_ready_s:>10.2f} s {r.cores_loaded:>6.2f} {r.store_mib:>5.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
