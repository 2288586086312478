"""Soak with faults (issue 15, item 4): traffic at half the maximum rate on a 3-node
loopback cluster for ``--minutes`` while a seeded schedule of faults runs; at the end the
money reconciles to the minor unit against an independent run of the same inputs.

    .venv/bin/python benchmarks/soak.py [--minutes 15] [--seed N] [--rate CDRS_PER_S]

What it does, in one run:

1. starts ``LocalKafka(nodes=3)`` (KRaft, loopback) and creates the rater's topics with
   ``rater.topics.ensure_topics``: replication factor 3 and ``min.insync.replicas`` 2 on
   three brokers, as ``topics/topics.toml`` declares; 4 partitions (as the tests);
2. puts a seeded workload's commands on ``account-commands`` (rater/workload.py: tenants,
   licences, funds, auto-recharge) and starts two workers, ``a`` and ``b``;
3. **maximum rate** — a traffic *process* puts ``--saturation`` CDRs on ``cdrs`` as fast
   as it can; the maximum is the CDRs the workers committed per second from the fill's end
   to the last one (or ``--rate`` gives it);
4. **soak** — the traffic process paces fresh CDRs at half that rate (5 ms steps) for
   ``--minutes`` while the faults run (seeded, spread over the duration): a worker
   SIGKILLed about every three minutes and restarted at once (every other time with its
   RocksDB folder wiped: its state then comes from the changelog alone), one broker
   SIGKILLed and started again later, a third worker ``c`` joining and later leaving
   (SIGTERM). A worker that stops by itself (its sends or commits failed while a broker
   was away) is restarted, as Kubernetes would, and the timeline says so with the last
   CRITICAL (else ERROR) line of its log;
5. every ``--interval`` seconds a line: the CDRs committed per second, the backlog, the
   latency from a CDR's produce time (the traffic process's clock at ``send``) to its
   ``rated_cdr`` read by a read_committed consumer in the same process (p50/p99/max of
   the interval), each worker's RSS, the load average and how busy the CPUs were;
6. the end: the traffic stops, the workers drain every CDR, stop, and
   ``tests/reconcile.py`` compares what read_committed consumers see — rated CDRs, dead
   letters, the state changelog — with an independent in-process run of the inputs read
   back from the topics: every CDR rated exactly once, the same bytes, the same final
   state, and the money charged per currency in minor units (summed over the rated CDRs
   on both sides) equal. Then the fault timeline and a JSON file of everything.

The run's folder (``--workdir``, by default a new one under /tmp) keeps the brokers' and
workers' logs and ``soak.json``; the brokers' data is removed at the end unless
``--keep-data`` (a failed reconciliation always keeps it).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import logging
import os
import platform
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rater.localkafka import LocalKafka
from rater.workload import Workload
from tests.reconcile import committed_and_end, partition_of, produce_values, reconcile
from tests.support import TEST_PARTITIONS, Worker, create_topics

PREFIX = "soak."
STEP_S = 0.005
"""The traffic's pacing step."""


# -- the traffic process: the CDRs and the latency probe -----------------------------------
def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    return {"count": len(values), "p50": _pct(values, 0.5), "p99": _pct(values, 0.99), "max": max(values)}


