"""How long ``rater export usage`` takes for a big month (issue 13; not a test).

    KAFKA_BOOTSTRAP=host:port .venv/bin/python benchmarks/export_usage.py [--cdrs 100000] [--others 20000]

Makes fresh topics (prefix ``bexp{random}.``, 4 partitions), produces ``--cdrs``
schema-valid ``rated_cdr`` records of one tenant for the current month, plus ``--others``
of other tenants on the same partition (read and skipped, as in production), straight to
``rated-cdrs`` (no worker: the export's cost is reading and writing, not rating), then
runs the real command line (``rater export usage -o FILE``, a subprocess) and prints its
wall time, rows and rows per second. Without ``KAFKA_BOOTSTRAP`` it starts a local broker.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from rater.export import tenant_partition
from rater.localkafka import LocalKafka
from rater.topics import ensure_topics

PARTITIONS = 4


def rated(tenant: str, n: int, month_start: datetime) -> dict[str, Any]:
    start = month_start + timedelta(seconds=n * 7)
    end = start + timedelta(seconds=61 + n % 600)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    return {
        "type": "rated_cdr", "schema_version": 1, "event_id": f"{tenant}-rated-{n}", "tenant_id": tenant,
        "occurred_at": end.strftime(stamp), "usage_id": f"{tenant}-u{n}", "call_id": f"call-{n}",
        "conference_id": None, "user_id": f"user-{n % 250}", "user_location": "US", "call_type": "user_out",
        "number_type": "geographic", "caller_number": "+14155550100", "destination_number": "+442071838750",
        "start_time": start.strftime(stamp), "end_time": end.strftime(stamp), "duration_seconds": 61 + n % 600,
        "status": "rated", "reason": None, "billing_month": month_start.strftime("%Y-%m"),
        "destination_country": "GB", "scope": "international", "pool_usage": [], "credit_seconds": 61 + n % 600,
        "charged_seconds": 120, "connection_fee": "0.05", "charge": "0.49", "uncollected": "0.00",
        "overage": "0.00", "currency": "USD", "capability": "MCOPSTNPP",
        "lot_debits": [{"lot_id": "lot-1", "amount": "0.49"}], "balance_after": "9.51",
    }


async def fill(bootstrap: str, topic: str, tenant: str, others: list[str], *, cdrs: int, other_cdrs: int) -> None:
    month_start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        pending = []
        names = [tenant] * cdrs + [others[n % len(others)] for n in range(other_cdrs)]
        for n, name in enumerate(sorted(names, key=lambda _: uuid.uuid4().int)):  # interleaved
            pending.append(await producer.send(topic, orjson.dumps(rated(name, n, month_start)), key=name.encode()))
            if len(pending) >= 5_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cdrs", type=int, default=100_000)
    parser.add_argument("--others", type=int, default=20_000, help="rated CDRs of other tenants on the partition")
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    kafka = None
    with tempfile.TemporaryDirectory(prefix="rater-bexp-") as workdir:
        try:
            if not bootstrap:
                kafka = LocalKafka(workdir=Path(workdir) / "kafka").start()
                bootstrap = kafka.bootstrap
            prefix = f"bexp{uuid.uuid4().hex[:8]}."
            asyncio.run(ensure_topics(bootstrap, prefix, partitions=PARTITIONS, report=lambda _line: None))
            tenant = "big-tenant"
            want = tenant_partition(tenant, PARTITIONS)
            others = [f"other-{n}" for n in range(200) if tenant_partition(f"other-{n}", PARTITIONS) == want][:10]
            began = time.monotonic()
            asyncio.run(fill(bootstrap, prefix + "rated-cdrs", tenant, others, cdrs=args.cdrs, other_cdrs=args.others))
            print(f"produced {args.cdrs} + {args.others} rated CDRs in {time.monotonic() - began:.1f}s")
            target = Path(workdir) / "usage.csv"
            month = datetime.now(UTC).strftime("%Y-%m")
            env = dict(os.environ, RATER_BOOTSTRAP=bootstrap, RATER_TOPIC_PREFIX=prefix)
            began = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "rater", "export", "usage", "--tenant", tenant,
                                   "--month", month, "-o", str(target)], env=env, capture_output=True, text=True,
                                  check=False)
            took = time.monotonic() - began
            print(done.stderr.strip())
            with target.open(newline="", encoding="utf-8") as stream:
                rows = sum(1 for _ in csv.reader(stream)) - 1
            assert done.returncode == 0, done.returncode
            assert rows == args.cdrs, rows
            print(f"export: {rows} rows ({target.stat().st_size / 1e6:.1f} MB) in {took:.2f}s wall, "
                  f"{rows / took:,.0f} rows/s (process start included); {platform.machine()}, "
                  f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
                  f"{datetime.now(UTC):%Y-%m-%d}")
        finally:
            if kafka is not None:
                kafka.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
