"""Many tenants (issue 15, item 2): what a worker costs in memory, disk and start time as
the tenants grow — 1k, 10k, 100k, 1M tenants over the inputs' 8 partitions.

    .venv/bin/python benchmarks/tenants.py [--tenants 1000 10000 100000 1000000]

One real ``rater worker`` process (production settings, owning every partition) on a
fresh local broker (:class:`rater.localkafka.LocalKafka`), for each tenant count, on
topics of their own:

1. **setup** — every tenant's account commands (:meth:`rater.workload.Workload.setup`:
   the tenant, its users' licences, funds, auto-recharge) are produced in bulk (one
   record batch per partition at a time, encoded as they are made: 4 M commands never sit
   in memory at once) and worker A applies them; its RSS and the time it took;
2. **load** — worker A rates the first half of the CDRs: its peak RSS (``VmHWM``) under
   load, printed every 15 s; then SIGTERM;
3. **compaction** — the run's ``rater-state`` changelog is made to compact at once
   (``segment.bytes`` 1 MiB, ``min.cleanable.dirty.ratio`` 0.0001,
   ``min.compaction.lag.ms`` 0 on this run's topic only; the broker's cleaner looks every
   15 s): its segments' size (``.log`` files) in the broker's log directory is read
   before and after the cleaner ran — once its ``cleaner-offset-checkpoint`` says every
   partition is cleaned up to its active segment (the last ≤ 1 MiB a partition is left
   as written: the cleaner never touches the active segment);
4. **restore from the changelog alone** — worker B on a wiped data directory: start →
   ready, the restore proper (first ``restoring`` answer of ``/readyz`` → ready), RSS after
   it; SIGTERM; the RocksDB stores' size on disk;
5. **restore from the local store** — worker C on B's data directory, with CDRs waiting:
   start → ready, start → the first rated CDR committed (the group's committed offset of
   ``cdrs`` moves), then it rates the second half: RSS after restore and under load.

Every measured line prints the load (1-minute load average, the CPU busy % since the last
line): the machine is shared. The RSS per tenant is the slope between tenant counts.
Not a test: the 1M step takes tens of minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import murmur2
from sizing import (  # a sibling script: run as benchmarks/tenants.py
    Run,
    _delete_topics,
    _du_mib,
    _end_offsets,
    _machine,
    _peak_rss_mib,
    _rss_mib,
    _sigterm,
    _until_ready,
    committed,
)

from rater.localkafka import LocalKafka, stop_process
from rater.topics import ensure_topics, input_partitions, load_topics
from rater.workload import Workload

COMPACT_NOW = {
    # the declared settings first: AlterConfigs replaces a topic's whole configuration
    "cleanup.policy": "compact", "max.message.bytes": "8388608",
    "segment.bytes": str(1024 * 1024), "min.cleanable.dirty.ratio": "0.0001", "min.compaction.lag.ms": "0",
}
# (0.0001, not 0.01: at a million tenants a partition has ~140 segments, and the one the
# cleaner had not reached yet, alone, was under 1 % of them — never cleanable)
"""The run's changelog compacts as soon as the broker's cleaner looks (every 15 s)."""


class Load:
    """The machine's load for every measured line: 1-minute load average and the CPU
    busy % since the previous line (``/proc/stat``)."""

    def __init__(self) -> None:
        self.last = self._cpu()

    @staticmethod
    def _cpu() -> tuple[int, int]:
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    def __str__(self) -> str:
        busy, total = self._cpu()
        was_busy, was_total = self.last
        self.last = (busy, total)
        share = 100 * (busy - was_busy) / (total - was_total) if total > was_total else float("nan")
        return f"[load {os.getloadavg()[0]:.1f}, CPU {share:.0f} % busy]"


LOAD = Load()


def say(line: str) -> None:
    print(f"{line} {LOAD}", flush=True)


def _keyed(events: Iterable[dict[str, object]]) -> Iterator[tuple[bytes, bytes]]:
    for event in events:
        yield str(event["tenant_id"]).encode(), orjson.dumps(event)


async def _fill_bulk(bootstrap: str, topic: str, records: Iterator[tuple[bytes, bytes]], partitions: int,
                     total: int) -> None:
    """Produce (key, value) records to ``topic`` on Kafka's default partition of each key,
    a record batch per partition at a time (``send`` per record costs more than the
    worker's apply at a million tenants); progress every 10 s."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0,
                                max_batch_size=1024 * 1024, max_request_size=2 * 1024 * 1024)
    await producer.start()
    try:
        batches = [producer.create_batch() for _ in range(partitions)]
        sent: list[asyncio.Future[object]] = []
        shown = time.monotonic()
        for done, (key, value) in enumerate(records, 1):
            p = (murmur2(key) & 0x7FFFFFFF) % partitions
            if batches[p].append(key=key, value=value, timestamp=None) is None:
                sent.append(await producer.send_batch(batches[p], topic, partition=p))
                batches[p] = producer.create_batch()
                batches[p].append(key=key, value=value, timestamp=None)
                if len(sent) > 64:
                    await asyncio.gather(*sent)
                    sent = []
            if time.monotonic() - shown >= 10:
                shown = time.monotonic()
                say(f"    produced {done:,} of {total:,} to {topic.rsplit('.', 1)[-1]}")
        for p, batch in enumerate(batches):
            if batch.record_count():
                sent.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _compact_now(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=COMPACT_NOW)])
    finally:
        await admin.close()