class Traffic:
    """One seeded stream of CDRs (usage ids numbered in send order) and a read_committed
    probe of ``rated-cdrs`` that times each CDR from its ``send`` to its rated record."""

    def __init__(self, bootstrap: str, seed: int, tenants: int, users: int, interval_s: float) -> None:
        self.bootstrap, self.interval_s = bootstrap, interval_s
        load = Workload(tenants, users, seed=seed)
        for _ in load.setup():  # the same draws as the setup the soak sent: the same CDRs after it
            pass
        self.stream = load.cdrs(10**10)
        self.sent_at = array.array("d")
        """Monotonic send time of CDR ``n`` (its usage id ends in ``/n``)."""
        self.interval: list[float] = []
        self.paced = array.array("f")
        """Latencies (s) of CDRs sent in the paced phase."""
        self.paced_from = -1
        self.seen = 0

    async def fill(self, producer: Any, count: int) -> None:
        """Send the next ``count`` CDRs as fast as the producer takes them."""
        for _ in range(count):
            await self._send(producer)

    async def _send(self, producer: Any) -> None:
        cdr = next(self.stream)
        self.sent_at.append(time.monotonic())
        await producer.send(f"{PREFIX}cdrs", orjson.dumps(cdr), key=cdr["tenant_id"].encode())

    async def pace(self, producer: Any, rate: float, stop: asyncio.Event) -> None:
        """Send CDRs at ``rate`` a second (what is due every 5 ms step) until ``stop``."""
        self.paced_from = first = len(self.sent_at)
        began = time.monotonic()
        while not stop.is_set():
            due = first + int(rate * (time.monotonic() - began))
            while len(self.sent_at) < due:
                await self._send(producer)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STEP_S)

    async def probe(self) -> None:
        """Read ``rated-cdrs`` read_committed and time each CDR from its send."""
        from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: PLC0415 - the traffic process's own import

        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                    isolation_level="read_committed", auto_offset_reset="earliest")
        await consumer.start()
        try:
            consumer.assign([TopicPartition(f"{PREFIX}rated-cdrs", p) for p in range(TEST_PARTITIONS)])
            while True:
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    now = time.monotonic()
                    for record in records:
                        n = int(orjson.loads(record.value)["usage_id"].rsplit("/", 1)[1])
                        latency = now - self.sent_at[n]
                        self.interval.append(latency)
                        if 0 <= self.paced_from <= n:
                            self.paced.append(latency)
                    self.seen += len(records)
        finally:
            await consumer.stop()

    async def report(self) -> None:
        """Every interval, a line: its latencies, the CDRs sent and rated CDRs seen."""
        while True:
            await asyncio.sleep(self.interval_s)
            found, self.interval = self.interval, []
            _say({"interval": _summary(found), "sent": len(self.sent_at), "seen": self.seen})


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(message).decode() + "\n")
    sys.stdout.flush()


async def _traffic(bootstrap: str, seed: int, tenants: int, users: int, interval_s: float) -> None:
    """Commands on stdin, one a line: ``fill N``, ``pace RATE``, ``stop``, ``quit``."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415 - the traffic process's own import

    traffic = Traffic(bootstrap, seed, tenants, users, interval_s)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    loop = asyncio.get_running_loop()
    tasks = [asyncio.create_task(traffic.probe()), asyncio.create_task(traffic.report())]
    stop = asyncio.Event()
    pacing: asyncio.Task[None] | None = None
    _say({"ready": True})
    try:
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line or line[0] == "quit":
                break
            if line[0] == "fill":
                began = time.monotonic()
                await traffic.fill(producer, int(line[1]))
                await producer.flush()
                _say({"filled": int(line[1]), "s": time.monotonic() - began})
            elif line[0] == "pace":
                pacing = asyncio.create_task(traffic.pace(producer, float(line[1]), stop))
            elif line[0] == "stop" and pacing is not None:
                stop.set()
                await pacing
                await producer.flush()
                _say({"stopped": len(traffic.sent_at), "paced_from": traffic.paced_from})
        paced = list(traffic.paced)
        overall = {"count": len(paced)}
        if paced:
            overall |= {f"p{q}": _pct(paced, q / 100) for q in (50, 90, 99, 99.9)} | {"max": max(paced)}
        _say({"paced": overall, "seen": traffic.seen, "sent": len(traffic.sent_at)})
    finally:
        for task in tasks:
            task.cancel()
        await producer.stop()


# -- the soak: cluster, workers, faults, samples -------------------------------------------
class TrafficProcess:
    """The traffic process, its lines read by a thread into a queue."""

    def __init__(self, bootstrap: str, args: argparse.Namespace, log: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--traffic", bootstrap, str(args.seed), str(args.tenants), str(args.users),
             str(args.interval)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("ab"), text=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.expect("ready")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(orjson.loads(line))
        self.lines.put({"exited": self.proc.wait()})

    def tell(self, command: str) -> None:
        """Send the traffic process one command line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def expect(self, key: str, timeout_s: float = 600) -> dict[str, Any]:
        """The next line with ``key`` (interval lines met on the way are dropped)."""
        deadline = time.monotonic() + timeout_s
        while True:
            message = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if key in message:
                return message
            if "exited" in message:
                raise SystemExit(f"the traffic process exited with {message['exited']}")


