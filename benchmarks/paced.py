"""What the benchmarks that load real workers share: a paced CDR sender *process*, the
workers' committed count and rate, and how busy the machine was.

``benchmarks/authorize.py`` and ``benchmarks/latency.py`` import it (run as scripts, the
``benchmarks`` folder is on their path). The sender is a process of its own, not a
thread: a measuring client in the same process would wait for its GIL.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from streaming import committed  # a sibling script

from rater.workload import Workload
from tests.support import TEST_PARTITIONS

STEP_S = 0.005
"""The sender's pacing step."""


# -- the sender process -------------------------------------------------------------------
def cdrs(start: str, first: int, count: int, *, tenants: int, users: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of CDRs ``first`` to ``first + count`` of the run's workload (usage
    ids ``{tenant}/cdr/{n}`` numbered from ``first``: no phase repeats another's)."""
    load = Workload(tenants=tenants, users=users, start=start)
    made = []
    for n, cdr in enumerate(load.cdrs(count, per_second=2000.0), start=first):
        cdr["usage_id"] = cdr["event_id"] = f"{cdr['tenant_id']}/cdr/{n}"
        made.append((cdr["tenant_id"].encode(), orjson.dumps(cdr)))
    return made


async def _send(bootstrap: str, topic: str, made: list[tuple[bytes, bytes]], rate: float, *, linger_ms: int,
                stamps: Path | None) -> None:
    """Send ``made`` — as fast as possible (``rate`` 0) or paced at ``rate`` per second
    until SIGTERM —, then print ``sent N S`` (records, seconds). With ``stamps``, each
    record's produce time (this host's clock, ns) is its Kafka timestamp (ms) and is
    written to that file (int64 per record, in order) at the end."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415 - the sender's own import

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms,
                                max_batch_size=256 * 1024, enable_idempotence=True)
    await producer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    produced = array.array("q")
    print("ready", flush=True)
    sent, began = 0, time.monotonic()

    async def send(key: bytes, value: bytes) -> None:
        if stamps is None:
            await producer.send(topic, value, key=key)
            return
        now_ns = time.time_ns()
        produced.append(now_ns)
        await producer.send(topic, value, key=key, timestamp_ms=now_ns // 1_000_000)

    try:
        if rate <= 0:
            for key, value in made:
                await send(key, value)
            sent = len(made)
        else:
            while not stop.is_set() and sent < len(made):
                due = min(len(made), int(rate * (time.monotonic() - began)))
                for key, value in made[sent:due]:
                    await send(key, value)
                sent = max(sent, due)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), STEP_S)
        await producer.flush()
    finally:
        await producer.stop()
    if stamps is not None:
        stamps.write_bytes(produced.tobytes())
    print(f"sent {sent} {time.monotonic() - began:.3f}", flush=True)


def sender_main(argv: list[str]) -> None:
    """The sender process's ``main`` (``--sender`` and the arguments :class:`Sender` gives)."""
    bootstrap, topic, start, first, count, rate, tenants, users, linger_ms, stamps = argv
    made = cdrs(start, int(first), int(count), tenants=int(tenants), users=int(users))
    asyncio.run(_send(bootstrap, topic, made, float(rate), linger_ms=int(linger_ms),
                      stamps=Path(stamps) if stamps != "-" else None))


class Sender:
    """A sender process: started, it makes its CDRs and says ``ready``."""

    def __init__(self, bootstrap: str, topic: str, start: str, *, first: int, count: int, rate: float,
                 tenants: int, users: int, linger_ms: int = 5, stamps: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--sender", bootstrap, topic, start, str(first), str(count), str(rate),
             str(tenants), str(users), str(linger_ms), str(stamps) if stamps is not None else "-"],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise SystemExit(f"the sender did not start: {line!r}")

    def finish(self, *, stop: bool, timeout_s: float = 120) -> tuple[int, float]:
        """(records sent, seconds), once it ended (``stop``: told to)."""
        if stop:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=timeout_s)
        words = out.split()
        if self.proc.returncode or len(words) != 3 or words[0] != "sent":
            raise SystemExit(f"the sender failed ({self.proc.returncode}): {out!r}")
        return int(words[1]), float(words[2])


# -- the workers' progress ----------------------------------------------------------------
def committed_cdrs(bootstrap: str, prefix: str) -> int:
    """CDRs the workers of ``prefix`` committed."""
    return asyncio.run(committed(bootstrap, f"{prefix}rater", f"{prefix}cdrs", TEST_PARTITIONS))


def caught_up(bootstrap: str, prefix: str, total: int, timeout_s: float = 600) -> float:
    """Wait until the workers committed ``total`` CDRs; when it happened (monotonic)."""
    deadline = time.monotonic() + timeout_s
    while (done := committed_cdrs(bootstrap, prefix)) < total:
        if time.monotonic() > deadline:
            raise SystemExit(f"the workers committed {done} of {total} CDRs in {timeout_s:.0f} s")
        time.sleep(0.05)
    return time.monotonic()


def saturate(bootstrap: str, prefix: str, start: str, total: int, pids: list[int], *, tenants: int,
             users: int) -> float:
    """The workers' maximum rate: ``total`` CDRs filled as fast as a producer can, the
    committed records per second from the fill's end to the last one."""
    filler = Sender(bootstrap, f"{prefix}cdrs", start, first=0, count=total, rate=0, tenants=tenants, users=users)
    filled, fill_s = filler.finish(stop=False)
    at_fill, backlog, cpu = time.monotonic(), committed_cdrs(bootstrap, prefix), cpu_times(pids)
    done_at = caught_up(bootstrap, prefix, total)
    measured = (total - backlog) / (done_at - at_fill)
    print(f"  saturation: {filled} CDRs filled in {fill_s:.1f} s; the rater rated the {total - backlog}"
          f" left at the fill's end in {done_at - at_fill:.1f} s: {measured:,.0f} CDRs/s;"
          f" {busy(cpu, cpu_times(pids))}", flush=True)
    if total - backlog < total / 4:
        print("  (less than a quarter of the CDRs were left at the fill's end: a rough maximum)")
    return measured


# -- the machine ----------------------------------------------------------------------------
def cpu_times(pids: list[int]) -> tuple[float, float, float]:
    """(CPU seconds the machine has been busy, its CPU seconds in all — both summed over
    its CPUs, from /proc/stat —, CPU seconds of the processes ``pids``)."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    total = sum(fields[:8])  # up to steal (guest time is counted in user already)
    own = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own += int(stat[11]) + int(stat[12])  # utime, stime
    return (total - idle) / tick, total / tick, own / tick


def busy(before: tuple[float, float, float], after: tuple[float, float, float], who: str = "the workers") -> str:
    """How busy the machine was between two :func:`cpu_times` readings, and ``who``'s share."""
    used, total, own = (b - a for a, b in zip(before, after, strict=True))
    cpus = os.cpu_count() or 1
    return (f"machine {used / total:.0%} busy ({used / total * cpus:.2f} of {cpus} CPUs), of it {who}"
            f" {own / total * cpus:.2f} CPUs; load average {os.getloadavg()[0]:.1f}")


def brokers() -> list[int]:
    """The local broker's JVMs: this process's descendants running ``kafka.Kafka``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            with contextlib.suppress(OSError):
                if b"kafka.Kafka" in (Path("/proc") / str(child) / "cmdline").read_bytes():
                    found.append(child)
    return found


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0–1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


if __name__ == "__main__":
    if sys.argv[1:2] != ["--sender"]:
        raise SystemExit("benchmarks/paced.py is the benchmarks' sender process (--sender ...), not a benchmark")
    sender_main(sys.argv[2:])
