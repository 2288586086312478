"""What an operator meets when starting and stopping workers (issue 12): JSON logs, no
ERROR line when nothing is wrong, settings the worker cannot use, and
``RATER_PARTITIONS`` — on a real broker with real worker processes."""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from click.testing import CliRunner

from rater.cli import main
from rater.shell import logs
from rater.topics import load_topics
from tests.support import Worker, cdr, collect, create_topics, send_events
from tests.test_end_to_end import open_account

ALL_TOPICS = sorted(load_topics())


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON log, parsed (a line that is not a JSON object fails)."""
    parsed = []
    for line in path.read_text().splitlines():
        record = orjson.loads(line)
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        assert record["time"].endswith("Z"), line
        parsed.append(record)
    return parsed


def _readyz(worker: Worker) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{worker.url}/readyz", timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def _until(what: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = what()
        if found:
            return found
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.2)


# --- 7. logs ----------------------------------------------------------------------------

@pytest.fixture
def own_log() -> Iterator[None]:
    """The root logger as it was after the test (``logs.setup`` replaces its handlers)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("own_log")
def test_a_json_log_is_one_object_per_record_even_with_newlines_and_a_traceback() -> None:
    stream = io.StringIO()
    logs.setup("info", "json", stream)
    log = logging.getLogger("rater.test")
    log.info("two\nlines")
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        log.exception("it failed")
    log.debug("not at info")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    first, second = (orjson.loads(line) for line in lines)
    assert (first["level"], first["logger"], first["message"]) == ("INFO", "rater.test", "two\nlines")
    assert "exception" not in first
    assert second["level"] == "ERROR"
    assert second["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: bad\nvalue" in second["exception"]


@pytest.mark.usefixtures("own_log")
def test_a_coordinator_not_yet_available_is_info_not_error() -> None:
    # what aiokafka logs while a new group's coordinator is not known yet, then retries
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    stream = io.StringIO()
    logs.setup("info", "json", stream)
    coordinator.error("Group Coordinator Request failed: %s", "[Error 15] GroupCoordinatorNotAvailableError")
    coordinator.error("Heartbeat failed: something else")
    levels = [orjson.loads(line)["level"] for line in stream.getvalue().splitlines()]
    assert levels == ["INFO", "ERROR"]
    quiet = io.StringIO()
    logs.setup("warn", "human", quiet)
    coordinator.error("Group Coordinator Request failed: %s", "[Error 15] GroupCoordinatorNotAvailableError")
    assert quiet.getvalue() == ""  # lowered to INFO, below warn


@pytest.mark.kafka
def test_a_worker_rates_and_stops_on_sigterm_with_json_lines_and_no_error(kafka_bootstrap: str, tmp_path: Path,
                                                                          topic_prefix: str) -> None:
    """Start, rate, SIGTERM: exit 0; every line of the log is a JSON object, none is at
    ERROR or CRITICAL, nothing was left unclosed."""
    create_topics(kafka_bootstrap, topic_prefix)
    worker = Worker(kafka_bootstrap, topic_prefix, tmp_path / "w", {"RATER_LOG_FORMAT": "json"}).start()
    try:
        send_events(kafka_bootstrap, topic_prefix, [*open_account("t1", "5.00"), ("cdrs", cdr("t1", "call-1", 60))])
        outs = collect(kafka_bootstrap, topic_prefix, lambda seen: any(o.topic == "rated-cdrs" for o in seen), worker)
        assert [o.event["status"] for o in outs if o.topic == "rated-cdrs"] == ["rated"]
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(timeout=60) == 0
    finally:
        worker.stop()
    records = _json_lines(worker.log)
    assert [r for r in records if r["level"] in ("ERROR", "CRITICAL")] == []
    assert not [r for r in records if "Unclosed" in r["message"] or "exception" in r]
    assert any(r["logger"] == "rater.driver" and "caught up" in r["message"] for r in records)


# --- 8. settings ------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value", "says"), [
    ("RATER_WEB_PORT", "abc", "must be a TCP port number, 0–65535"),
    ("RATER_WEB_PORT", "70000", "must be a TCP port number"),
    ("RATER_SESSION_TIMEOUT", "ten", "must be a number of seconds > 0"),
    ("RATER_SESSION_TIMEOUT", "0", "must be a number of seconds > 0"),
    ("RATER_TICK_INTERVAL", "-1", "must be a number of seconds ≥ 0"),
    ("RATER_TICK_INTERVAL", "nan", "must be a number of seconds ≥ 0"),
    ("RATER_LOG_LEVEL", "verbose", "must be one of crit, error, warn, info, debug"),
    ("RATER_LOG_FORMAT", "xml", "must be one of human, json"),
    ("RATER_METRICS", "maybe", "must be on or off"),
])
def test_a_setting_the_worker_cannot_use_is_one_line_naming_it(name: str, value: str, says: str) -> None:
    result = CliRunner().invoke(main, ["worker"], env={name: value})
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {name}={value!r}: {says}")
    assert result.output.count("\n") == 1


def test_a_bad_partition_count_is_one_line_naming_it() -> None:
    result = CliRunner().invoke(main, ["topics", "create"], env={"RATER_PARTITIONS": "four"})
    assert result.exit_code == 1
    assert result.output == "Error: RATER_PARTITIONS='four': must be a whole number ≥ 1\n"


# --- 8. RATER_PARTITIONS ----------------------------------------------------------------

async def _partition_counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
    finally:
        await admin.close()


@pytest.mark.kafka
def test_rater_partitions_is_the_partition_count_topics_create_makes(kafka_bootstrap: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    env = {"RATER_BOOTSTRAP": kafka_bootstrap, "RATER_TOPIC_PREFIX": prefix, "RATER_PARTITIONS": "3"}
    result = CliRunner().invoke(main, ["topics", "create"], env=env)
    assert result.exit_code == 0, result.output
    names = [prefix + name for name in ALL_TOPICS]
    assert set(asyncio.run(_partition_counts(kafka_bootstrap, names)).values()) == {3}
    # the topics exist with 3: RATER_PARTITIONS=5 (or --partitions 5) is a mismatch, refused
    result = CliRunner().invoke(main, ["topics", "create", "--partitions", "5"], env=env)
    assert result.exit_code == 1
    assert f"{prefix}cdrs has 3 partitions, expected 5" in result.output
    other = f"t{uuid.uuid4().hex[:10]}."  # --partitions wins over RATER_PARTITIONS
    result = CliRunner().invoke(main, ["topics", "create", "--partitions", "2"],
                                env={**env, "RATER_TOPIC_PREFIX": other})
    assert result.exit_code == 0, result.output
    assert set(asyncio.run(_partition_counts(kafka_bootstrap, [other + n for n in ALL_TOPICS])).values()) == {2}