def _topic_mib(log_dir: Path, topic: str) -> float:
    """The records of ``topic`` in the broker's log directory: its segments' ``.log``
    files (the index files are preallocated, 10 MiB each, whatever they hold)."""
    return sum(f.stat().st_size for f in log_dir.glob(f"{topic}-*/*.log")) / 2**20


def _cleaned_to(log_dir: Path, topic: str) -> dict[int, int]:
    """Per partition of ``topic``, the offset the broker's log cleaner has cleaned it to
    (``cleaner-offset-checkpoint`` in its log directory: version, count, then ``topic
    partition offset`` lines)."""
    path = log_dir / "cleaner-offset-checkpoint"
    lines = path.read_text().splitlines()[2:] if path.exists() else []
    return {int(p): int(o) for t, p, o in (line.split() for line in lines) if t == topic}


def _active_base(log_dir: Path, topic: str) -> dict[int, int]:
    """Per partition of ``topic``, the base offset of its active segment (the cleaner
    compacts the segments before it; the active one stays as written)."""
    return {int(d.name.rsplit("-", 1)[1]): max(int(f.stem) for f in d.glob("*.log"))
            for d in log_dir.glob(f"{topic}-*")}


def _compacted(log_dir: Path, topic: str, *, timeout_s: float = 900) -> tuple[float, float, float]:
    """(MiB before, MiB after, seconds waited) of ``topic``'s segments in the broker's log
    directory: after, once the cleaner has cleaned every partition up to its active
    segment (its checkpoint reaches the active segment's base offset)."""
    before = _topic_mib(log_dir, topic)
    started = shown = time.monotonic()
    while True:
        cleaned, active = _cleaned_to(log_dir, topic), _active_base(log_dir, topic)
        behind = [p for p, base in active.items() if base > 0 and cleaned.get(p, 0) < base]
        if not behind or time.monotonic() - started > timeout_s:
            break
        if time.monotonic() - shown >= 15:
            shown = time.monotonic()
            say(f"    waiting for the log cleaner: partitions {behind} not yet cleaned")
        time.sleep(1)
    waited = time.monotonic() - started
    if behind:
        say(f"    the cleaner did not reach partitions {behind} in {timeout_s:.0f} s")
    return before, _topic_mib(log_dir, topic), waited


def _wait_committed(run: Run, topic: str, count: int, pid: int, what: str, *, timeout_s: float = 7200) -> float:
    """Until the group committed ``count`` records of ``topic``; progress and RSS every 15 s.
    Returns the seconds it took."""
    started = shown = time.monotonic()
    full = f"{run.prefix}{topic}"
    while (done := asyncio.run(committed(run.bootstrap, run.group, full, run.partitions))) < count:
        now = time.monotonic()
        if now - started > timeout_s:
            raise TimeoutError(f"{what}: {done:,} of {count:,} in {timeout_s:.0f} s")
        if now - shown >= 15:
            shown = now
            say(f"    {now - started:5.0f} s: {what} {done:>10,} of {count:,}, RSS {_rss_mib(pid):.0f} MiB")
        time.sleep(0.2)
    return time.monotonic() - started


def _first_rated(run: Run, before: int, *, started: float, worker_pid: int, timeout_s: float = 3600) -> float:
    """Seconds from ``started`` until the group committed a ``cdrs`` record past ``before``."""
    full = f"{run.prefix}cdrs"
    while asyncio.run(committed(run.bootstrap, run.group, full, run.partitions)) <= before:
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"no CDR rated in {timeout_s:.0f} s")
        if not Path(f"/proc/{worker_pid}").exists():
            raise RuntimeError("the worker exited before it rated a CDR")
        time.sleep(0.05)
    return time.monotonic() - started


