"""How long a worker's event loop is busy with one thing (benchmarks only, never the product).

Put this directory on ``PYTHONPATH`` of a ``rater worker`` (``benchmarks/authorize.py
--loop-profile`` does) and every step the event loop runs — a callback, or a task's step
from one ``await`` to the next — is timed, in wall time and in the thread's CPU time.
A request that reaches the worker during a step waits for its end, so the longest steps
bound what the loop adds to an API request's latency. CPU time is what the worker's own
code costs; wall time also counts the time its thread waited for a CPU (on a busy
machine, most of it).

``SIGUSR1`` starts a count afresh (a benchmark sends it when its measured phase begins);
``SIGUSR2`` writes what was counted since to ``$RATER_LOOPSTAT_DIR/loopstat.PID.json``:
the number of steps, the CPU-time percentiles of steps, and the steps over 1.5 ms of CPU
by where they started and ended (function:line of the innermost coroutine frame).
Not imported into anything else: a process without the variable is not touched.
"""

from __future__ import annotations

import asyncio.events
import collections
import json
import os
import signal
import time
from typing import Any

_DIR = os.environ.get("RATER_LOOPSTAT_DIR")
LONG_S = 0.0015


def _where(handle: asyncio.events.Handle) -> str:
    task = getattr(handle._callback, "__self__", None)
    if not isinstance(task, asyncio.Task):
        return getattr(handle._callback, "__qualname__", type(handle._callback).__name__)
    coro: Any = task.get_coro()
    last = coro.__qualname__ if coro is not None else "?"
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            last = f"{frame.f_code.co_qualname}:{frame.f_lineno}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return last


class _Stat:
    def __init__(self) -> None:
        self.cpu_us: collections.Counter[int] = collections.Counter()  # CPU of a step, 100 µs buckets
        self.wall_us: collections.Counter[int] = collections.Counter()  # wall time of a step, 100 µs buckets
        self.long: dict[str, list[float]] = {}  # "from → to": [count, CPU ms sum, CPU ms max]
        self.long_wall: dict[str, list[float]] = {}  # "from → to": [count, wall ms sum, wall ms max, CPU ms sum]
        self.steps = 0

    def dump(self) -> None:
        total = self.steps

        def pct(counts: collections.Counter[int], q: float) -> float:
            seen = 0
            for bucket, count in sorted(counts.items()):
                seen += count
                if seen >= q * total:
                    return (bucket + 1) / 10
            return 0.0

        def summary(counts: collections.Counter[int]) -> dict[str, float]:
            return {"p50": pct(counts, 0.5), "p99": pct(counts, 0.99), "p99.9": pct(counts, 0.999),
                    "max": (max(counts) + 1) / 10 if counts else 0.0}

        found = {
            "pid": os.getpid(), "steps": total,
            "cpu_ms": summary(self.cpu_us), "wall_ms": summary(self.wall_us),
            "long": sorted(([where, int(n), round(s, 1), round(m, 1)] for where, (n, s, m) in self.long.items()),
                           key=lambda row: -row[2])[:15],
            "long_wall": sorted(([where, int(n), round(s, 1), round(m, 1), round(c, 1)]
                                 for where, (n, s, m, c) in self.long_wall.items()), key=lambda row: -row[2])[:15],
        }
        with open(os.path.join(_DIR or ".", f"loopstat.{os.getpid()}.json"), "w") as out:
            json.dump(found, out)


def _install() -> None:
    stat = [_Stat()]
    run = asyncio.events.Handle._run

    def timed(handle: asyncio.events.Handle) -> None:
        began = _where(handle)
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            run(handle)
        finally:
            used, took = time.thread_time() - cpu, time.perf_counter() - wall
            now = stat[0]
            now.steps += 1
            now.cpu_us[int(used * 10_000)] += 1
            now.wall_us[int(took * 10_000)] += 1
            if took > LONG_S:
                row = now.long_wall.setdefault(f"{began} → {_where(handle)}", [0, 0.0, 0.0, 0.0])
                row[0] += 1
                row[1] += took * 1000
                row[2] = max(row[2], took * 1000)
                row[3] += used * 1000
            if used > LONG_S:
                row = now.long.setdefault(f"{began} → {_where(handle)}", [0, 0.0, 0.0])
                row[0] += 1
                row[1] += used * 1000
                row[2] = max(row[2], used * 1000)

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, lambda *_: stat.__setitem__(0, _Stat()))
    signal.signal(signal.SIGUSR2, lambda *_: stat[0].dump())


if _DIR:
    _install()
