"""A partition's "now" (SPEC §1.5, §1.6): the later of its latest tick and its latest
accepted CDR end time. A CDR ending more than ``future_us`` after the latest tick is
refused (``future``), so one bogus date cannot expire every lot.
"""

from __future__ import annotations

from dataclasses import dataclass

from rater.core.context import RatingContext
from rater.core.times import format_time_us


@dataclass(frozen=True, slots=True)
class PartitionClock:
    """The time one input partition has reached in its own input."""

    tick_us: int | None = None
    """The latest tick (the shell's wall clock carried into the stream); None before the first."""
    now_us: int = 0

    def tick(self, at_us: int) -> PartitionClock:
        """A tick arrived; time never goes back."""
        tick = at_us if self.tick_us is None else max(self.tick_us, at_us)
        return PartitionClock(tick, max(self.now_us, tick))

    def refuses(self, end_us: int, ctx: RatingContext) -> str | None:
        """Why a CDR ending at ``end_us`` is ``future``, or None. Before the first tick
        there is no wall clock to compare with, and nothing is refused."""
        if self.tick_us is not None and end_us > self.tick_us + ctx.future_us:
            return (f"CDR ends at {format_time_us(end_us)}, more than {ctx.future_us // 3_600_000_000} h"
                    f" after the partition's latest tick {format_time_us(self.tick_us)}")
        return None

    def accept(self, end_us: int) -> PartitionClock:
        """A CDR ending at ``end_us`` was accepted by the core."""
        return PartitionClock(self.tick_us, max(self.now_us, end_us))
