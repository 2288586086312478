"""The simulators' live totals: a rich table redrawn in place on a terminal, a plain line
every few seconds when the output is piped or logged (``docker compose logs``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

from rich.console import Console
from rich.live import Live
from rich.table import Table

Rows = list[tuple[str, str]]


class RateMeter:
    """Messages per second over the last ``window_s`` seconds, from samples of a running
    total taken whenever the display draws."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def rate(self, now_s: float, total: int) -> float | None:
        """The rate ending at ``now_s``, given the total at that moment (None until a
        second sample)."""
        self.samples.append((now_s, total))
        while len(self.samples) > 2 and now_s - self.samples[1][0] >= self.window_s:
            self.samples.popleft()
        first_s, first = self.samples[0]
        return (total - first) / (now_s - first_s) if now_s > first_s else None


def per_s(rate: float | None) -> str:
    """A rate for the display (``…`` while not known yet)."""
    return "…" if rate is None else f"{rate:.1f}/s"


def _table(title: str, rows: Rows) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, value in rows:
        table.add_row(name, value)
    return table


def plain_line(title: str, rows: Rows) -> str:
    """One line of ``name value`` pairs."""
    return f"{title}: " + "  ".join(f"{name.strip()} {value}" for name, value in rows)


async def show(title: str, rows: Callable[[], Rows], stop: asyncio.Event, *, interval_s: float,
               console: Console | None = None) -> None:
    """Show ``rows()`` until ``stop`` is set: live on a terminal (4 redraws a second), else a
    line every ``interval_s`` seconds. The last state stays on screen."""
    console = console or Console()
    if console.is_terminal:
        with Live(_table(title, rows()), console=console, refresh_per_second=4) as live:
            while not stop.is_set():
                await wait_or_stop(stop, 0.25)
                live.update(_table(title, rows()))
        return
    next_s = time.monotonic() + interval_s
    while not stop.is_set():
        await wait_or_stop(stop, max(0.0, next_s - time.monotonic()))
        if not stop.is_set():
            print(plain_line(title, rows()), file=console.file, flush=True)
            next_s += interval_s


async def wait_or_stop(stop: asyncio.Event, timeout_s: float) -> None:
    """Sleep ``timeout_s`` seconds, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout_s)