def _rss_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the machine since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])
    return total - fields[3] - fields[4], total


class Soak:
    """The cluster, the workers (supervised) and the timeline of what happened."""

    def __init__(self, kafka: LocalKafka, workdir: Path, began: float) -> None:
        self.kafka, self.workdir, self.began = kafka, workdir, began
        self.workers: dict[str, Worker] = {}
        self.timeline: list[dict[str, Any]] = []
        self.restarting: threading.Thread | None = None

    def note(self, what: str) -> None:
        """Put ``what`` on the timeline (and print it)."""
        at = time.monotonic() - self.began
        self.timeline.append({"t_s": round(at, 1), "utc": f"{datetime.now(UTC):%H:%M:%S}", "what": what})
        print(f"  [{at:7.1f} s] {what}", flush=True)

    def start(self, name: str) -> None:
        """Start worker ``name`` (its folder kept across restarts, as a pod's volume)."""
        self.workers[name] = Worker(self.kafka.bootstrap, PREFIX, self.workdir / name,
                                    extra_env={"RATER_LOG_LEVEL": "info"}).start()

    def supervise(self) -> None:
        """Restart a worker that stopped by itself (as Kubernetes would)."""
        for name, worker in list(self.workers.items()):
            code = worker.proc.poll()
            if code is not None:
                why = _why(worker.log.read_text(errors="replace").splitlines())
                self.note(f"worker {name} exited by itself with {code} ({why}): restarted")
                self.start(name)

    def committed(self) -> tuple[int, int] | None:
        """(committed, end) of ``cdrs`` for the workers' group; None while unanswered."""
        try:
            return asyncio.run(asyncio.wait_for(
                committed_and_end(self.kafka.bootstrap, f"{PREFIX}rater", f"{PREFIX}cdrs", TEST_PARTITIONS), 15))
        except Exception:  # noqa: BLE001 - a broker away: the sample says so
            return None

    def drained(self, total: int) -> bool:
        """Whether the workers committed all ``total`` CDRs."""
        found = self.committed()
        return found is not None and found[0] == found[1] == total

    def wait(self, until: Any, timeout_s: float, what: str) -> None:
        """Wait until ``until()`` holds, supervising the workers meanwhile."""
        deadline = time.monotonic() + timeout_s
        while not until():
            self.supervise()
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}")
            time.sleep(0.5)

    # the faults
    def kill_worker(self, name: str, *, wipe: bool) -> None:
        """SIGKILL worker ``name`` and start it again (``wipe``: without its RocksDB folder)."""
        worker = self.workers[name]
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(timeout=30)
        if wipe:
            shutil.rmtree(worker.workdir / "data", ignore_errors=True)
        self.start(name)
        self.note(f"SIGKILL worker {name}, restarted" + (" with its RocksDB folder wiped" if wipe else ""))

    def join(self, name: str) -> None:
        """A worker joins the group."""
        self.start(name)
        self.note(f"worker {name} joins")

    def leave(self, name: str) -> None:
        """A worker leaves cleanly (SIGTERM)."""
        worker = self.workers.pop(name)
        began = time.monotonic()
        worker.stop()
        self.note(f"worker {name} leaves (SIGTERM; exited {worker.proc.returncode} after"
                  f" {time.monotonic() - began:.1f} s)")

    def kill_broker(self, index: int) -> None:
        """SIGKILL one broker node."""
        node = self.kafka.members[index]
        self.kafka.stop_node(node, kill=True)
        self.note(f"SIGKILL broker node {node.node_id}")

    def start_broker(self, index: int) -> None:
        """Start a killed broker node again (in a thread: the workers are supervised meanwhile)."""
        node = self.kafka.members[index]
        self.note(f"starting broker node {node.node_id} again")

        def restart() -> None:
            began = time.monotonic()
            self.kafka.start_node(node)
            self.note(f"broker node {node.node_id} back (the cluster answered after {time.monotonic() - began:.1f} s)")

        self.restarting = threading.Thread(target=restart, daemon=True)
        self.restarting.start()


