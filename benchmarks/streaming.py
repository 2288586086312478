"""Streaming throughput: the rater worker against a bare aiokafka pass-through (issue 4)
and against a Faust agent doing the same work (issue 15).

    make bench-stream      # or: .venv/bin/python benchmarks/streaming.py [--cdrs N] [--faust ...]

One run, one broker (a fresh local one, or ``KAFKA_BOOTSTRAP``), the same CDR bytes on
the same number of partitions:

* ``pass-through`` — an aiokafka consumer group reads ``cdrs`` and produces every value
  unchanged to an output topic, committing offsets per batch (no transactions): the
  ceiling the rater is measured against, run before and after the other runs of a
  round (a new group each time), their mean the round's baseline;
* ``rater`` — a real ``rater worker`` process with its production settings (one
  transaction per batch unit, state changelog, RocksDB, ticks, metrics) rates the same
  CDRs for tenants whose accounts were set up first;
* ``rater, no metrics`` — the same with ``RATER_METRICS=off`` (issue 12: the metrics may
  cost at most 5 %), run right before or after the one with metrics (alternating by
  round, so the VM's drift and whatever favours the second run weigh on both: an even
  number of rounds, 4 by default), their ratio printed per round;
* ``Faust agent, at_least_once`` / ``exactly_once`` — ``benchmarks/faust_rater.py``: the
  same edge, core and partition task inside a Faust agent, its state in a Faust table,
  ``take_events`` batches. Its rated CDRs are checked against a reference: a rater
  worker run once before the rounds on the same input with its ticks off (so neither
  depends on the wall clock) — counts, byte-identical values per usage id, and the
  charges summed per currency.

All read topics that were filled before they start; each is timed from its first
committed record to its last, so start-up and group joins are not counted. Prints
CDRs/s with the machine's load (the 1-minute load average and how busy the CPUs were
during the run), the ratio to the round's pass-through (target: the rater at ≥ 50 %),
for several rounds and their medians: the speed of a shared VM drifts, so each ratio
compares runs made within minutes of each other.

``BENCH_PYSPY=folder`` profiles each rater and Faust process with py-spy from its first
commit on (``BENCH_PYSPY_S`` seconds, 8 by default); ``benchmarks/stack_shares.py
folder/*.txt --rate R`` says where the time went.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
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


async def _timed(bootstrap: str, group: str, topic: str, total: int, *,
                 proc: subprocess.Popen[bytes] | None = None, on_first: Callable[[], None] | None = None) -> float:
    """Seconds from the group's first committed record of ``topic`` to its last; the
    rate is over the records committed in between. Raises if ``proc`` (the consumer's
    process, when it is one) ends before; calls ``on_first`` at the first commit."""
    first_at, first = 0.0, 0
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{group}: its process ended (exit {proc.returncode}) before {topic} was consumed")
        done = await committed(bootstrap, group, topic)
        now = time.monotonic()
        if done and not first_at:
            first_at, first = now, done
            if on_first is not None:
                on_first()
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
           workdir: Path, *, workers: int, metrics: bool = True, env: dict[str, str] | None = None) -> float:
    """Accounts first (a worker applies them and stops), then the CDRs are filled and
    ``workers`` worker processes started together on them are timed."""
    env = dict(os.environ, RATER_BOOTSTRAP=bootstrap, RATER_TOPIC_PREFIX=prefix, RATER_APP_ID=f"{prefix}rater",
               RATER_SESSION_TIMEOUT="6", RATER_LOG_LEVEL="warn", RATER_METRICS="on" if metrics else "off",
               RATER_WEB_PORT="0", **(env or {}))
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
        return asyncio.run(_timed(bootstrap, f"{prefix}rater", f"{prefix}cdrs", len(cdrs),
                                  on_first=_profile(procs, f"{prefix}worker")))
    finally:
        for proc in procs:
            stop_process(proc)


FAUST_AGENT = Path(__file__).with_name("faust_rater.py")


def _profile(procs: list[subprocess.Popen[bytes]], name: str) -> Callable[[], None]:
    """When ``BENCH_PYSPY`` names a folder: what starts py-spy on ``procs`` (called at
    their first commit, so start-up is not in it) for ``BENCH_PYSPY_S`` seconds (8), its
    samples (raw, collapsed stacks, 200 Hz, idle included) in ``{folder}/{name}-{n}.txt``;
    ``benchmarks/stack_shares.py`` sums them up by what the time went on."""
    folder = os.environ.get("BENCH_PYSPY")

    def start() -> None:
        if not folder:
            return
        Path(folder).mkdir(parents=True, exist_ok=True)
        py_spy = Path(sys.executable).with_name("py-spy")
        for n, proc in enumerate(procs):
            spawn([str(py_spy), "record", "--pid", str(proc.pid), "--format", "raw", "--rate", "200", "--idle",
                   "--nonblocking", "--duration", os.environ.get("BENCH_PYSPY_S", "8"),
                   "--output", str(Path(folder) / f"{name}-{n}.txt")], log=Path(folder) / f"{name}-{n}.log")

    return start


async def _create_changelog(bootstrap: str, name: str) -> None:
    """The Faust table's changelog, made before Faust starts (on a first start its own
    creation can race its table writes: ``rater/notifier/run.py``)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()


