"""The notifier's delivery throughput with nothing to send, against the rate at which the
rater makes notifications, in one run (issue 14: Faust is enough here if the notifier
keeps up with ≥ 10× the notifications of the rater at full speed; not a test).

    .venv/bin/python benchmarks/notifier.py [--tenants N] [--notifications N] [--cdrs N]

1. **What the rater makes**: the seeded benchmark workload (rater/workload.py) through
   ``PartitionTask.process`` in batches of 500, in this process — the rater's decision
   alone, faster than a worker (no Kafka): the notifications it makes per second here
   (every kind on ``notifications`` and ``low-balance``: the notifier reads them all, and
   e-mails four) are more than a worker could, so the ratio below errs against the
   notifier.
2. **What the notifier delivers**: a real ``rater notify`` process on a local broker with
   ``RATER_NOTIFY_DRY_RUN=on`` (every delivery made — the e-mail rendered and built in
   the tenant's language — and nothing sent): ``--tenants`` tenants with an address,
   a backlog of ``--notifications`` notifications of the four kinds put on its topics
   first, then timed from the notifier's first delivery to its last, read on /metrics.

Prints both rates, the ratio, the machine and the date.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rater import edge
from rater.catalog import rating_context
from rater.localkafka import broker_for_tests
from rater.shell.task import MemoryStore, PartitionTask
from rater.workload import Workload
from tests.notify_support import NotifierProc, notification, upsert, wait_for
from tests.support import create_topics, produce

DELIVERED_KINDS = {"recharge_succeeded", "recharge_failed", "balance_depleted", "low_balance"}
LOCALES = ("en", "pt-BR", "es", "ru", "zh-CN", "it")


def rater_rate(tenants: int, cdrs: int) -> tuple[float, float, Counter[str]]:
    """CDRs/s and notifications/s (every kind the notifier reads) of the rater's decision on the workload."""
    workload = Workload(tenants, tenants * 10, seed=5)
    offsets: dict[str, int] = {}

    def records(items: list[tuple[str, dict[str, object]]]) -> list[edge.Record]:
        out = []
        for topic, value in items:
            offset = offsets[topic] = offsets.get(topic, -1) + 1
            out.append(edge.Record(topic, 0, offset, str(value["tenant_id"]).encode(), orjson.dumps(value),
                                   1_790_000_000_000))
        return out

    store = MemoryStore()
    task = PartitionTask(0, rating_context(), store, counting=False)
    store.write(task.process(records(list(workload.setup()))))
    calls = records([("cdrs", c) for c in workload.cdrs(cdrs)])
    kinds: Counter[str] = Counter()
    began = time.perf_counter()
    for lo in range(0, len(calls), 500):
        batch = task.process(calls[lo:lo + 500])
        store.write(batch)
        for out in batch.outputs:
            if out.topic in ("notifications", "low-balance"):  # every kind: the notifier reads them all
                kinds[orjson.loads(out.value)["type"]] += 1
    took = time.perf_counter() - began
    return len(calls) / took, sum(kinds.values()) / took, kinds


def notifier_rate(tenants: int, count: int) -> float:
    """Deliveries/s of a dry-run ``rater notify`` on a backlog of ``count`` notifications."""
    with broker_for_tests() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        prefix = f"bnotify{uuid.uuid4().hex[:6]}."
        create_topics(bootstrap, prefix)
        ids = [f"bn{n:05d}" for n in range(tenants)]
        contacts: list[tuple[str, bytes | None, bytes | None]] = [
            ("account-commands", tid.encode(), orjson.dumps(upsert(tid, {
                "emails": [f"admin@{tid}.example.test"], "locale": LOCALES[n % len(LOCALES)]})))
            for n, tid in enumerate(ids)]
        kinds = sorted(DELIVERED_KINDS)
        backlog: list[tuple[str, bytes | None, bytes | None]] = []
        for n in range(count):
            tid, kind = ids[n % tenants], kinds[n % len(kinds)]
            topic = "low-balance" if kind == "low_balance" else "notifications"
            backlog.append((topic, tid.encode(), orjson.dumps(notification(kind, tid, n))))
        import asyncio  # noqa: PLC0415 - the producer's loop only

        asyncio.run(produce(bootstrap, prefix, contacts))
        proc = NotifierProc(bootstrap, prefix, Path(tmp) / "notify", smtp_port=1,
                            extra_env={"RATER_NOTIFY_DRY_RUN": "on", "RATER_LOG_LEVEL": "warn"}).start()
        # the contacts first (no order between topics: a notification ahead of its
        # tenant's contacts would be skipped), then the backlog
        wait_for(lambda: proc.metric("rater_notify_contacts_updates_total") >= tenants, 120, "the contacts",
                 proc.check_alive)
        asyncio.run(produce(bootstrap, prefix, backlog))
        try:
            delivered = 0.0
            first_at = None
            deadline = time.monotonic() + 600
            while delivered < count:
                proc.check_alive()
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {delivered:.0f} of {count} delivered in 600 s")
                delivered = proc.metric("rater_notify_deliveries_total", outcome="delivered")
                if first_at is None and delivered:
                    first_at, first = time.monotonic(), delivered
                time.sleep(0.05)
            assert first_at is not None
            return (delivered - first) / (time.monotonic() - first_at)
        finally:
            proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--notifications", type=int, default=20_000, help="the notifier's backlog")
    parser.add_argument("--cdrs", type=int, default=60_000, help="the workload the rater's rate is measured on")
    args = parser.parse_args()
    print(f"notifier throughput, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()} ({platform.machine()},"
          f" {os.cpu_count()} CPUs, Python {platform.python_version()})", flush=True)
    cdrs_per_s, made_per_s, kinds = rater_rate(args.tenants, args.cdrs)
    print(f"  the rater's decision: {cdrs_per_s:,.0f} CDRs/s, making {made_per_s:,.1f} notifications/s"
          f" (on notifications and low-balance: {dict(kinds)} in {args.cdrs:,} CDRs; the four kinds e-mailed:"
          f" {sum(n for k, n in kinds.items() if k in DELIVERED_KINDS)})", flush=True)
    delivered_per_s = notifier_rate(args.tenants, args.notifications)
    print(f"  the notifier (dry run, {args.tenants} tenants, {args.notifications:,} backlog): {delivered_per_s:,.0f}"
          " e-mails built and counted per second", flush=True)
    ratio = delivered_per_s / made_per_s if made_per_s else float("inf")
    print(f"  ratio: {ratio:,.1f}× the notifications the rater makes at full speed (target ≥ 10×)")


if __name__ == "__main__":
    main()