def _why(log: list[str]) -> str:
    """Why a worker stopped: its log's last CRITICAL line (the driver's "the worker
    stopped: …"), else its last ERROR line of the rater's own, else its last ERROR line."""
    for level, source in ((" CRITICAL ", ""), (" ERROR ", "rater."), (" ERROR ", "")):
        found = [line.split(level, 1)[1] for line in log if level in line]
        found = [line for line in found if line.startswith(source)]
        if found:
            return found[-1][:240]
    return "no CRITICAL or ERROR line in its log"


def schedule(rng: random.Random, duration_s: float) -> list[tuple[float, str, Any]]:
    """The seeded faults: (seconds into the soak, kind, argument)."""
    kills = max(2, round(duration_s / 180))
    faults: list[tuple[float, str, Any]] = [
        (duration_s * (k + 0.5 + rng.uniform(-0.2, 0.2)) / kills, "kill", k % 2 == 1) for k in range(kills)]
    broker = rng.randrange(3)
    faults += [
        (duration_s * rng.uniform(0.12, 0.2), "join", "c"),
        (duration_s * rng.uniform(0.3, 0.4), "broker-kill", broker),
        (duration_s * rng.uniform(0.5, 0.6), "broker-start", broker),
        (duration_s * rng.uniform(0.7, 0.8), "leave", "c"),
    ]
    return sorted(faults, key=lambda f: f[0])


def _maximum(soak: Soak, traffic: TrafficProcess, count: int) -> float:
    """The workers' maximum rate: ``count`` CDRs filled as fast as the traffic can, the
    committed CDRs per second from the fill's end to the last one."""
    traffic.tell(f"fill {count}")
    filled = traffic.expect("filled")
    at_fill = time.monotonic()
    found = soak.committed()
    left = count - (found[0] if found and found[0] > 0 else 0)
    soak.wait(lambda: soak.drained(count), 900, "the saturation CDRs")
    took = time.monotonic() - at_fill
    rate = left / took
    print(f"maximum rate: {count:,} CDRs filled in {filled['s']:.1f} s; the workers rated the {left:,} left at the"
          f" fill's end in {took:.1f} s: {rate:,.0f} CDRs/s; load average {os.getloadavg()[0]:.1f}", flush=True)
    if left < count / 4:
        print("  (less than a quarter were left at the fill's end: a rough maximum)")
    return rate


def _sample(soak: Soak, message: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    """One interval's line: what the traffic saw, with committed rate, RSS and load."""
    now, ticks, found = time.monotonic(), _cpu_ticks(), soak.committed()
    busy = (ticks[0] - last["ticks"][0]) / max(1, ticks[1] - last["ticks"][1])
    committed = found[0] if found else None
    rate = None
    if committed is not None and last["committed"] is not None:
        rate = (committed - last["committed"]) / (now - last["at"])
    rss = {name: _rss_mb(w.proc.pid) for name, w in soak.workers.items()}
    lat = message["interval"]
    sample = {"t_s": round(now - soak.began, 1), "committed_per_s": rate, "committed": committed,
              "backlog": (found[1] - found[0]) if found else None, "sent": message["sent"], "latency_s": lat,
              "rss_mb": rss, "load1": os.getloadavg()[0], "cpu_busy": busy}
    shown_rate = f"{rate:7,.0f}/s" if rate is not None else "      ?/s"
    shown_lat = (f"p50 {lat['p50'] * 1000:6.0f} p99 {lat['p99'] * 1000:6.0f} max {lat['max'] * 1000:6.0f} ms"
                 if lat["count"] else "no rated CDRs seen")
    shown_rss = " ".join(f"{n} {m:.0f}" if m else f"{n} -" for n, m in sorted(rss.items()))
    print(f"  {sample['t_s']:7.1f} s  committed {shown_rate}  backlog {sample['backlog'] if found else '?':>7}"
          f"  latency {shown_lat}  RSS MB {shown_rss}  load {sample['load1']:.1f} CPU {busy:.0%}", flush=True)
    last.update(at=now, ticks=ticks, committed=committed if committed is not None else last["committed"])
    return sample


def _soak(soak: Soak, traffic: TrafficProcess, args: argparse.Namespace, rate: float) -> list[dict[str, Any]]:
    """Pace the traffic at ``rate`` for ``--minutes`` while the faults run; the samples."""
    duration_s = args.minutes * 60
    faults = schedule(random.Random(args.seed), duration_s)  # noqa: S311 - a reproducible schedule
    rng = random.Random(args.seed + 1)  # noqa: S311 - which worker a kill hits
    samples: list[dict[str, Any]] = []
    found = soak.committed()
    last = {"at": time.monotonic(), "ticks": _cpu_ticks(), "committed": found[0] if found else None}
    with contextlib.suppress(queue.Empty):
        while True:  # the traffic's lines of the maximum-rate phase
            traffic.lines.get_nowait()
    began = time.monotonic()
    soak.note(f"soak begins: {rate:,.0f} CDRs/s for {args.minutes} min")
    traffic.tell(f"pace {rate}")
    while time.monotonic() - began < duration_s:
        while faults and time.monotonic() - began >= faults[0][0]:
            _at, kind, arg = faults.pop(0)
            if kind == "kill":
                soak.kill_worker(rng.choice(sorted(soak.workers)), wipe=arg)
            elif kind == "join":
                soak.join(arg)
            elif kind == "leave":
                soak.leave(arg)
            elif kind == "broker-kill":
                soak.kill_broker(arg)
            else:
                soak.start_broker(arg)
        soak.supervise()
        with contextlib.suppress(queue.Empty):
            message = traffic.lines.get(timeout=0.5)
            if "exited" in message:
                raise SystemExit(f"the traffic process exited with {message['exited']}")
            if "interval" in message:
                samples.append(_sample(soak, message, last))
    traffic.tell("stop")
    soak.note("traffic stops")
    if soak.restarting is not None:
        soak.restarting.join(timeout=120)
    return samples


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=15.0, help="how long the traffic runs at half the maximum")
    parser.add_argument("--seed", type=int, default=20261204, help="the workload's and the faults' seed")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="the soak's CDRs/s (default: half the maximum measured first)")
    parser.add_argument("--saturation", type=int, default=60_000, help="CDRs of the maximum-rate phase")
    parser.add_argument("--interval", type=float, default=20.0, help="seconds between progress lines")
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=None, help="the run's folder (default: a new one in /tmp)")
    parser.add_argument("--keep-data", action="store_true", help="keep the brokers' data after a reconciled run")
    return parser.parse_args()


