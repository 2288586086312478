"""The broker's clock as a worker estimates it (rater/shell/clock.py), on clocks of the
test's making; and the clock probe a partition task skips. No broker: the real one is
in tests/test_clock_skew.py."""

from __future__ import annotations

import logging

import orjson
import pytest

from rater import edge
from rater.catalog import rating_context
from rater.core.times import parse_time_us
from rater.shell.clock import BrokerClock
from rater.shell.task import TICKS, MemoryStore, PartitionTask, probe_value, tick_value

S = 1_000_000_000  # ns
HOUR_MS = 3_600_000


class Host:
    """A host's wall and monotonic clocks, moved by hand."""

    def __init__(self, wall_s: float, mono_s: float = 1000.0) -> None:
        self.wall = int(wall_s * S)
        self.mono = int(mono_s * S)

    def run(self, seconds: float) -> None:
        self.wall += int(seconds * S)
        self.mono += int(seconds * S)

    def clock(self) -> BrokerClock:
        return BrokerClock(lambda: self.wall, lambda: self.mono, source="ticks")


BROKER_START_S = 1_790_000_000.0


def _measure(clock: BrokerClock, host: Host, broker_ms: int, there_s: float, back_s: float) -> None:
    """A record out, stamped ``broker_ms`` after ``there_s``, acknowledged ``back_s`` later."""
    sent = clock.sending()
    host.run(there_s)
    host.run(back_s)
    clock.measured(sent, broker_ms)


def test_before_a_measurement_the_host_clock_stands_in() -> None:
    host = Host(BROKER_START_S + 7200)
    clock = host.clock()
    assert clock.now_ms() == int((BROKER_START_S + 7200) * 1000)
    assert clock.offset_ms is None


def test_the_broker_stamp_is_taken_for_the_midpoint_of_the_round_trip() -> None:
    host = Host(BROKER_START_S + 7200)  # two hours ahead
    clock = host.clock()
    # the request takes 30 ms to arrive, the acknowledgement 10 ms to come back: the
    # estimate is off by 10 ms, at most half the 40 ms round trip
    stamp_ms = int(BROKER_START_S * 1000) + 30
    _measure(clock, host, stamp_ms, 0.030, 0.010)
    assert clock.round_trip_ms == pytest.approx(40)
    assert clock.offset_ms == pytest.approx(-7200_000 + 10)
    broker_now_ms = int(BROKER_START_S * 1000) + 40
    assert abs(clock.now_ms() - broker_now_ms) <= 20
    host.run(3600)  # an hour on: the monotonic clock carries the estimate
    assert abs(clock.now_ms() - (broker_now_ms + HOUR_MS)) <= 20
    assert clock.now_us() // 1000 == clock.now_ms()


def test_a_step_of_the_host_wall_clock_does_not_move_the_estimate_only_what_is_said_of_it() -> None:
    host = Host(BROKER_START_S)
    clock = host.clock()
    _measure(clock, host, int(BROKER_START_S * 1000) + 1, 0.001, 0.001)
    before = clock.now_ms()
    host.wall += 2 * 3600 * S  # an operator's `date -s`: the wall clock jumps, monotonic does not
    assert clock.now_ms() == before  # records stamped after the jump still carry the broker's time
    host.run(1)
    _measure(clock, host, before + 1001, 0.001, 0.001)
    assert clock.offset_ms == pytest.approx(-2 * HOUR_MS, abs=5)
    assert abs(clock.now_ms() - (before + 1002)) <= 2


def test_the_offset_is_said_at_the_first_measurement_and_a_skew_warned_of_once(
        caplog: pytest.LogCaptureFixture) -> None:
    host = Host(BROKER_START_S - 7200)  # two hours behind
    clock = host.clock()
    broker_ms = int(BROKER_START_S * 1000)
    with caplog.at_level(logging.INFO, logger="rater.clock"):
        for _ in range(5):  # five ticks
            _measure(clock, host, broker_ms + 1, 0.001, 0.001)
            broker_ms += 1002
            host.run(1)
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in levels] == ["INFO", "WARNING"]
    assert "+7200.0" in levels[0][1]
    assert "7200.0 s behind" in levels[1][1]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rater.clock"):
        host.wall += 7200 * S - 40 * S  # time sync fixed it: 40 s behind is still worth no new line
        _measure(clock, host, broker_ms + 1, 0.001, 0.001)
        assert caplog.records == []
        host.wall += 40 * S  # now right: said once
        broker_ms += 2
        _measure(clock, host, broker_ms + 1, 0.001, 0.001)
        _measure(clock, host, broker_ms + 3, 0.001, 0.001)
        host.wall -= 90 * S  # and off again: a new warning
        _measure(clock, host, broker_ms + 5, 0.001, 0.001)
        _measure(clock, host, broker_ms + 7, 0.001, 0.001)
    assert [(r.levelname, "back within" in r.getMessage() or "ahead of" in r.getMessage() or "behind" in
             r.getMessage()) for r in caplog.records] == [("INFO", True), ("WARNING", True)]


def test_a_clock_probe_on_the_tick_topic_is_skipped_without_a_dead_letter_or_a_tick() -> None:
    task = PartitionTask(0, rating_context(), MemoryStore())
    probe = edge.Record(TICKS, 0, 0, None, probe_value(), 1_790_000_000_000)
    batch = task.process([probe])
    assert (batch.applied, batch.outputs, task.clock.tick_us) == (1, [], None)
    assert orjson.loads(batch.partition_record)["offsets"] == {TICKS: 1}
    tick = edge.Record(TICKS, 0, 1, None, tick_value(parse_time_us("2026-11-20T00:00:00Z")), 1_790_000_000_000)
    assert task.process([tick]).outputs == []
    assert task.clock.tick_us == parse_time_us("2026-11-20T00:00:00Z")
    # anything else on the tick topic without a time is still a dead letter
    other = edge.Record(TICKS, 0, 2, None, orjson.dumps({"type": "clock"}), 1_790_000_000_000)
    [dead] = task.process([other]).outputs
    assert dead.topic == "dead-letters"
