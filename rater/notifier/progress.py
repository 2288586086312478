"""How far the notifier has got in each partition it reads, decided by the notifier, not
by Faust's consumer (docs/notifications.md, "Delivery guarantee").

Faust 0.15.3's consumer can fail to hand a fetched record to the agent: around a
rebalance ``Consumer.getmany`` drops the rest of a batch (flow stopped, generation
changed, partition paused) after aiokafka has moved past it, and aiokafka's
``seek_to_committed`` — which Faust relies on to read such records again — does not seek
a partition that has no committed offset. Its own commit then treats any hole after the
last commit as a transaction marker (a hole of one offset, or any hole before a
partition's first commit) and commits past the record. So the notifier commits its input
offsets itself, from what its agents actually finished:

- ``frontier``: every record below it was handed to an agent and done, or is not a
  record at all (a transaction marker, an offset compacted away). It only moves over an
  offset that is done, or over a range a separate read of the partition (an *audit*)
  found to hold no record.
- A record the audit finds below the next offset the agent handled, or below the end
  of an idle partition, was never handed: the consumer is sought back to it.

This module is the bookkeeping, with no I/O and no clock (``now`` is an argument); the
shell (:class:`rater.notifier.offsets.OffsetKeeper`) reads, seeks and commits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

STALL_S = 10.0
"""A partition whose frontier is below its end, none of whose records its agent took or
finished for this long — while the agent had a free slot all that time, so a record
waiting in Faust's buffer would have been taken (and Faust's fetch loop went on
fetching: the keeper passes no free slot when it did not) — is audited (a record dropped at the end
of what was fetched: nothing later would show the hole); and a partition is sought back
at most once this often."""


@dataclass
class Audit:
    """Read the partition's records in ``[start, end)``: ``end`` is the next offset the
    agent handled (``hole``) or the partition's end (``tail``)."""

    start: int
    end: int
    tail: bool


@dataclass
class PartitionProgress:
    """One input partition: its committed offset, the frontier, what is done and what
    is in flight (offsets the agent took and has not finished; a record read twice —
    after a seek or a rebalance — counts twice)."""

    committed: int
    frontier: int
    done: set[int] = field(default_factory=set)
    in_flight: Counter[int] = field(default_factory=Counter)
    active_at: float = 0.0
    sought_at: float | None = None

    def handed(self, offset: int, now: float) -> None:
        """The agent took the record at ``offset``."""
        self.in_flight[offset] += 1
        self.active_at = now

    def finished(self, offset: int, now: float) -> None:
        """The record at ``offset`` is done (delivered, scheduled for a retry, given up or
        skipped)."""
        self.release(offset)
        if offset >= self.frontier:
            self.done.add(offset)
        self.active_at = now
        self.advance()

    def release(self, offset: int) -> None:
        """The agent no longer holds the record at ``offset`` (done or cancelled)."""
        if offset not in self.in_flight:
            return
        if self.in_flight[offset] == 1:
            del self.in_flight[offset]
        else:
            self.in_flight[offset] -= 1

    def advance(self) -> None:
        """Move the frontier over the offsets that are done."""
        while self.frontier in self.done:
            self.done.discard(self.frontier)
            self.frontier += 1

    def skip_to(self, offset: int) -> None:
        """An audit found no record in ``[frontier, offset)``."""
        if offset > self.frontier:
            self.frontier = offset
            self.done = {o for o in self.done if o >= offset}
            self.advance()

    def audit_needed(self, end: int, now: float, agent_free_since: float | None = 0.0) -> Audit | None:
        """The range to read before the frontier can move on, or ``None``: the frontier is
        at the end, its record is in flight, or nothing shows a hole yet.
        ``agent_free_since``: since when the partition's agent has had a free slot
        (``None``: it has none now — it is not waiting for Faust's records)."""
        if self.frontier >= end or self.frontier in self.in_flight:
            return None
        later = min((o for o in (*self.done, *self.in_flight) if o > self.frontier), default=None)
        if later is not None:
            return Audit(self.frontier, later, tail=False)
        if agent_free_since is not None and now - max(self.active_at, agent_free_since) >= STALL_S:
            return Audit(self.frontier, end, tail=True)
        return None

    def audited(self, audit: Audit, records: list[int], now: float) -> int | None:
        """Apply what the audit read (the offsets of the records in its range, in order):
        the offset to seek the consumer back to — a record that was never handed — or
        ``None``."""
        for offset in records:
            if offset in self.done:
                continue
            self.skip_to(offset)  # what is before it is done, or no record
            if offset in self.in_flight:
                return None
            if self.sought_at is not None and now - self.sought_at < STALL_S:
                return None  # sought back a moment ago: the record may be on its way
            self.sought_at = now
            self.active_at = now
            return offset
        self.skip_to(audit.end)
        return None

    def reset(self, committed: int, now: float) -> None:
        """A rebalance gave the partition (back) to this notifier, at the group's
        ``committed`` offset. What this notifier did past it stays done (the frontier
        only ever passes records that are done, or that are no records)."""
        self.committed = committed
        self.frontier = max(self.frontier, committed)
        self.done = {o for o in self.done if o >= self.frontier}
        self.sought_at = None
        self.active_at = now  # the stall clock starts with the assignment
        self.advance()
