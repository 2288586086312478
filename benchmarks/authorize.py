"""Authorize latency (issue 13): ``POST /v1/authorize`` p50/p99/max on workers that are
rating at half the maximum rate measured in the same run.

    .venv/bin/python benchmarks/authorize.py [--requests N] [--rounds N] [--max-rate CDRS_PER_S]

Two real ``rater worker`` processes (production tick interval) on one broker (a fresh
local one, or ``KAFKA_BOOTSTRAP``) share the 4 partitions of seeded workload tenants
(rater/workload.py). Then, in one run:

1. **saturation** — ``--saturation`` CDRs are put on ``cdrs`` as fast as a producer can
   and the two workers rate the backlog; the maximum rate is the committed records per
   second from the end of the fill to the last one (the workers alone on the machine,
   as ``benchmarks/streaming.py`` times them), unless ``--max-rate`` gives it;
2. **idle** — authorize requests, one at a time, to a tenant's owner (direct) and to the
   other worker (forwarded, one hop), nothing being rated;
3. **loaded** — a sender *process* (not a thread: the measuring client would wait for
   its GIL) paces fresh CDRs at half the maximum rate, in 5 ms steps, while the same
   series run again. The rate the workers committed during the series is measured
   (the consumer group's committed offsets) and printed beside the asked one; a run
   where it fell short by more than 10 % says so.

Series alternate direct and forwarded, ``--rounds`` times each, so the VM's drift weighs
on both. Prints p50/p99/max per series and pooled, with the machine and the date, and for
each phase how busy the machine's CPUs were (/proc/stat) and how much of it the two
workers were: on a shared VM, other jobs' CPU shows as the difference (a worker waiting
for a CPU answers late whatever its event loop does). Target: p99 < 5 ms under load.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import paced
from paced import Sender, brokers, caught_up, committed_cdrs, cpu_times, percentile, saturate

from rater.localkafka import broker_for_tests
from rater.workload import Workload
from tests.support import TEST_PARTITIONS, Worker, create_topics, send_events

TENANTS, USERS = 50, 1000


# -- the measuring side -------------------------------------------------------------------
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


def _owner(url: str, body: bytes) -> str:
    """The URL of the worker that answers for the benchmark's tenant (once its account
    is applied: 404 before)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return _post(url + "/v1/authorize", body)[1]
        except urllib.error.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _settle(workers: list[Worker]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for worker in workers:
            worker.check_alive()  # a worker that stopped says why (its log's tail)
        states = [_get(w.url + "/readyz") for w in workers]
        if all(s == 200 and b.get("partitions") for s, b in states):
            return
        time.sleep(0.2)
    raise SystemExit(f"the workers never shared the partitions: {states}")


def _series(urls: dict[str, str], body: bytes, requests: int, rounds: int) -> dict[str, list[list[float]]]:
    """Per route (direct, forwarded), ``rounds`` series of ``requests`` latencies (ms),
    the routes alternating."""
    found: dict[str, list[list[float]]] = {name: [] for name in urls}
    for _ in range(rounds):
        for name, url in urls.items():
            found[name].append([_post(url + "/v1/authorize", body)[0] for _ in range(requests)])
    return found


def _busy(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    return paced.busy(before, after, "the two workers")


def _show(phase: str, found: dict[str, list[list[float]]]) -> None:
    for name, series in found.items():
        pooled = [t for one in series for t in one]
        each = ", ".join(f"{percentile(one, 0.99):.2f}" for one in series)
        print(f"  {phase:6} {name:9}  p50 {statistics.median(pooled):6.2f} ms   p99 {percentile(pooled, 0.99):6.2f} ms"
              f"   max {max(pooled):7.2f} ms   (p99 of each series: {each})", flush=True)


def _forwarding(phases: dict[str, dict[str, list[list[float]]]]) -> None:
    """What the hop adds: forwarded − direct, p50 and p99, per phase."""
    for phase, found in phases.items():
        direct = [t for one in found["direct"] for t in one]
        forwarded = [t for one in found["forwarded"] for t in one]
        print(f"  forwarding adds, {phase}: p50 {statistics.median(forwarded) - statistics.median(direct):+.2f}"
              f" ms, p99 {percentile(forwarded, 0.99) - percentile(direct, 0.99):+.2f} ms")


def _nice(pids: list[int], level: int) -> None:
    """Run ``pids`` at nice ``level`` (0: leave them be)."""
    if level:
        for pid in pids:
            os.setpriority(os.PRIO_PROCESS, pid, level)
        print(f"  the broker ({len(pids) - 1} JVM) and the sender run at nice {level}", flush=True)


def _loop_env(directory: str | None) -> dict[str, str]:
    """A worker's environment for :mod:`benchmarks/loopstat` (none without ``directory``)."""
    if directory is None:
        return {}
    here = str(Path(__file__).resolve().parent / "loopstat")
    return {"PYTHONPATH": os.pathsep.join(filter(None, (here, os.environ.get("PYTHONPATH")))),
            "RATER_LOOPSTAT_DIR": directory}


def _loop_begin(pids: list[int], directory: str | None) -> None:
    """Start the workers' loop counts afresh."""
    if directory is not None:
        for pid in pids:
            os.kill(pid, signal.SIGUSR1)


def _loop_show(phase: str, pids: list[int], directory: str | None) -> None:
    """Print what the workers' loops counted since :func:`_loop_begin`."""
    if directory is None:
        return
    files = [Path(directory) / f"loopstat.{pid}.json" for pid in pids]
    for found in files:
        found.unlink(missing_ok=True)
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 10
    while not all(found.exists() for found in files) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # written whole: a few KB
    for name, found in zip("ab", files, strict=True):
        stat = orjson.loads(found.read_bytes())
        cpu = stat["cpu_ms"]
        print(f"  {phase:6} worker {name}: {stat['steps']:,} loop steps, CPU a step p50 {cpu['p50']:.1f} / p99"
              f" {cpu['p99']:.1f} / p99.9 {cpu['p99.9']:.1f} / max {cpu['max']:.1f} ms")
        for where, count, total, longest in stat["long"][:6]:
            print(f"      {count:5} steps over 1.5 ms of CPU, {total:7.1f} ms in all, longest {longest:5.1f} ms:"
                  f" {where}")
        wall = stat["wall_ms"]
        print(f"      wall time a step p50 {wall['p50']:.1f} / p99 {wall['p99']:.1f} / p99.9 {wall['p99.9']:.1f} / max"
              f" {wall['max']:.1f} ms; the steps over 1.5 ms of wall time:")
        for where, count, total, longest, cpu_total in stat["long_wall"][:6]:
            print(f"      {count:5} steps, {total:7.1f} ms in all ({cpu_total:.1f} ms of CPU), longest"
                  f" {longest:5.1f} ms: {where}")


def _request(load: Workload) -> bytes:
    """The authorize request the series send: a call of the first tenant's first user."""
    tenant = load.tenants[0]
    user, location = tenant.users[0]
    return orjson.dumps({"tenant_id": tenant.tenant_id, "user_id": user, "call_type": "user_out",
                         "number_type": "geographic", "destination": "+12125550123", "user_location": location})


def _nice_workers(pids: list[int], level: int, *, realtime: bool) -> None:
    """Run the workers ``pids`` and this measuring client at nice ``level`` (0: leave them
    be), or their main threads (the event loops) as real-time (SCHED_FIFO) threads."""
    if level:
        for pid in (*pids, os.getpid()):
            os.setpriority(os.PRIO_PROCESS, pid, level)
        print(f"  the workers and the measuring client run at nice {level}", flush=True)
    if realtime:
        for pid in (*pids, os.getpid()):
            os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(1))
        print("  the workers' and the measuring client's main threads run SCHED_FIFO: a CPU whenever they want one",
              flush=True)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000, help="authorize requests per series")
    parser.add_argument("--rounds", type=int, default=2, help="series per route and phase (alternating routes)")
    parser.add_argument("--saturation", type=int, default=150_000, help="CDRs of the saturation phase")
    parser.add_argument("--max-rate", type=float, default=0.0,
                        help="the workers' maximum CDRs/s (default: measured by the saturation phase)")
    parser.add_argument("--load", type=float, default=0.5, help="the loaded phase's rate, a fraction of the maximum")
    parser.add_argument("--nice-others", type=int, default=0, metavar="N",
                        help="run the broker and the sender at this nice level, as if they ran on other machines"
                             " (in production they do): the workers then have the CPUs first (default 0: all equal)")
    parser.add_argument("--worker-nice", type=int, default=0, metavar="N",
                        help="run the workers and this measuring client at nice N (negative: needs root or"
                             " CAP_SYS_NICE), as if each had the CPU it asked for (a Kubernetes pod with its CPU"
                             " reserved); default 0: the machine's other jobs compete with them on equal terms")
    parser.add_argument("--worker-realtime", action="store_true",
                        help="run the workers' and this client's main threads SCHED_FIFO (needs root or CAP_SYS_NICE):"
                             " as if each had a core of its own, whatever else the machine runs")
    parser.add_argument("--loop-profile", action="store_true",
                        help="time every step of the workers' event loops (benchmarks/loopstat) and print, per"
                             " phase, the CPU a step took (p50, p99, p99.9, max) and where the longest ones were")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    print(f"authorize latency, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()} ({platform.machine()},"
          f" {os.cpu_count()} CPUs, Python {platform.python_version()}), 2 workers, {TEST_PARTITIONS} partitions,"
          f" {args.rounds} × {args.requests} requests per route and phase", flush=True)
    with broker_for_tests() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        loops = tmp if args.loop_profile else None
        prefix = f"bauthz{uuid.uuid4().hex[:6]}."
        topic = f"{prefix}cdrs"
        create_topics(bootstrap, prefix)
        workers = [Worker(bootstrap, prefix, Path(tmp) / name,
                          extra_env={"RATER_TICK_INTERVAL": "1", "RATER_LOG_LEVEL": "warn", **_loop_env(loops)}).start()
                   for name in ("a", "b")]
        try:
            start = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            load = Workload(tenants=TENANTS, users=USERS, start=start)
            send_events(bootstrap, prefix, list(load.setup()))
            _settle(workers)
            body = _request(load)
            owner = _owner(workers[0].url, body)
            urls = {"direct": owner, "forwarded": next(w.url for w in workers if w.url != owner)}

            pids = [w.proc.pid for w in workers]
            _nice_workers(pids, args.worker_nice, realtime=args.worker_realtime)
            total = 0 if args.max_rate else args.saturation
            max_rate = args.max_rate or saturate(bootstrap, prefix, start, total, pids, tenants=TENANTS, users=USERS)

            cpu = cpu_times(pids)
            _loop_begin(pids, loops)
            idle = _series(urls, body, args.requests, args.rounds)
            print(f"  idle: {_busy(cpu, cpu_times(pids))}")
            _show("idle", idle)
            _loop_show("idle", pids, loops)

            rate = max_rate * args.load
            duration_s = 15 + args.rounds * args.requests * 2 * 0.015  # more than the series take
            sender = Sender(bootstrap, topic, start, first=total, count=int(rate * duration_s), rate=rate,
                            tenants=TENANTS, users=USERS)
            _nice([*brokers(), sender.proc.pid], args.nice_others)
            caught_up(bootstrap, prefix, total + int(rate * 3))  # 3 s of traffic rated: the workers are loaded
            first_at, first, cpu = time.monotonic(), committed_cdrs(bootstrap, prefix), cpu_times(pids)
            _loop_begin(pids, loops)
            loaded = _series(urls, body, args.requests, args.rounds)
            last_at, last, busy = time.monotonic(), committed_cdrs(bootstrap, prefix), _busy(cpu, cpu_times(pids))
            sent, sent_s = sender.finish(stop=True)
            if sent >= int(rate * duration_s):
                raise SystemExit("the sender ran out of CDRs before the series ended: raise duration_s")
            achieved = (last - first) / (last_at - first_at)
            print(f"  loaded: asked {rate:,.0f} CDRs/s ({args.load:.0%} of {max_rate:,.0f}); the sender sent"
                  f" {sent / sent_s:,.0f}/s; the workers committed {achieved:,.0f}/s while the series ran"
                  f" ({last_at - first_at:.0f} s); {busy}", flush=True)
            if achieved < 0.9 * rate:
                print("  THE WORKERS FELL SHORT of the asked rate by more than 10 %: not a half-load run")
            _show("loaded", loaded)
            _loop_show("loaded", pids, loops)
            _forwarding({"idle": idle, "loaded": loaded})
            print("  target: p99 < 5 ms under load")
        finally:
            for worker in workers:
                worker.stop()


if __name__ == "__main__":
    main()
