"""``rater topics create`` (rater/topics.py) on a real broker: creates what is missing,
checks what exists — partition counts and the settings money depends on."""

from __future__ import annotations

import asyncio

import pytest

from rater.topics import ensure_topics, load_topics
from tests.support import alter_topic

pytestmark = pytest.mark.kafka



def test_topics_are_created_once_then_checked_and_a_changelog_that_deletes_is_refused(
        kafka_bootstrap: str, topic_prefix: str) -> None:
    lines: list[str] = []
    created = asyncio.run(ensure_topics(kafka_bootstrap, topic_prefix, partitions=2, report=lines.append))
    assert set(created) == set(load_topics())
    assert set(created.values()) == {"created"}
    again = asyncio.run(ensure_topics(kafka_bootstrap, topic_prefix, partitions=2, report=lines.append))
    assert set(again.values()) == {"exists"}

    # an operator's own retention is reported, not refused
    asyncio.run(alter_topic(kafka_bootstrap, f"{topic_prefix}cdrs", {"retention.ms": "86400000"}))
    lines.clear()
    asyncio.run(ensure_topics(kafka_bootstrap, topic_prefix, partitions=2, report=lines.append))
    assert any("cdrs has retention.ms=86400000" in line and line.startswith("note:") for line in lines), lines

    # a larger record limit on an output is fine; a smaller one would stop the worker: refused
    declared = load_topics()["rated-cdrs"].config
    larger = {**declared, "max.message.bytes": "16777216"}
    asyncio.run(alter_topic(kafka_bootstrap, f"{topic_prefix}rated-cdrs", larger))
    lines.clear()
    asyncio.run(ensure_topics(kafka_bootstrap, topic_prefix, partitions=2, report=lines.append))
    assert any("rated-cdrs has max.message.bytes=16777216" in line and line.startswith("note:") for line in lines)
    asyncio.run(alter_topic(kafka_bootstrap, f"{topic_prefix}rated-cdrs", {**declared, "max.message.bytes": "1048588"}))
    with pytest.raises(RuntimeError, match=r"rated-cdrs has max.message.bytes=1048588, topics.toml says 8388608"):
        asyncio.run(ensure_topics(kafka_bootstrap, topic_prefix, partitions=2, report=lines.append))
    asyncio.run(alter_topic(kafka_bootstrap, f"{topic_prefix}rated-cdrs", declared))

    # a tick topic made before ticks measured the broker's clock keeps the producer's
    # timestamps: refused (the worker could not measure the broker's clock on it)
    ticks = load_topics()["rater-ticks"].config
    assert ticks["message.timestamp.type"] == "LogAppendTime"
    made_before = {**ticks, "message.timestamp.type": "CreateTime"}
    asyncio.run(alter_topic(kafka_bootstrap, f"{topic_prefix}rater-ticks", made_before))
    with pytest.raises(RuntimeError, match=r"rater-ticks has message.timestamp.type=CreateTime, topics.toml says"
                                           r" LogAppendTime"):
        asyncio.run(ensure_topics(kafka_bootstrap, topic_prefix, partitions=2, report=lines.append))
    asyncio.run(alter_topic(kafka_bootstrap, f"{topic_prefix}rater-ticks", ticks))

    # a state changelog that deletes old records would lose money: refused
    asyncio.run(alter_topic(kafka_bootstrap, f"{topic_prefix}rater-state",
                       {"cleanup.policy": "delete", "max.message.bytes": "8388608"}))
    with pytest.raises(RuntimeError, match=r"rater-state has cleanup.policy=delete, topics.toml says compact"):
        asyncio.run(ensure_topics(kafka_bootstrap, topic_prefix, partitions=2, report=lines.append))
    with pytest.raises(RuntimeError, match=r"cdrs has 2 partitions, expected 4"):
        asyncio.run(ensure_topics(kafka_bootstrap, topic_prefix, partitions=4, report=lines.append))
