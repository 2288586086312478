"""Streaming throughput: the rater worker against a bare aiokafka pass-through (issue 4).

    make bench-stream      # or: .venv/bin/python benchmarks/streaming.py [--cdrs N]

One run, one broker (a fresh local one, or ``KAFKA_BOOTSTRAP``), the same CDR bytes on
the same number of partitions:

* ``pass-through`` — an aiokafka consumer group reads ``cdrs`` and produces every value
  unchanged to an output topic, committing offsets per batch (no transactions): the
  ceiling the rater is measured against, run before and after the rater runs of a
  round (a new group each time), their mean the round's baseline;
* ``rater`` — a real ``rater worker`` process with its production settings (one
  transaction per batch unit, state changelog, RocksDB, ticks, metrics) rates the same
  CDRs for tenants whose accounts were set up first;
* ``rater, no metrics`` — the same with ``RATER_METRICS=off`` (issue 12: the metrics may
  cost at most 5 %), run right before or after the one with metrics (alternating by
  round, so the VM's drift and whatever favours the second run weigh on both: an even
  number of rounds, 4 by default), their ratio printed per round.

Both read topics that were filled before they start; each is timed from its first
committed record to its last, so start-up and group joins are not counted. Prints
CDRs/s and the ratio (target: the rater at ≥ 50 % of the pass-through), for several
rounds and their median: the speed of a shared VM drifts, so each ratio compares runs
made within a minute of each other.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError
from aiokafka.partitioner import murmur2

from rater.localkafka import LocalKafka, spawn, stop_process
from rater.topics import ensure_topics
from rater.workload import Workload

PARTITIONS = 4


def _partition(tenant_id: str) -> int:
    return (murmur2(tenant_id.encode()) & 0x7FFFFFFF) % PARTITIONS


async def _fill(bootstrap: str, topic: str, values: list[tuple[bytes, int]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                max_batch_size=512 * 1024, enable_idempotence=True)
    await producer.start()
    try:
        for value, p in values:
            await producer.send(topic, value, key=orjson.loads(value)["tenant_id"].encode(), partition=p)
        await producer.flush()
    finally:
        await producer.stop()


async def committed(bootstrap: str, group: str, topic: str, partitions: int = PARTITIONS) -> int:
    """Records of ``topic`` the consumer ``group`` committed (the sum over its partitions;
    0 before the group has a coordinator). ``benchmarks/sizing.py`` counts with it too."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
        return sum(max(m.offset, 0) for m in offsets.values())
    except GroupCoordinatorNotAvailableError:
        return 0
    finally:
        await admin.close()


async def _timed(bootstrap: str, group: str, topic: str, total: int) -> float:
    """Seconds from the group's first committed record of ``topic`` to its last; the
    rate is over the records committed in between."""
    first_at, first = 0.0, 0
    while True:
        done = await committed(bootstrap, group, topic)
        now = time.monotonic()
        if done and not first_at:
            first_at, first = now, done
        if done >= total:
            return (total - first) / (now - first_at) if now > first_at else float("nan")
        await asyncio.sleep(0.05)


async def _pass_through(bootstrap: str, prefix: str, total: int, run: str) -> float:
    group = f"{prefix}pass{run}"  # a group of its own: each run reads the topic from the start

    async def run() -> None:
        consumer = AIOKafkaConsumer(f"{prefix}cdrs", bootstrap_servers=bootstrap, group_id=group,
                                    enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=2000)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                    max_batch_size=256 * 1024, enable_idempotence=True)
        await consumer.start()
        await producer.start()
        try:
            seen = 0
            while seen < total:
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
                for tp, messages in batch.items():
                    for m in messages:
                        await producer.send(f"{prefix}rated-cdrs", m.value, key=m.key, partition=tp.partition)
                    seen += len(messages)
                await producer.flush()
                await consumer.commit()
        finally:
            await producer.stop()
            await consumer.stop()

    worker = asyncio.create_task(run())
    rate = await _timed(bootstrap, group, f"{prefix}cdrs", total)
    await worker
    return rate


def _rater(bootstrap: str, prefix: str, setup: list[tuple[bytes, int]], cdrs: list[tuple[bytes, int]],
           workdir: Path, *, workers: int, metrics: bool = True) -> float:
    """Accounts first (a worker applies them and stops), then the CDRs are filled and
    ``workers`` worker processes started together on them are timed."""
    env = dict(os.environ, RATER_BOOTSTRAP=bootstrap, RATER_TOPIC_PREFIX=prefix, RATER_APP_ID=f"{prefix}rater",
               RATER_SESSION_TIMEOUT="6", RATER_LOG_LEVEL="warn", RATER_METRICS="on" if metrics else "off",
               RATER_WEB_PORT="0")
    command = [sys.executable, "-m", "rater", "worker"]
    workdir.mkdir(parents=True, exist_ok=True)
    asyncio.run(_fill(bootstrap, f"{prefix}account-commands", setup))
    proc = spawn(command, log=workdir / "worker.log", env={**env, "RATER_DATA_DIR": str(workdir / "data0")})
    try:
        asyncio.run(_timed(bootstrap, f"{prefix}rater", f"{prefix}account-commands", len(setup)))
    finally:
        stop_process(proc)
    asyncio.run(_fill(bootstrap, f"{prefix}cdrs", cdrs))
    procs = [spawn(command, log=workdir / f"worker{n}.log", env={**env, "RATER_DATA_DIR": str(workdir / f"data{n}")})
             for n in range(workers)]
    try:
        return asyncio.run(_timed(bootstrap, f"{prefix}rater", f"{prefix}cdrs", len(cdrs)))
    finally:
        for proc in procs:
            stop_process(proc)


