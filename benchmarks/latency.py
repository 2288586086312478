"""End-to-end latency of a CDR (issue 15 item 1): from its produce time (the producing
client's clock) to its ``rated_cdr`` visible to a read_committed consumer, and to a
``balance`` of its tenant that reflects it.

    .venv/bin/python benchmarks/latency.py [--seconds S] [--rates R ...] [--worker-env K=V ...]

One real ``rater worker`` process (production tick interval) on a broker (a fresh local
one, or ``KAFKA_BOOTSTRAP``), 200 tenants of the seeded workload on 4 partitions. Then,
in one run:

1. **saturation** — ``--saturation`` CDRs filled as fast as a producer can; the
   worker's maximum rate is its committed CDRs per second from the fill's end to the last
   (``benchmarks/paced.py``, as ``benchmarks/authorize.py`` measures it);
2. **fixed rates** — for each rate (default 1,000/s, 4,000/s and half the maximum), a
   sender *process* paces fresh CDRs for ``--seconds``, stamping each with its produce
   time (its Kafka timestamp, and a file of nanoseconds read afterwards), while a
   read_committed consumer in this process (``fetch_max_wait_ms`` 5: its own wait is not
   the latency measured) reads ``rated-cdrs`` and ``balances``; a second one beside it,
   with aiokafka's default 500, shows what such a wait would add
   (``--consumer-wait-ms``).

Per rate it prints p50/p99/max of produce → ``rated_cdr`` visible and produce →
``balance`` visible, split at the time the worker made the unit (the ``rated_cdr``
record's timestamp, the broker's clock — the same host's here), and the worker's own
timeline of a unit (the ``rater.timeline`` log lines: when each phase of a unit ended
after the fetch that brought it), with how busy the machine was. The first second of
each rate is left out (the sender and the consumer starting). Target: p99 ≤ 100 ms at
half the maximum rate.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from paced import Sender, busy, caught_up, cpu_times, percentile, saturate

from rater.localkafka import broker_for_tests
from rater.workload import Workload
from tests.support import TEST_PARTITIONS, Worker, create_topics, send_events

TENANTS, USERS = 200, 5000
WARM_UP_S = 1.0
"""The first second of each rate is not counted."""
WORKER = (sys.executable, "-c",
          "import logging, sys; logging.getLogger('rater.timeline').setLevel(logging.DEBUG);"
          " sys.argv = ['rater', 'worker']; from rater.cli import main; main()")
"""A ``rater worker`` with its unit timeline logged (``rater.shell.fetching.timeline``)."""
UNIT_LINE = re.compile(r"rater\.timeline: unit (.*)$")


@dataclass
class Seen:
    """What the measuring consumer saw of one rate's CDRs: per CDR number, when its
    ``rated_cdr`` became visible and the record's timestamp (ns); per tenant, its
    ``balance`` events (cause's CDR number, visible at); the CDRs that changed what a
    balance shows (pools drawn or lots debited: each is the cause of a snapshot made in
    its unit, or a later CDR of its tenant in that unit is)."""

    rated: dict[int, tuple[int, int]] = field(default_factory=dict)
    moved: set[int] = field(default_factory=set)
    balances: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    tenant_of: dict[int, str] = field(default_factory=dict)


def _number(usage_id: str) -> int | None:
    """The CDR number of a benchmark usage id ``{tenant}/cdr/{n}``."""
    head, sep, tail = usage_id.rpartition("/cdr/")
    return int(tail) if sep and head and tail.isdigit() else None


async def _watch(bootstrap: str, prefix: str, *, first: int, count: int, started: asyncio.Event,
                 wait_ms: int, timeout_s: float) -> Seen:
    """Read ``rated-cdrs`` and ``balances`` (read_committed, from their ends) until every
    CDR ``first`` … ``first + count − 1`` has its ``rated_cdr`` or ``timeout_s`` passed."""
    from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: PLC0415 - the measuring side's own import

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", fetch_max_wait_ms=wait_ms,
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    seen = Seen()
    try:
        tps = [TopicPartition(f"{prefix}{topic}", p) for topic in ("rated-cdrs", "balances")
               for p in range(TEST_PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        started.set()
        deadline = time.monotonic() + timeout_s
        rated_topic = f"{prefix}rated-cdrs"
        while len(seen.rated) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=100)
            now_ns = time.time_ns()
            for tp, messages in batch.items():
                for message in messages:
                    event = orjson.loads(message.value)
                    if tp.topic == rated_topic:
                        n = _number(event["usage_id"])
                        if n is not None and first <= n < first + count:
                            seen.rated[n] = (now_ns, message.timestamp * 1_000_000)
                            seen.tenant_of[n] = event["tenant_id"]
                            if event["pool_usage"] or event["lot_debits"]:
                                seen.moved.add(n)
                    else:
                        n = _number(str(event.get("caused_by", "")))
                        if n is not None and n >= first:
                            seen.balances[event["tenant_id"]].append((n, now_ns))
    finally:
        await consumer.stop()
    return seen


def _balance_latencies(seen: Seen, stamps: array.array[int], first: int, counted: int) -> list[float]:
    """Per counted CDR (number ≥ ``counted``) that changed its tenant's balance, ms from
    its produce time to the first visible ``balance`` of its tenant caused by it or a
    later CDR of that tenant (a snapshot that reflects it)."""
    by_tenant: dict[str, list[int]] = defaultdict(list)
    for n in sorted(seen.rated):
        by_tenant[seen.tenant_of[n]].append(n)
    found = []
    for tenant, numbers in by_tenant.items():
        snapshots = sorted(seen.balances.get(tenant, []))
        # the earliest visibility among the snapshots caused at or after each CDR
        earliest_after: list[tuple[int, int]] = []
        best = None
        for cause, at in reversed(snapshots):
            best = at if best is None else min(best, at)
            earliest_after.append((cause, best))
        earliest_after.reverse()
        i = 0
        for n in numbers:
            while i < len(earliest_after) and earliest_after[i][0] < n:
                i += 1
            if i == len(earliest_after):
                break
            if n >= counted and n in seen.moved:
                found.append((earliest_after[i][1] - stamps[n - first]) / 1e6)
    return found


def _stats(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (f"p50 {statistics.median(values):7.1f}  p99 {percentile(values, 0.99):7.1f}  max {max(values):7.1f} ms"
            f"  ({len(values)} CDRs)")


def _timeline(lines: list[str], seconds: float) -> None:
    """The worker's units of the rate: each phase's end after the fetch, p50 and p99 (ms)."""
    units = [dict(part.split("=", 1) for part in line.split()) for line in lines]
    cdr_units = [u for u in units if int(u.get("cdrs", "0"))]
    if not cdr_units:
        print("    worker timeline: no unit with CDRs logged")
        return
    per_p = defaultdict(int)
    for unit in cdr_units:
        per_p[unit["p"]] += 1
    cycle_ms = seconds * 1000 / statistics.mean(per_p.values())
    mean_cdrs = statistics.mean(int(u["cdrs"]) for u in cdr_units)
    print(f"    worker timeline: {len(cdr_units)} units with CDRs ({mean_cdrs:.0f} CDRs each on average,"
          f" {len(units) - len(cdr_units)} others), a unit per partition every"
          f" {cycle_ms:.0f} ms; ms after the fetch that brought it (p50 / p99):")
    names = [k for k in cdr_units[0] if k not in ("p", "records", "cdrs")]
    shown = []
    for name in names:
        values = [float(u[name]) for u in cdr_units if name in u]
        shown.append(f"{name} {statistics.median(values):.1f}/{percentile(values, 0.99):.1f}")
    print("      " + ", ".join(shown))


def _settle(worker: Worker) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        worker.check_alive()
        try:
            with urllib.request.urlopen(worker.url + "/readyz", timeout=5) as answer:  # noqa: S310 - ours
                if answer.status == 200 and orjson.loads(answer.read()).get("partitions"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the worker never became ready")


def _rate(bootstrap: str, prefix: str, start: str, worker: Worker, *, first: int, rate: float,
          args: argparse.Namespace, tmp: Path, label: str) -> tuple[int, list[float]]:
    """Offer ``rate`` CDRs/s for ``args.seconds``; print what was measured; the CDRs sent
    and the produce → rated_cdr visible latencies (ms)."""
    count = int(rate * args.seconds)
    stamps_path = tmp / f"stamps-{first}"
    log_at = worker.log.stat().st_size
    cpu = cpu_times([worker.proc.pid])

    async def run() -> tuple[list[Seen], tuple[int, float]]:
        starts = [asyncio.Event() for _ in args.consumer_wait_ms]
        watching = [asyncio.create_task(_watch(bootstrap, prefix, first=first, count=count, started=started,
                                               wait_ms=wait_ms, timeout_s=args.seconds + 60))
                    for started, wait_ms in zip(starts, args.consumer_wait_ms, strict=True)]
        for started in starts:
            await started.wait()
        sender = Sender(bootstrap, f"{prefix}cdrs", start, first=first, count=count, rate=rate, tenants=TENANTS,
                        users=USERS, linger_ms=args.sender_linger_ms, stamps=stamps_path)
        seens = [await one for one in watching]
        return seens, await asyncio.to_thread(sender.finish, stop=False, timeout_s=args.seconds + 120)

    (seen, *others), (sent, sent_s) = asyncio.run(run())
    machine = busy(cpu, cpu_times([worker.proc.pid]), "the worker")
    stamps = array.array("q")
    stamps.frombytes(stamps_path.read_bytes())
    counted = first + int(rate * WARM_UP_S)
    visible = [(seen.rated[n][0] - stamps[n - first]) / 1e6 for n in seen.rated if n >= counted]
    made = [(seen.rated[n][1] - stamps[n - first]) / 1e6 for n in seen.rated if n >= counted]
    after_made = [(seen.rated[n][0] - seen.rated[n][1]) / 1e6 for n in seen.rated if n >= counted]
    print(f"  {label}: offered {rate:,.0f} CDRs/s for {args.seconds:.0f} s (sent {sent / sent_s:,.0f}/s);"
          f" {len(seen.rated)} of {count} rated_cdrs seen; {machine}", flush=True)
    print(f"    produce → rated_cdr visible   {_stats(visible)}")
    print(f"    produce → balance visible     {_stats(_balance_latencies(seen, stamps, first, counted))}")
    print(f"    produce → unit made           {_stats(made)}   (the rated_cdr's timestamp, ms resolution)")
    print(f"    unit made → visible           {_stats(after_made)}")
    for wait_ms, other in zip(args.consumer_wait_ms[1:], others, strict=True):
        also = [(other.rated[n][0] - stamps[n - first]) / 1e6 for n in other.rated if n >= counted]
        print(f"    … seen by a consumer with fetch_max_wait_ms {wait_ms}: {_stats(also)}")
    with worker.log.open(errors="replace") as log:
        log.seek(log_at)
        lines = [m.group(1) for line in log if (m := UNIT_LINE.search(line))]
    _timeline(lines, sent_s)
    if len(seen.rated) < count:
        print(f"    {count - len(seen.rated)} rated_cdrs NOT SEEN within {args.seconds + 60:.0f} s")
    return count, visible


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20, help="how long each rate is offered")
    parser.add_argument("--rates", type=float, nargs="*", default=[1000, 4000],
                        help="fixed rates (CDRs/s) to offer; half the maximum is always added")
    parser.add_argument("--saturation", type=int, default=80_000, help="CDRs of the saturation phase")
    parser.add_argument("--max-rate", type=float, default=0.0, help="the worker's maximum (default: measured)")
    parser.add_argument("--consumer-wait-ms", type=int, nargs="+", default=[5, 500],
                        help="the measuring consumers' fetch_max_wait_ms, one consumer each, side by side on the"
                             " same CDRs: the first is the one measured; the others show what their wait adds"
                             " (aiokafka's default is 500)")
    parser.add_argument("--sender-linger-ms", type=int, default=0, help="the sender's producer linger_ms")
    parser.add_argument("--variant", nargs="+", action="append", metavar=("LABEL", "NAME=VALUE"),
                        help="a worker to measure: a label and its environment (e.g. RATER_MAX_BATCH=500, or"
                             " PYTHONPATH=/tmp/before for another checkout's code); several are measured one"
                             " after the other, in an order that alternates by round (default: one, as is)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds over the variants")
    return parser.parse_args()


def _variant(bootstrap: str, label: str, env: dict[str, str], args: argparse.Namespace,
             tmp: Path) -> dict[str, list[float]]:
    """One worker with ``env`` through the saturation and the rates; per rate label, the
    produce → rated_cdr visible latencies (ms)."""
    print(f"{label}: worker settings {env or 'default'}; load average {os.getloadavg()[0]:.1f}", flush=True)
    prefix = f"blat{uuid.uuid4().hex[:6]}."
    create_topics(bootstrap, prefix)
    worker = Worker(bootstrap, prefix, tmp / prefix, command=WORKER,
                    extra_env={"RATER_TICK_INTERVAL": "1", "RATER_LOG_LEVEL": "warn", **env}).start()
    found: dict[str, list[float]] = {}
    try:
        start = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        send_events(bootstrap, prefix, list(Workload(tenants=TENANTS, users=USERS, start=start).setup()))
        _settle(worker)
        first = 0 if args.max_rate else args.saturation
        max_rate = args.max_rate or saturate(bootstrap, prefix, start, first, [worker.proc.pid],
                                             tenants=TENANTS, users=USERS)
        caught_up(bootstrap, prefix, first)
        rates = [(rate, f"{rate:,.0f}/s") for rate in args.rates]
        rates.append((max_rate / 2, "half the maximum"))
        for rate, name in rates:
            shown = name if rate in args.rates else f"{name} ({max_rate:,.0f}/s)"
            sent, found[name] = _rate(bootstrap, prefix, start, worker, first=first, rate=rate, args=args, tmp=tmp,
                                      label=shown)
            first += sent
    finally:
        worker.stop()
    return found


def main() -> None:
    args = _arguments()
    variants = [(v[0], dict(item.split("=", 1) for item in v[1:])) for v in args.variant or [["as is"]]]
    print(f"CDR latency, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()} ({platform.machine()},"
          f" {os.cpu_count()} CPUs, Python {platform.python_version()}), 1 worker, {TEST_PARTITIONS} partitions,"
          f" {TENANTS} tenants, {args.seconds:.0f} s per rate, consumers' fetch_max_wait_ms {args.consumer_wait_ms},"
          f" sender linger_ms {args.sender_linger_ms}", flush=True)
    results: dict[str, dict[str, list[list[float]]]] = {label: defaultdict(list) for label, _ in variants}
    with broker_for_tests() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for label, env in variants if round_ % 2 == 0 else variants[::-1]:
                for name, latencies in _variant(bootstrap, label, env, args, Path(tmp)).items():
                    results[label][name].append(latencies)
    print("produce → rated_cdr visible, p50 / p99 (ms) per round:")
    for label, by_rate in results.items():
        for name, rounds in by_rate.items():
            shown = "; ".join(f"{statistics.median(one):.1f} / {percentile(one, 0.99):.1f}" for one in rounds if one)
            print(f"  {label:<24} {name:<18} {shown}")
    print("target: p99 ≤ 100 ms at half the maximum rate")


if __name__ == "__main__":
    main()
