"""The broker's wall clock as a worker estimates it (issue 11): the time a worker's ticks
carry and its records are stamped with, whatever the host's own clock says.

Kafka 4 refuses a record stamped more than ``log.message.timestamp.after.max.ms`` (1 h by
default) ahead of the broker's clock — on a ``CreateTime`` topic. The internal
``rater-ticks`` topic is ``LogAppendTime``: the broker stamps each record with its own
clock, checks nothing of the producer's, and sends its stamp back in the produce
acknowledgement. Each tick (and a probe at start) is therefore a measurement: the
broker's clock read somewhere between the send and the acknowledgement, taken to be
their midpoint — wrong by at most half the round trip.

The estimate runs on the host's *monotonic* clock from the latest measurement on: the
broker's time then plus the monotonic time elapsed since. A step of the host's wall
clock (an NTP correction, an operator's ``date -s``) changes nothing until the next
tick measures it, and even then only what is logged: the time the worker uses never
came from the host's wall clock. The host's wall clock serves only to say how far it
is off (``offset_ms``, broker − host) and to stand in before the first measurement.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("rater.clock")

SKEW_WARNING_MS = 60_000
"""A host clock this far off the broker's is worth a warning (once)."""
SKEW_CLEARED_MS = 30_000
"""... and back within this, worth saying so (then a new warning may follow)."""


@dataclass(frozen=True, slots=True)
class Sent:
    """When a measured record was sent: the host's wall and monotonic clocks, in ns."""

    wall_ns: int
    mono_ns: int


class BrokerClock:
    """The broker's wall clock, estimated from the append times of measured records."""

    def __init__(self, wall_ns: Callable[[], int] = time.time_ns, mono_ns: Callable[[], int] = time.monotonic_ns,
                 *, source: str = "rater-ticks") -> None:
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        self.source = source
        """What the measurements are made on (named in the log)."""
        self._anchor: tuple[int, int] | None = None
        """(the broker's time in ms, the host's monotonic clock in ns at that moment)."""
        self.offset_ms: float | None = None
        """broker − host wall clock at the latest measurement; None before the first."""
        self.round_trip_ms: float | None = None
        """The latest measurement's round trip: twice its largest possible error."""
        self.warned = False

    def sending(self) -> Sent:
        """Read the host's clocks just before a measured record is sent."""
        return Sent(self._wall_ns(), self._mono_ns())

    def measured(self, sent: Sent, broker_ms: int) -> None:
        """The broker acknowledged a record sent at ``sent`` and stamped it ``broker_ms``
        (its log append time): that was the broker's clock at about the midpoint."""
        round_trip_ns = max(0, self._mono_ns() - sent.mono_ns)
        mid_mono_ns = sent.mono_ns + round_trip_ns // 2
        mid_wall_ms = (sent.wall_ns + round_trip_ns // 2) / 1e6
        first = self._anchor is None
        self._anchor = (broker_ms, mid_mono_ns)
        self.offset_ms = broker_ms - mid_wall_ms
        self.round_trip_ms = round_trip_ns / 1e6
        self._report(first)

    def now_us(self) -> int:
        """The broker's clock now, in µs since the epoch (the host's before the first
        measurement)."""
        if self._anchor is None:
            return self._wall_ns() // 1000
        broker_ms, mono_ns = self._anchor
        return broker_ms * 1000 + (self._mono_ns() - mono_ns) // 1000

    def now_ms(self) -> int:
        """:meth:`now_us` in ms: a record timestamp."""
        return self.now_us() // 1000

    def _report(self, first: bool) -> None:
        assert self.offset_ms is not None
        offset = self.offset_ms
        if first:
            log.info("broker clock − host clock: %+.3f s (measured on %s, round trip %.1f ms); ticks and"
                     " records carry the broker's time", offset / 1000, self.source, self.round_trip_ms or 0.0)
        if not self.warned and abs(offset) >= SKEW_WARNING_MS:
            self.warned = True
            log.warning("this host's clock is %.1f s %s the broker's: the worker ticks and stamps its records"
                        " with the broker's time (measured on every tick) and goes on, but the host's time"
                        " synchronisation wants fixing", abs(offset) / 1000, "behind" if offset > 0 else "ahead of")
        elif self.warned and abs(offset) < SKEW_CLEARED_MS:
            self.warned = False
            log.info("this host's clock is back within %d s of the broker's (%+.3f s)",
                     SKEW_CLEARED_MS // 1000, offset / 1000)