def _conclude(soak: Soak, traffic: TrafficProcess, samples: list[dict[str, Any]], rate: float,
              args: argparse.Namespace) -> dict[str, Any]:
    """Drain, stop the workers, reconcile, print and return the result."""
    sent = traffic.expect("stopped")["stopped"]
    soak.wait(lambda: soak.drained(sent), 1200, "the workers to drain every CDR")
    soak.note(f"every one of the {sent:,} CDRs committed")
    time.sleep(2)  # the probe reads the last rated CDRs
    traffic.tell("quit")
    paced = traffic.expect("paced")
    traffic.proc.wait(timeout=60)
    for name in sorted(soak.workers):
        soak.workers[name].stop()
    soak.note("workers stopped; reconciling")
    began = time.monotonic()
    found = asyncio.run(reconcile(soak.kafka.bootstrap, PREFIX, TEST_PARTITIONS,
                                  lambda line: print(f"  reconcile: {line}", flush=True)))
    problems = list(found.problems)
    if found.inputs["cdrs"] != sent:
        problems.append(f"{found.inputs['cdrs']} CDRs on the topic, {sent} sent")
    rates = [s["committed_per_s"] for s in samples if s["committed_per_s"] is not None]
    return {
        "seed": args.seed, "minutes": args.minutes, "rate": rate, "sent": sent, "paced_latency_s": paced["paced"],
        "committed_per_s_median": statistics.median(rates) if rates else None,
        "rss_mb_max": {n: max((s["rss_mb"].get(n) or 0) for s in samples) for n in ("a", "b", "c")},
        "inputs": dict(found.inputs), "rated": found.seen.rated, "dead_letters": dict(found.seen.dead),
        "charged_minor": dict(found.seen.charged_minor), "charged_minor_independent": dict(found.want.charged_minor),
        "debited_minor": dict(found.seen.debited_minor), "state_records": found.state_keys,
        "reconcile_s": round(time.monotonic() - began, 1), "problems": problems,
        "timeline": soak.timeline, "samples": samples,
    }


