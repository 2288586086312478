"""The notifier's own offset bookkeeping (rater.notifier.progress), without Kafka: the
frontier passes only records that are done and offsets the audit found empty, a record
never handed is sought back, and — against a simulated consumer that drops records the
way Faust 0.15.3's can — the committed frontier never passes an unfinished record and
every record is finished in the end."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from rater.notifier.progress import STALL_S, Audit, PartitionProgress


def progress(committed: int = 0) -> PartitionProgress:
    return PartitionProgress(committed=committed, frontier=committed)


def test_the_frontier_moves_over_finished_records_in_order_only() -> None:
    p = progress()
    for offset in (0, 1, 2):
        p.handed(offset, now=0.0)
    p.finished(1, now=0.0)
    assert p.frontier == 0
    p.finished(0, now=0.0)
    assert p.frontier == 2
    assert p.audit_needed(end=3, now=0.0) is None  # 2 is in flight
    p.finished(2, now=0.0)
    assert p.frontier == 3


def test_a_hole_below_a_handled_record_is_audited_a_marker_is_passed() -> None:
    p = progress(10)
    p.handed(11, now=0.0)
    p.finished(11, now=0.0)
    audit = p.audit_needed(end=12, now=0.0)
    assert audit == Audit(10, 11, tail=False)
    assert p.audited(audit, records=[], now=0.0) is None  # offset 10: a transaction marker
    assert p.frontier == 12


def test_a_record_never_handed_is_sought_back_once_per_stall_period() -> None:
    p = progress(0)
    p.handed(0, now=0.0)
    p.finished(0, now=0.0)
    p.handed(3, now=0.0)  # 1 and 2 were dropped on the way to the agent
    audit = p.audit_needed(end=4, now=1.0)
    assert audit == Audit(1, 3, tail=False)
    assert p.audited(audit, records=[1, 2], now=1.0) == 1
    assert p.frontier == 1
    again = p.audit_needed(end=4, now=2.0)
    assert again is not None
    assert p.audited(again, records=[1, 2], now=2.0) is None  # sought a moment ago
    later = p.audit_needed(end=4, now=1.0 + STALL_S)
    assert later is not None
    assert p.audited(later, records=[1, 2], now=1.0 + STALL_S) == 1


def test_an_idle_partition_below_its_end_is_audited_after_the_stall_period() -> None:
    p = progress(5)
    p.reset(5, now=100.0)
    assert p.audit_needed(end=8, now=100.0 + STALL_S / 2) is None  # may still be on its way
    audit = p.audit_needed(end=8, now=100.0 + STALL_S)
    assert audit == Audit(5, 8, tail=True)
    assert p.audited(audit, records=[6, 7], now=100.0 + STALL_S) == 6  # 5 was a marker
    assert p.frontier == 6
    marker_only = progress(5)
    marker_only.reset(5, now=0.0)
    tail = marker_only.audit_needed(end=6, now=STALL_S)
    assert tail is not None
    assert marker_only.audited(tail, records=[], now=STALL_S) is None
    assert marker_only.frontier == 6


def test_no_tail_audit_while_the_agent_has_no_free_slot() -> None:
    """A record waiting in Faust's buffer behind an agent whose slots are all taken (say by
    retries waiting for their due time) is not taken for a dropped one."""
    p = progress(5)
    p.reset(5, now=0.0)
    assert p.audit_needed(end=8, now=STALL_S * 3, agent_free_since=None) is None
    assert p.audit_needed(end=8, now=STALL_S * 3, agent_free_since=STALL_S * 2.5) is None  # free again just now
    assert p.audit_needed(end=8, now=STALL_S * 3, agent_free_since=STALL_S * 2) == Audit(5, 8, tail=True)


def test_a_record_in_flight_or_cancelled_is_never_passed() -> None:
    p = progress()
    p.handed(0, now=0.0)
    p.handed(1, now=0.0)
    p.finished(1, now=0.0)
    assert p.audit_needed(end=2, now=STALL_S * 10) is None  # 0 is in flight: wait for it
    p.release(0)  # cancelled (a shutdown): not done
    audit = p.audit_needed(end=2, now=0.0)
    assert audit == Audit(0, 1, tail=False)
    assert p.audited(audit, records=[0], now=0.0) == 0
    assert p.frontier == 0


def test_a_record_read_twice_is_in_flight_until_both_readings_end() -> None:
    p = progress()
    p.handed(0, now=0.0)
    p.handed(0, now=0.0)  # read again after a seek, the first reading still under way
    p.release(0)
    assert p.audit_needed(end=1, now=STALL_S) is None
    p.finished(0, now=0.0)
    assert (p.frontier, dict(p.in_flight)) == (1, {})


def test_a_rebalance_keeps_what_was_done_and_takes_a_later_committed_offset() -> None:
    p = progress(0)
    for offset in range(4):
        p.handed(offset, now=0.0)
        p.finished(offset, now=0.0)
    p.reset(2, now=0.0)  # the group's offset is behind what this notifier finished
    assert (p.committed, p.frontier) == (2, 4)
    p.reset(9, now=0.0)  # another notifier moved it on
    assert (p.committed, p.frontier) == (9, 9)
    p.finished(5, now=0.0)  # a late finish from before: below the frontier, ignored
    assert p.done == set()


def _simulate(seed: int, records: list[int], drop_rate: float) -> None:
    """A consumer that hands the records of one partition in order from its position and
    sometimes drops one (or the rest of a batch) without handing it; an agent that
    finishes records out of order; and the keeper's loop (audit, seek, commit) between.
    The committed frontier never passes an unfinished record; in the end all are done."""
    rng = random.Random(seed)
    end = records[-1] + 2 if records else 1  # a trailing marker
    p = progress(0)
    position, now, finished = 0, 0.0, set()
    in_hand: list[int] = []
    for _step in range(20_000):
        now += 0.25
        action = rng.random()
        if action < 0.45:  # the consumer hands (or drops) the next record
            upcoming = [o for o in records if o >= position]
            if upcoming:
                offset = upcoming[0]
                position = offset + 1
                if rng.random() >= drop_rate:
                    p.handed(offset, now)
                    in_hand.append(offset)
        elif action < 0.85 and in_hand:  # the agent finishes one, in any order
            offset = in_hand.pop(rng.randrange(len(in_hand)))
            finished.add(offset)
            p.finished(offset, now)
        else:  # the keeper's tick
            while (audit := p.audit_needed(end, now)) is not None:
                before = p.frontier
                target = p.audited(audit, [o for o in records if audit.start <= o < audit.end], now)
                if target is not None:
                    position = target
                    break
                if p.frontier == before:
                    break
            assert all(o in finished for o in records if o < p.frontier), "the frontier passed an unfinished record"
            p.committed = p.frontier
        if p.frontier >= end and not in_hand:
            break
    assert set(records) <= finished
    assert p.frontier == end


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), count=st.integers(0, 40), markers=st.floats(0, 0.5),
       drop_rate=st.sampled_from([0.0, 0.1, 0.4]))
def test_a_consumer_that_drops_records_loses_none_of_them(seed: int, count: int, markers: float,
                                                          drop_rate: float) -> None:
    rng = random.Random(seed)
    records, offset = [], 0
    for _ in range(count):
        offset += 1 if rng.random() >= markers else 2  # some offsets are transaction markers
        records.append(offset)
    _simulate(seed, records, drop_rate)
