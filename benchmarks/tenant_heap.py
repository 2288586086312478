"""What a partition task holds in memory per tenant (issue 15): bytes a decoded state, a
deadline-heap entry, a usage-cache bucket and a partition-of-a-key cache entry, measured
with ``tracemalloc`` in one process (no Kafka, no RocksDB: a ``MemoryStore``).

    .venv/bin/python benchmarks/tenant_heap.py [--tenants 5000] [--cdrs 12000]

The benchmark workload (1 user a tenant) is set up, then CDRs rated in batches of 2,000;
each structure is then dropped and the bytes ``tracemalloc`` sees freed are divided by
its entries. docs/benchmarks.md ("Many tenants") records the numbers.
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
from collections.abc import Callable

import orjson

from rater import edge
from rater.catalog import rating_context
from rater.shell import keys
from rater.shell.task import MemoryStore, PartitionTask
from rater.workload import Workload


def _freed(drop: Callable[[], object]) -> int:
    """Bytes freed by calling ``drop`` (and collecting)."""
    before = tracemalloc.get_traced_memory()[0]
    drop()
    gc.collect()
    return before - tracemalloc.get_traced_memory()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=5_000)
    parser.add_argument("--cdrs", type=int, default=12_000)
    args = parser.parse_args()
    tracemalloc.start()
    ctx = rating_context()
    workload = Workload(args.tenants, args.tenants, seed=1)
    setup = [edge.Record("account-commands", 0, n, e["tenant_id"].encode(), orjson.dumps(e), 1_790_000_000_000)
             for n, (_, e) in enumerate(workload.setup())]
    cdrs = [edge.Record("cdrs", 0, n, e["tenant_id"].encode(), orjson.dumps(e), 1_790_000_000_000)
            for n, e in enumerate(workload.cdrs(args.cdrs))]
    store = MemoryStore()
    task = PartitionTask(0, ctx, store, counting=False, partitions=1)  # 1: every key checked, every one at home
    for records in (setup, cdrs):
        for lo in range(0, len(records), 2000):
            store.write(task.process(records[lo:lo + 2000]))
    states, buckets = len(task.states), task._cached_buckets
    freed = _freed(task.states.clear)
    print(f"decoded states: {states:,} kept, {freed / max(states, 1):,.0f} bytes each")
    freed = _freed(task._months.clear)
    print(f"usage cache: {buckets:,} buckets, {freed / max(buckets, 1):,.0f} bytes each")
    fresh = PartitionTask(0, ctx, store, counting=False)
    scheduled, distinct = len(fresh._scheduled), len(set(fresh._scheduled.values()))

    def drop_schedule() -> None:
        fresh._scheduled.clear()
        fresh._due.clear()

    freed = _freed(drop_schedule)
    print(f"deadline heap: {scheduled:,} tenants ({distinct} distinct deadlines), {freed / max(scheduled, 1):,.0f}"
          " bytes each")
    entries = len(keys._CACHE)
    freed = _freed(keys._CACHE.clear)
    print(f"partition-of-a-key cache: {entries:,} keys, {freed / max(entries, 1):,.0f} bytes each")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
