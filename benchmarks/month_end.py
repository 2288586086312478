"""What the tick past a deadline every tenant of a partition shares costs one batch (issue
15, "Many tenants"): one ``PartitionTask`` on an in-memory store, in one process, no Kafka.

    .venv/bin/python benchmarks/month_end.py [--tenants 1000 10000 50000] [--trace]

Each count of tenants runs in a process of its own. The benchmark workload (1 user a
tenant; ``rater.workload``) is set up with its funds bought 2025-12-01T00:00Z, so every
tenant's lot expires 12 months later, at the November 2026 month end — the month close
alone is no deadline of the task's heap (a tenant closes its month with its next input),
a lot's expiry, a pending recharge's timeout or a back-off is; 2 CDRs a tenant are rated
in November in batches of 2,000; then one tick at 2026-12-01T00:00:01Z, alone in its
batch, is applied with ``PartitionTask.slices`` in the driver's 1 ms slices. Printed per
count: the batch's wall time, its longest slice (what the event loop cannot interleave:
the tick is one record, and every due tenant's time work is done inside it), the time
the cyclic garbage collector took in it, the output and changelog records and their
bytes (key and value), the largest record, the states the task holds decoded after it,
and the RSS growth over the batch (``--trace``: the ``tracemalloc`` peak instead, several
times slower). The store answers key scans from a sorted index, as RocksDB's seeks do
(``MemoryStore.keys`` scans every key: quadratic here). docs/benchmarks.md ("Many
tenants", "Month ends come together") records the numbers.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson

import rater
from rater import edge
from rater.catalog import rating_context
from rater.core.times import parse_time_us
from rater.shell.batches import MAX_RECORD_BYTES
from rater.shell.task import PURGE_PREFIX, TICKS, Batch, MemoryStore, PartitionTask, tick_value
from rater.workload import Workload

LOTS_BOUGHT = "2025-12-01T00:00:00Z"
TICK = "2026-12-01T00:00:01Z"
SLICE_S = 0.001  # the driver's
BATCH = 2000


class IndexedStore(MemoryStore):
    """A :class:`MemoryStore` whose key scans bisect a sorted index (rebuilt after a
    write), the purge records apart (scanned by every batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.purges: set[bytes] = set()
        self.index: list[bytes] = []
        self.stale = True

    def keys(self, prefix: bytes, limit: int, after: bytes = b"") -> list[bytes]:
        if prefix == PURGE_PREFIX:
            return sorted(k for k in self.purges if k > after)[:limit]
        if self.stale:
            self.index, self.stale = sorted(self.records), False
        index = self.index
        at = bisect.bisect_right(index, max(prefix, after)) if after else bisect.bisect_left(index, prefix)
        found: list[bytes] = []
        while at < len(index) and len(found) < limit and index[at].startswith(prefix):
            found.append(index[at])
            at += 1
        return found

    def write(self, batch: Batch) -> None:
        super().write(batch)
        self.stale = True
        for key, value in batch.ids.items():
            if key.startswith(PURGE_PREFIX):
                if value is None:
                    self.purges.discard(key)
                else:
                    self.purges.add(key)


_GC = {"s": 0.0, "began": 0.0}


def _gc_timed(phase: str, _info: dict[str, int]) -> None:
    if phase == "start":
        _GC["began"] = time.perf_counter()
    else:
        _GC["s"] += time.perf_counter() - _GC["began"]


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(tenants: int, *, trace: bool) -> dict[str, Any]:
    """One count of tenants: set up, rate, then the tick's batch measured."""
    ctx = rating_context()
    workload = Workload(tenants, tenants, seed=1)
    store = IndexedStore()
    task = PartitionTask(0, ctx, store, counting=True)
    pending: list[edge.Record] = []

    def add(topic: str, offset: int, event: dict[str, Any]) -> None:
        pending.append(edge.Record(topic, 0, offset, event["tenant_id"].encode(), orjson.dumps(event),
                                   1_790_000_000_000))
        if len(pending) == BATCH:
            flush()

    def flush() -> None:
        if pending:
            store.write(task.process(pending))
            pending.clear()

    for offset, (topic, event) in enumerate(workload.setup()):
        if event["type"] == "funds_added":
            event["purchased_at"] = LOTS_BOUGHT
        add(topic, offset, event)
    flush()
    for offset, event in enumerate(workload.cdrs(2 * tenants)):
        add("cdrs", offset, event)
    flush()
    due = sum(1 for at in task._scheduled.values() if at <= parse_time_us(TICK))
    record = edge.Record(TICKS, 0, 0, None, tick_value(parse_time_us(TICK)), 1_790_000_000_000)
    gc.collect()
    if trace:
        tracemalloc.start()
    rss, _GC["s"] = _rss_mib(), 0.0
    gc.callbacks.append(_gc_timed)
    work, longest = task.slices([record], SLICE_S), 0.0
    began = time.perf_counter()
    while True:
        slice_began = time.perf_counter()
        try:
            next(work)
        except StopIteration as done:
            batch: Batch = done.value
            break
        finally:
            longest = max(longest, time.perf_counter() - slice_began)
    wall = time.perf_counter() - began
    gc.callbacks.remove(_gc_timed)
    memory = tracemalloc.get_traced_memory()[1] / 2**20 if trace else _rss_mib() - rss
    outputs = Counter(out.topic for out in batch.outputs)
    changelog = batch.changelog()
    sizes = [len(out.key or b"") + len(out.value) for out in batch.outputs]
    logged = [len(key) + len(value or b"") for key, value in changelog]
    return {"tenants": tenants, "due": due, "wall_s": wall, "longest_s": longest, "gc_s": _GC["s"],
            "outputs": sum(outputs.values()), "output_mb": sum(sizes) / 1e6, "by_topic": dict(outputs),
            "changelog": len(changelog), "changelog_mb": sum(logged) / 1e6, "largest": max(sizes + logged),
            "decoded": len(task.states), "memory_mib": memory}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    parser.add_argument("--trace", action="store_true", help="tracemalloc's peak in the batch, not the RSS growth")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one count, its result as JSON
    args = parser.parse_args()
    if args.one is not None:
        print(orjson.dumps(measure(args.one, trace=args.trace)).decode())
        return 0
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} CPUs, Python"
          f" {platform.python_version()}, core {rater.CORE_BUILD}, load {os.getloadavg()[0]:.1f}")
    memory = "traced peak MiB" if args.trace else "RSS growth MiB"
    print(f"{'tenants':>8} {'due':>8} {'wall s':>7} {'longest slice s':>15} {'gc s':>5} {'outputs':>8}"
          f" {'MB':>6} {'changelog':>9} {'MB':>6} {'largest B':>9} {'decoded':>8} {memory:>15}")
    for tenants in args.tenants:
        child = [sys.executable, __file__, "--one", str(tenants), *(["--trace"] if args.trace else [])]
        row = orjson.loads(subprocess.run(child, check=True, capture_output=True).stdout)
        print(f"{row['tenants']:>8,} {row['due']:>8,} {row['wall_s']:>7.2f} {row['longest_s']:>15.2f}"
              f" {row['gc_s']:>5.2f} {row['outputs']:>8,} {row['output_mb']:>6.1f} {row['changelog']:>9,}"
              f" {row['changelog_mb']:>6.1f} {row['largest']:>9,} {row['decoded']:>8,} {row['memory_mib']:>15.0f}",
              flush=True)
    print(f"outputs by topic at {row['tenants']:,}: {row['by_topic']}; MAX_RECORD_BYTES {MAX_RECORD_BYTES:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
