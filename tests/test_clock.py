"""The clock probe a partition task skips (the driver measures the broker's clock with
it). No broker."""

from __future__ import annotations

import orjson

from rater import edge
from rater.catalog import rating_context
from rater.core.times import parse_time_us
from rater.shell.task import TICKS, MemoryStore, PartitionTask, probe_value, tick_value


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