def _faust(bootstrap: str, prefix: str, setup: list[tuple[bytes, int]], cdrs: list[tuple[bytes, int]],
           workdir: Path, *, guarantee: str, options: list[str]) -> float:
    """The rater's work in a Faust agent (``benchmarks/faust_rater.py``): one process
    applies the accounts, then the CDRs are filled and it is timed on them."""
    app_id = f"{prefix}faust"
    workdir.mkdir(parents=True, exist_ok=True)
    asyncio.run(_create_changelog(bootstrap, f"{app_id}-state-changelog"))
    asyncio.run(_fill(bootstrap, f"{prefix}account-commands", setup))
    command = [sys.executable, str(FAUST_AGENT), "--bootstrap", bootstrap, "--prefix", prefix, "--app-id", app_id,
               "--data-dir", str(workdir / "data"), "--guarantee", guarantee, *options]
    proc = spawn(command, log=workdir / "faust.log", env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        asyncio.run(_timed(bootstrap, app_id, f"{prefix}account-commands", len(setup), proc=proc))
        asyncio.run(_fill(bootstrap, f"{prefix}cdrs", cdrs))
        return asyncio.run(_timed(bootstrap, app_id, f"{prefix}cdrs", len(cdrs), proc=proc,
                                  on_first=_profile([proc], f"{prefix}faust-{guarantee}")))
    finally:
        stop_process(proc)


async def rated_cdrs(bootstrap: str, topic: str) -> tuple[int, dict[bytes, bytes]]:
    """Every committed record of ``topic`` (read_committed, to its end): how many, and
    the last value per key+usage id (a replay may have written one twice)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        count, found = 0, {}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for messages in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                for m in messages:
                    count += 1
                    found[orjson.loads(m.value)["usage_id"].encode()] = m.value
        return count, found
    finally:
        await consumer.stop()


def compare_outputs(bootstrap: str, reference: str, other: str) -> str:
    """Whether ``other``'s rated CDRs are the reference's: counts, then byte for byte
    per usage id, and the money (the sum of ``charge`` in minor units, per currency)."""
    n_ref, ref = asyncio.run(rated_cdrs(bootstrap, reference))
    n_other, found = asyncio.run(rated_cdrs(bootstrap, other))
    same = sum(1 for usage_id, value in found.items() if ref.get(usage_id) == value)

    def money(values: dict[bytes, bytes]) -> dict[str, int]:
        totals: dict[str, int] = {}
        for value in values.values():
            cdr = orjson.loads(value)
            units, _, cents = cdr["charge"].partition(".")
            minor = int(units + cents)  # a decimal string: never a float
            totals[cdr["currency"]] = totals.get(cdr["currency"], 0) + minor
        return totals

    sums_equal = money(ref) == money(found)
    if os.environ.get("BENCH_SHOW_DIFF"):
        for usage_id, value in list(found.items())[:200]:
            if ref.get(usage_id) != value:
                print("reference:", ref.get(usage_id), "\nother:    ", value)
                break
        print("missing:", [u for u in ref if u not in found][:5])
    return (f"{n_other:,} records, {len(found):,} usage ids (reference {n_ref:,} / {len(ref):,}),"
            f" {same:,} byte-identical, charges per currency {'equal' if sums_equal else 'DIFFER'}")


def _with_and_without_metrics(bootstrap: str, stem: str, accounts: list[tuple[bytes, int]],
                              cdrs: list[tuple[bytes, int]], tmp: Path, *, workers: int,
                              round_: int, load: Load) -> dict[bool, float]:
    """The rater's rate with metrics (True) and without (False), one right after the
    other, in an order that alternates by round."""
    measured: dict[bool, float] = {}
    for metrics in (True, False) if round_ % 2 else (False, True):
        prefix = f"{stem}{'m' if metrics else 'n'}."
        asyncio.run(ensure_topics(bootstrap, prefix, partitions=PARTITIONS, report=lambda _line: None))
        load.since()
        measured[metrics] = _rater(bootstrap, prefix, accounts, cdrs, tmp / prefix, workers=workers, metrics=metrics)
        label = f"rater, {workers} worker{'s' if workers > 1 else ''}{'' if metrics else ', no metrics'}"
        print(f"round {round_}  {label:<32}"
              f"{measured[metrics]:>10,.0f} CDRs/s  {load.since()}", flush=True)
    return measured


class Load:
    """The machine's load with every measured number: the 1-minute load average and how
    busy the CPUs were (``/proc/stat``) since the last :meth:`since` call."""

    def __init__(self) -> None:
        self.last = self._ticks()

    @staticmethod
    def _ticks() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def since(self) -> str:
        busy, total = self._ticks()
        share = (busy - self.last[0]) / max(1, total - self.last[1])
        self.last = (busy, total)
        return f"[load {os.getloadavg()[0]:.1f}, CPUs {share:.0%} busy]"


def main() -> int:  # noqa: PLR0915 - one script's sequence of runs
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cdrs", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker processes of each rater run (docker-compose.yml runs two)")
    parser.add_argument("--faust", nargs="*", default=["at_least_once", "exactly_once"],
                        choices=["at_least_once", "exactly_once"],
                        help="the Faust agent's runs in each round, by processing guarantee (none: no Faust runs)")
    parser.add_argument("--faust-options", default="",
                        help="more options for benchmarks/faust_rater.py (e.g. '--take 4000 --linger 0.01')")
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
    ratios: dict[str, list[float]] = {}
    """Per variant (pass-through, each rater, each Faust run), per round: its rate / the round's mean pass-through."""
    rates: dict[str, list[float]] = {}
    costs: dict[int, list[float]] = {workers: [] for workers in args.workers}
    """Per worker count, per round: the rater with metrics / the rater without."""
    quiet = lambda _line: None  # noqa: E731
    placed = [(v, _partition(orjson.loads(v)["tenant_id"])) for v in cdrs]
    accounts = [(v, _partition(orjson.loads(v)["tenant_id"])) for _, v in setup]
    load = Load()
    faust_options = args.faust_options.split()
    try:
        with tempfile.TemporaryDirectory(prefix="rater-bench-") as tmp:
            reference = ""
            if args.faust:
                # the Faust agent's outputs are checked against a rater worker's on the same
                # input; with its ticks off, so neither output depends on the wall clock
                reference = f"bench{int(time.time())}ref."
                asyncio.run(ensure_topics(bootstrap, reference, partitions=PARTITIONS, report=quiet))
                rate = _rater(bootstrap, reference, accounts, placed, Path(tmp) / reference, workers=1, metrics=False,
                              env={"RATER_TICK_INTERVAL": "0"})
                print(f"reference: rater, 1 worker, no metrics, no ticks {rate:>10,.0f} CDRs/s  {load.since()}",
                      flush=True)
            for round_ in range(1, args.rounds + 1):
                stamp = f"{int(time.time())}n{round_}"
                pt = f"bench{stamp}pt."
                asyncio.run(ensure_topics(bootstrap, pt, partitions=PARTITIONS, report=quiet))
                asyncio.run(_fill(bootstrap, f"{pt}cdrs", placed))
                # the pass-through before and after the other runs, their mean the baseline:
                # the VM's drift during a round counts on both sides
                load.since()
                before = asyncio.run(_pass_through(bootstrap, pt, len(cdrs), "a"))
                print(f"round {round_}  pass-through                    {before:>10,.0f} CDRs/s  {load.since()}",
                      flush=True)
                measured: dict[str, float] = {}
                for workers in args.workers:
                    pair = _with_and_without_metrics(bootstrap, f"bench{stamp}r{workers}", accounts, placed,
                                                     Path(tmp), workers=workers, round_=round_, load=load)
                    measured[f"rater, {workers} worker{'s' if workers > 1 else ''}"] = pair[True]
                    costs[workers].append(pair[True] / pair[False])
                    print(f"round {round_}  rater, {workers} worker{'s' if workers > 1 else ' '}: with metrics"
                          f" {pair[True] / pair[False]:.3f} × without", flush=True)
                for guarantee in args.faust:
                    prefix = f"bench{stamp}f{guarantee[0]}."
                    asyncio.run(ensure_topics(bootstrap, prefix, partitions=PARTITIONS, report=quiet))
                    load.since()
                    name = f"Faust agent, {guarantee}"
                    measured[name] = _faust(bootstrap, prefix, accounts, placed, Path(tmp) / prefix,
                                            guarantee=guarantee, options=faust_options)
                    print(f"round {round_}  {name:<32}{measured[name]:>10,.0f} CDRs/s  {load.since()}", flush=True)
                    print(f"round {round_}  {name}: rated CDRs against the reference's:"
                          f" {compare_outputs(bootstrap, reference + 'rated-cdrs', prefix + 'rated-cdrs')}",
                          flush=True)
                load.since()
                after = asyncio.run(_pass_through(bootstrap, pt, len(cdrs), "b"))
                passthrough = (before + after) / 2
                print(f"round {round_}  pass-through again              {after:>10,.0f} CDRs/s  {load.since()}"
                      f"   (mean {passthrough:,.0f})", flush=True)
                rates.setdefault("pass-through (mean of the two)", []).append(passthrough)
                for name, rate in measured.items():
                    rates.setdefault(name, []).append(rate)
                    ratios.setdefault(name, []).append(rate / passthrough)
                    print(f"round {round_}  {name}: {rate / passthrough:.3f} × the mean pass-through", flush=True)
    finally:
        if kafka is not None:
            kafka.stop()
    print(f"medians of {args.rounds} rounds ({args.cdrs:,} CDRs each):")
    for name, found in rates.items():
        ratio = ratios.get(name)
        shown = f"  {statistics.median(ratio):.3f} × pass-through (rounds: {', '.join(f'{r:.3f}' for r in ratio)})" \
            if ratio else ""
        print(f"  {name:<32}{statistics.median(found):>10,.0f} CDRs/s{shown}")
    for workers, cost in costs.items():
        print(f"rater, {workers} worker{'s' if workers > 1 else ' '}: with metrics median"
              f" {statistics.median(cost):.3f} × without (rounds: {', '.join(f'{r:.3f}' for r in cost)};"
              " target ≥ 0.95)")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