@dataclass
class Tenants:
    """What one tenant count measured."""

    tenants: int
    commands: int
    cdrs: int
    setup_s: float
    rss_setup_mib: float
    rss_load_a_mib: float
    changelog_records: int
    changelog_mib: float
    compacted_mib: float
    restore_changelog_s: float
    ready_changelog_s: float
    rss_restored_mib: float
    store_mib: float
    ready_local_s: float
    first_rated_s: float
    rss_local_mib: float
    rss_load_c_mib: float


def _worker_a(run: Run, setup: Iterator[tuple[bytes, bytes]], commands: int, half: int) -> tuple[float, float, float]:
    """Setup, then the first half of the CDRs: (setup seconds, RSS after setup, peak RSS under load)."""
    started = time.monotonic()
    asyncio.run(_fill_bulk(run.bootstrap, f"{run.prefix}account-commands", setup, run.partitions, commands))
    say(f"  produced {commands:,} setup commands in {time.monotonic() - started:.1f} s")
    worker, _port = run.start_worker("a")
    try:
        setup_s = _wait_committed(run, "account-commands", commands, worker.pid, "setup commands applied")
        rss_setup = _rss_mib(worker.pid)
        say(f"  worker A applied {commands:,} setup commands in {setup_s:.1f} s (from its start,"
            f" {commands / setup_s:,.0f}/s): RSS {rss_setup:.0f} MiB (peak {_peak_rss_mib(worker.pid):.0f})")
        asyncio.run(_fill_bulk(run.bootstrap, f"{run.prefix}cdrs", _keyed_raw(run.cdrs[:half]), run.partitions, half))
        took = _wait_committed(run, "cdrs", half, worker.pid, "CDRs rated")
        rss_load = _peak_rss_mib(worker.pid)
        say(f"  worker A rated {half:,} CDRs in {took:.1f} s: peak RSS {rss_load:.0f} MiB,"
            f" RSS now {_rss_mib(worker.pid):.0f} MiB; SIGTERM → exit {_sigterm(worker):.2f} s")
    finally:
        stop_process(worker)
    return setup_s, rss_setup, rss_load


def _worker_b(run: Run) -> tuple[float, float, float, float]:
    """A wiped store restores from the changelog: (restore s, start → ready s, RSS, RocksDB MiB)."""
    worker, port = run.start_worker("b")
    try:
        ready, restore = _until_ready(worker, port, run.workdir / "worker-b.log")
        rss = _rss_mib(worker.pid)
        say(f"  worker B (wiped store) restored in {restore:.2f} s, start → ready {ready:.2f} s:"
            f" RSS {rss:.0f} MiB (peak {_peak_rss_mib(worker.pid):.0f})")
        _sigterm(worker)
    finally:
        stop_process(worker)
    store = _du_mib(run.workdir / "data-b")
    say(f"  RocksDB stores on disk: {store:.1f} MiB")
    return restore, ready, rss, store


def _worker_c(run: Run, half: int) -> tuple[float, float, float, float]:
    """B's store, the second half of the CDRs waiting: (start → ready s, start → first
    rated CDR s, RSS then, peak RSS under load)."""
    rest = len(run.cdrs) - half
    asyncio.run(_fill_bulk(run.bootstrap, f"{run.prefix}cdrs", _keyed_raw(run.cdrs[half:]), run.partitions, rest))
    started = time.monotonic()
    worker, port = run.start_worker("b")
    try:
        ready, _restore = _until_ready(worker, port, run.workdir / "worker-b.log")
        first = _first_rated(run, half, started=started, worker_pid=worker.pid)
        rss = _rss_mib(worker.pid)
        say(f"  worker C (local store): start → ready {ready:.2f} s, start → first rated CDR {first:.2f} s,"
            f" RSS {rss:.0f} MiB")
        took = _wait_committed(run, "cdrs", len(run.cdrs), worker.pid, "CDRs rated")
        rss_load = _peak_rss_mib(worker.pid)
        say(f"  worker C rated {rest:,} CDRs in {took:.1f} s: peak RSS {rss_load:.0f} MiB,"
            f" RSS now {_rss_mib(worker.pid):.0f} MiB; SIGTERM → exit {_sigterm(worker):.2f} s")
    finally:
        stop_process(worker)
    return ready, first, rss, rss_load


