"""Authorize latency (issue 13): ``POST /v1/authorize`` p50/p99 on workers that are rating.

    .venv/bin/python benchmarks/authorize.py [--rate CDRS_PER_S] [--requests N]

Two real ``rater worker`` processes on one broker (a fresh local one, or
``KAFKA_BOOTSTRAP``) share the partitions; seeded workload traffic (rater/workload.py)
goes into ``cdrs`` at ``--rate`` CDRs/s (set it to about half what
``benchmarks/streaming.py`` measures on the machine) while authorize requests, one at a
time, go to each tenant's owner (direct) and to the other worker (forwarded, one hop).
Prints p50/p99 with the machine and the date. Target: p99 < 5 ms.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rater.localkafka import broker_for_tests
from rater.workload import Workload
from tests.support import Worker, create_topics, send_events


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - a worker we started
            return answer.status, orjson.loads(answer.read())
    except OSError:
        return 0, {}


def _post(url: str, body: bytes) -> tuple[float, str]:
    request = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - a worker we started
                                     headers={"Content-Type": "application/json"})
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - a worker we started
        answered_by = answer.headers["Rater-Answered-By"]
        answer.read()
    return (time.perf_counter() - began) * 1000, answered_by


def _settle(workers: list[Worker]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        states = [_get(w.url + "/readyz") for w in workers]
        if all(s == 200 and b.get("partitions") for s, b in states):
            return
        time.sleep(0.5)
    raise SystemExit("the workers never shared the partitions")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=500.0, help="CDRs per second sent while measuring")
    parser.add_argument("--requests", type=int, default=2000, help="authorize requests per series")
    args = parser.parse_args()
    with broker_for_tests() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        prefix = f"bauthz{uuid.uuid4().hex[:6]}."
        create_topics(bootstrap, prefix)
        workers = [Worker(bootstrap, prefix, Path(tmp) / name).start() for name in ("a", "b")]
        try:
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            load = Workload(tenants=50, users=1000, start=now)
            send_events(bootstrap, prefix, list(load.setup()))
            _settle(workers)
            stop = threading.Event()
            sent = [0]

            def traffic() -> None:
                cdrs = load.cdrs(10_000_000, per_second=args.rate)
                while not stop.is_set():
                    began = time.monotonic()
                    send_events(bootstrap, prefix, [("cdrs", next(cdrs)) for _ in range(int(args.rate / 10))])
                    sent[0] += int(args.rate / 10)
                    time.sleep(max(0.0, 0.1 - (time.monotonic() - began)))

            sender = threading.Thread(target=traffic, daemon=True)
            sender.start()
            time.sleep(5)  # the worker is rating before the first request
            started = time.monotonic() - 5
            tenant = load.tenants[0]
            user, location = tenant.users[0]
            body = orjson.dumps({"tenant_id": tenant.tenant_id, "user_id": user, "call_type": "user_out",
                                 "number_type": "geographic", "destination": "+12125550123",
                                 "user_location": location})
            _ms, owner = _post(workers[0].url + "/v1/authorize", body)
            other = next(w.url for w in workers if w.url != owner)
            results = {}
            for name, url in (("direct", owner), ("forwarded", other)):
                times = sorted(_post(url + "/v1/authorize", body)[0] for _ in range(args.requests))
                results[name] = (statistics.median(times), times[int(len(times) * 0.99) - 1])
            if not sender.is_alive():
                raise SystemExit("the traffic stopped: the numbers would be of idle workers")
            stop.set()
            sender.join()
            elapsed = time.monotonic() - started
        finally:
            for worker in workers:
                worker.stop()
    print(f"authorize latency, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}"
          f" ({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}),"
          f" {sent[0]} CDRs sent in {elapsed:.0f} s ({sent[0] / elapsed:.0f}/s, asked {args.rate:.0f}/s)"
          f" to 2 workers, {args.requests} requests per series")
    for name, (p50, p99) in results.items():
        print(f"  {name:9}  p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   (target p99 < 5 ms)")


if __name__ == "__main__":
    main()
