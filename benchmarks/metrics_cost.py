"""What the worker's metrics cost on the CPU, against the same batches uncounted, in one
run (issue 12: at most 5 % of throughput; not a test).

    make bench-metrics    # or: .venv/bin/python benchmarks/metrics_cost.py [--help]

``make bench-stream`` compares whole workers with and without metrics on a real broker;
on a shared 2-vCPU VM its rounds scatter by ±15 %, more than the cost it looks for. This
script isolates it: the same seeded workload (``rater.workload``) through
``PartitionTask.process`` in batches, once with ``counting=False`` and once counting
every output (``rater/shell/tally.py``) and adding each batch to the worker's
``Metrics`` as the driver does after a commit — two tasks taking the same batches in
turn, each batch timed on its own (the VM's speed drifts by a third within minutes; in
turn, the drift weighs on both). It prints the best of ``--rounds`` per CDR and the
median ratio of the counted run to the other: the share of the decision's CPU that
counting takes. In a worker, Kafka's own work (fetching,
producing, the transaction) comes on top of the decision, so the share of a worker's
throughput is smaller than this.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime

import orjson

import rater
from rater import edge
from rater.catalog import rating_context
from rater.shell.metrics import INPUT_TOPICS, Metrics, expected_series
from rater.shell.task import MemoryStore, PartitionTask
from rater.workload import Workload

TIMESTAMP_MS = 1_790_000_000_000


def _records(tenants: int, users: int, cdrs: int) -> tuple[list[edge.Record], list[edge.Record]]:
    work = Workload(tenants=tenants, users=users, seed=1)
    setup = [edge.Record(topic, 0, n, command["tenant_id"].encode(), orjson.dumps(command), TIMESTAMP_MS)
             for n, (topic, command) in enumerate(work.setup())]
    calls = [edge.Record("cdrs", 0, n, cdr["tenant_id"].encode(), orjson.dumps(cdr), TIMESTAMP_MS)
             for n, cdr in enumerate(work.cdrs(cdrs))]
    return setup, calls


def _run(setup: list[edge.Record], calls: list[edge.Record], batch: int) -> dict[bool, float]:
    """Seconds to decide every call, uncounted (False) and counted (True): two tasks
    decide the same batches in turn, each batch timed on its own, the first of the two
    alternating — a drift of the VM's speed weighs on both alike."""
    ctx = rating_context()
    tasks, stores = {}, {}
    for counting in (False, True):
        stores[counting] = MemoryStore()
        tasks[counting] = PartitionTask(0, ctx, stores[counting], counting=counting)
        stores[counting].write(tasks[counting].process(setup))
    metrics = Metrics(rater.__version__, rater.CORE_BUILD)
    metrics.expect(expected_series(ctx), INPUT_TOPICS)
    took = {False: 0.0, True: 0.0}
    for n, start in enumerate(range(0, len(calls), batch)):
        records = calls[start:start + batch]
        for counting in (False, True) if n % 2 == 0 else (True, False):
            began = time.perf_counter()
            done = tasks[counting].process(records)
            stores[counting].write(done)
            if counting:
                metrics.committed(done.counts, done.call_ends_us, ((r.topic, r.timestamp_ms) for r in records),
                                  0.01, TIMESTAMP_MS + 1000)
            took[counting] += time.perf_counter() - began
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cdrs", type=int, default=40_000)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=500, help="records per batch (a unit)")
    parser.add_argument("--rounds", type=int, default=5, help="runs of both; the median ratio counts")
    args = parser.parse_args()
    print(f"metrics cost — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()},"
          f" {platform.machine()}, {os.cpu_count()} CPUs, core {rater.CORE_BUILD.split(' ')[0]},"
          f" {args.cdrs} CDRs in batches of {args.batch}, {args.rounds} rounds", flush=True)
    setup, calls = _records(args.tenants, args.users, args.cdrs)
    best = {False: float("inf"), True: float("inf")}
    ratios = []
    for _ in range(args.rounds):
        took = _run(setup, calls, args.batch)
        ratios.append(took[True] / took[False])
        best = {counting: min(best[counting], took[counting]) for counting in best}
    per_cdr = {counting: seconds / len(calls) * 1e6 for counting, seconds in best.items()}
    print(f"uncounted  {per_cdr[False]:8.2f} µs a CDR")
    print(f"counted    {per_cdr[True]:8.2f} µs a CDR")
    ratio = statistics.median(ratios)
    shown = ", ".join(f"{r:.3f}" for r in ratios)
    print(f"counting costs {(ratio - 1) * 100:+.1f} % of the decision's CPU (median {ratio:.3f} ×, rounds: {shown};"
          f" target ≤ +5 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