def _print(result: dict[str, Any]) -> None:
    lat = result["paced_latency_s"]
    print(f"\nsoak {result['minutes']} min at {result['rate']:,.0f} CDRs/s offered; {result['sent']:,} CDRs in all;"
          f" committed per interval median {result['committed_per_s_median'] or 0:,.0f}/s")
    if lat["count"]:
        print(f"latency produce → rated_cdr (read_committed), the soak's {lat['count']:,} CDRs: p50"
              f" {lat['p50'] * 1000:,.0f} ms, p90 {lat['p90'] * 1000:,.0f}, p99 {lat['p99'] * 1000:,.0f},"
              f" p99.9 {lat['p99.9'] * 1000:,.0f}, max {lat['max'] * 1000:,.0f} ms")
    print(f"worker RSS max (MB): {result['rss_mb_max']}")
    print(f"inputs read back {result['inputs']}; rated {result['rated']:,}; dead letters {result['dead_letters']};"
          f" state records compared {result['state_records']:,}; reconciled in {result['reconcile_s']} s")
    print("charged, minor units per currency: the rated CDRs read_committed = the independent run"
          " (and what the CDRs debited from prepaid lots)")
    for currency in sorted(result["charged_minor"]):
        seen, want = result["charged_minor"][currency], result["charged_minor_independent"].get(currency)
        print(f"  {currency}: {seen:,} {'=' if seen == want else '!='} {want:,}"
              f"  (lots debited {result['debited_minor'].get(currency, 0):,})")
    print("timeline:")
    for event in result["timeline"]:
        print(f"  {event['t_s']:7.1f} s  {event['utc']}  {event['what']}")
    if result["problems"]:
        print("\nNOT RECONCILED:\n  " + "\n  ".join(result["problems"]))
    else:
        print("\nRECONCILED: every CDR rated exactly once; outputs and state byte-equal to the independent run;"
              " money equal to the minor unit")


def main() -> None:
    args = _arguments()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a broker away is in the timeline, not a trace
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"rater-soak-{args.seed}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"soak, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()} ({platform.machine()}, {os.cpu_count()}"
          f" CPUs, Python {platform.python_version()}); seed {args.seed}; {args.minutes} min; folder {workdir};"
          f" load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"  command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    kafka = LocalKafka(nodes=3, workdir=workdir / "kafka")
    kafka.start()
    result: dict[str, Any] = {}
    soak = Soak(kafka, workdir, time.monotonic())
    try:
        soak.note(f"3 brokers up at {kafka.bootstrap}")
        create_topics(kafka.bootstrap, PREFIX)
        load = Workload(args.tenants, args.users, seed=args.seed)
        setup = [(topic, orjson.dumps(e), partition_of(e["tenant_id"], TEST_PARTITIONS)) for topic, e in load.setup()]
        asyncio.run(produce_values(kafka.bootstrap, PREFIX, setup))
        for name in ("a", "b"):
            soak.start(name)
        soak.wait(lambda: soak.committed() is not None and _applied(kafka.bootstrap), 240, "the setup commands")
        soak.note(f"{len(setup):,} setup commands applied by workers a and b")
        traffic = TrafficProcess(kafka.bootstrap, args, workdir / "traffic.log")
        rate = args.rate or _maximum(soak, traffic, args.saturation) / 2
        samples = _soak(soak, traffic, args, rate)
        result = _conclude(soak, traffic, samples, rate, args)
        (workdir / "soak.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        _print(result)
    finally:
        for worker in soak.workers.values():
            worker.stop()
        kafka.stop()
        if result and not result["problems"] and not args.keep_data:
            for node in kafka.members:
                shutil.rmtree(node.workdir / "data", ignore_errors=True)
                shutil.rmtree(node.workdir / "meta", ignore_errors=True)
    print(f"the run's folder: {workdir}")
    if not result or result["problems"]:
        raise SystemExit(1)


def _applied(bootstrap: str) -> bool:
    done, end = asyncio.run(committed_and_end(bootstrap, f"{PREFIX}rater", f"{PREFIX}account-commands",
                                              TEST_PARTITIONS))
    return done == end


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--traffic":
        _bootstrap, _seed, _tenants, _users, _interval = sys.argv[2:]
        asyncio.run(_traffic(_bootstrap, int(_seed), int(_tenants), int(_users), float(_interval)))
    else:
        main()