def measure(kafka: LocalKafka, tenants: int, users: int, cdrs_count: int, workdir: Path) -> Tenants:
    """One tenant count, on topics of their own."""
    bootstrap = kafka.bootstrap
    prefix = f"tenants{int(time.time())}t{tenants}."
    asyncio.run(ensure_topics(bootstrap, prefix, report=lambda _line: None))
    state_topic = f"{prefix}rater-state"
    asyncio.run(_compact_now(bootstrap, state_topic))
    partitions = input_partitions(load_topics())
    made = time.monotonic()
    workload = Workload(tenants, users, seed=1)
    commands = tenants * 3 + users
    run = Run(bootstrap, prefix, partitions, [], [orjson.dumps(e) for e in workload.cdrs(cdrs_count)], workdir)
    say(f"  workload drawn in {time.monotonic() - made:.1f} s: {commands:,} setup commands, {cdrs_count:,} CDRs")
    half = cdrs_count // 2
    try:
        setup_s, rss_setup, rss_load_a = _worker_a(run, _keyed(e for _, e in workload.setup()), commands, half)
        del workload
        records = asyncio.run(_end_offsets(bootstrap, state_topic, partitions))
        before, after, waited = _compacted(kafka.members[0].workdir / "data", state_topic)
        say(f"  changelog: {records:,} offsets, {before:.1f} MiB of segments, {after:.1f} MiB after compaction"
            f" (the cleaner reached every partition's active segment {waited:.0f} s after worker A stopped)")
        restore_b, ready_b, rss_restored, store = _worker_b(run)
        ready_c, first, rss_local, rss_load_c = _worker_c(run, half)
    finally:
        asyncio.run(_delete_topics(bootstrap, prefix))
    return Tenants(tenants, commands, cdrs_count, setup_s, rss_setup, rss_load_a, records, before, after, restore_b,
                   ready_b, rss_restored, store, ready_c, first, rss_local, rss_load_c)


def _keyed_raw(values: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
    for value in values:
        yield orjson.loads(value)["tenant_id"].encode(), value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--users-per-tenant", type=int, default=1,
                        help="licensed users per tenant (1: the setup is 4 commands a tenant)")
    parser.add_argument("--cdrs", type=int, default=200_000, help="CDRs per tenant count (half per worker)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # aiokafka's retries while new topics elect leaders are no news
    say(f"rater tenants — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, {_machine()},"
        f" {sys.argv[1:] or 'defaults'}")
    kafka = LocalKafka().start()
    results: list[Tenants] = []
    try:
        with tempfile.TemporaryDirectory(prefix="rater-tenants-") as tmp:
            for tenants in args.tenants:
                say(f"{tenants:,} tenants, {tenants * args.users_per_tenant:,} users, {args.cdrs:,} CDRs")
                workdir = Path(tmp) / f"t{tenants}"
                workdir.mkdir()
                try:
                    results.append(measure(kafka, tenants, tenants * args.users_per_tenant, args.cdrs, workdir))
                except Exception:
                    for log in sorted(workdir.glob("worker-*.log")):  # the directory goes with the run
                        print(f"--- the last lines of {log.name}:", *log.read_text().splitlines()[-30:], sep="\n")
                    raise
    finally:
        kafka.stop()
    print()
    print("| tenants | setup commands | applied in | RSS after setup | peak RSS, load (A) | changelog offsets"
          " | changelog on disk | compacted | restore, changelog | start → ready | RSS restored | RocksDB"
          " | start → ready, local | start → first rated | RSS, local | peak RSS, load (C) |")
    print("|---" * 16 + "|")
    for r in results:
        print(f"| {r.tenants:,} | {r.commands:,} | {r.setup_s:.0f} s | {r.rss_setup_mib:.0f} MiB"
              f" | {r.rss_load_a_mib:.0f} MiB | {r.changelog_records:,} | {r.changelog_mib:.1f} MiB"
              f" | {r.compacted_mib:.1f} MiB | {r.restore_changelog_s:.2f} s | {r.ready_changelog_s:.2f} s"
              f" | {r.rss_restored_mib:.0f} MiB | {r.store_mib:.1f} MiB | {r.ready_local_s:.2f} s"
              f" | {r.first_rated_s:.2f} s | {r.rss_local_mib:.0f} MiB | {r.rss_load_c_mib:.0f} MiB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