def _with_and_without_metrics(bootstrap: str, stem: str, accounts: list[tuple[bytes, int]],
                              cdrs: list[tuple[bytes, int]], tmp: Path, *, workers: int,
                              round_: int) -> dict[bool, float]:
    """The rater's rate with metrics (True) and without (False), one right after the
    other, in an order that alternates by round."""
    measured: dict[bool, float] = {}
    for metrics in (True, False) if round_ % 2 else (False, True):
        prefix = f"{stem}{'m' if metrics else 'n'}."
        asyncio.run(ensure_topics(bootstrap, prefix, partitions=PARTITIONS, report=lambda _line: None))
        measured[metrics] = _rater(bootstrap, prefix, accounts, cdrs, tmp / prefix, workers=workers, metrics=metrics)
        label = f"rater, {workers} worker{'s' if workers > 1 else ''}{'' if metrics else ', no metrics'}"
        print(f"round {round_}  {label:<32}"
              f"{measured[metrics]:>10,.0f} CDRs/s", flush=True)
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cdrs", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker processes of each rater run (docker-compose.yml runs two)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="rounds of a pass-through, the rater runs and a pass-through again; the ratio is each"
                             " round's (against the mean pass-through), and their median (a shared VM's speed"
                             " drifts by a third within minutes)")
    args = parser.parse_args()
    print(f"rater streaming benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()},"
          f" {platform.machine()}, {os.cpu_count()} CPUs, {PARTITIONS} partitions, {args.cdrs} CDRs,"
          f" {args.rounds} rounds", flush=True)
    workload = Workload(args.tenants, args.users, seed=1)
    setup = [(topic, orjson.dumps(e)) for topic, e in workload.setup()]
    cdrs = [orjson.dumps(e) for e in workload.cdrs(args.cdrs)]
    external = os.environ.get("KAFKA_BOOTSTRAP")
    kafka = None if external else LocalKafka().start()
    bootstrap = external or kafka.bootstrap  # type: ignore[union-attr]
    ratios: dict[int, list[float]] = {workers: [] for workers in args.workers}
    costs: dict[int, list[float]] = {workers: [] for workers in args.workers}
    """Per worker count, per round: the rater with metrics / the rater without."""
    quiet = lambda _line: None  # noqa: E731
    placed = [(v, _partition(orjson.loads(v)["tenant_id"])) for v in cdrs]
    accounts = [(v, _partition(orjson.loads(v)["tenant_id"])) for _, v in setup]
    try:
        with tempfile.TemporaryDirectory(prefix="rater-bench-") as tmp:
            for round_ in range(1, args.rounds + 1):
                stamp = f"{int(time.time())}n{round_}"
                pt = f"bench{stamp}pt."
                asyncio.run(ensure_topics(bootstrap, pt, partitions=PARTITIONS, report=quiet))
                asyncio.run(_fill(bootstrap, f"{pt}cdrs", placed))
                # the pass-through before and after the rater runs, their mean the baseline:
                # the VM's drift during a round counts on both sides
                before = asyncio.run(_pass_through(bootstrap, pt, len(cdrs), "a"))
                print(f"round {round_}  pass-through          {before:>10,.0f} CDRs/s", flush=True)
                raters: dict[int, float] = {}
                for workers in args.workers:
                    measured = _with_and_without_metrics(bootstrap, f"bench{stamp}r{workers}", accounts, placed,
                                                         Path(tmp), workers=workers, round_=round_)
                    raters[workers] = measured[True]
                    costs[workers].append(measured[True] / measured[False])
                    print(f"round {round_}  rater, {workers} worker{'s' if workers > 1 else ' '}: with metrics"
                          f" {measured[True] / measured[False]:.3f} × without", flush=True)
                after = asyncio.run(_pass_through(bootstrap, pt, len(cdrs), "b"))
                passthrough = (before + after) / 2
                print(f"round {round_}  pass-through again    {after:>10,.0f} CDRs/s   (mean {passthrough:,.0f})",
                      flush=True)
                for workers, rater in raters.items():
                    ratios[workers].append(rater / passthrough)
                    print(f"round {round_}  rater, {workers} worker{'s' if workers > 1 else ' '}:"
                          f" {rater / passthrough:.3f} × the mean pass-through", flush=True)
    finally:
        if kafka is not None:
            kafka.stop()
    for workers, found in ratios.items():
        shown = ", ".join(f"{r:.3f}" for r in found)
        print(f"rater, {workers} worker{'s' if workers > 1 else ' '}: median {statistics.median(found):.3f} ×"
              f" pass-through (rounds: {shown}; target ≥ 0.5)")
        cost = ", ".join(f"{r:.3f}" for r in costs[workers])
        print(f"rater, {workers} worker{'s' if workers > 1 else ' '}: with metrics median"
              f" {statistics.median(costs[workers]):.3f} × without (rounds: {cost}; target ≥ 0.95)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
