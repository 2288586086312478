"""What an operator meets when starting and stopping workers (issue 12): JSON logs, a
worker started before its topics or its broker, no ERROR line when nothing is wrong,
settings the worker cannot use, and ``RATER_PARTITIONS`` — on a real broker with real
worker processes."""

from __future__ import annotations

import asyncio
import datetime
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.http_exceptions import BadHttpMessage
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from click.testing import CliRunner

from rater.cli import main
from rater.localkafka import LocalKafka, free_port
from rater.shell import logs
from rater.shell.preflight import _retried_quietly
from rater.topics import load_topics
from tests.support import TEST_PARTITIONS, Worker, cdr, collect, create_topics, send_events
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
        assert datetime.datetime.fromisoformat(record["time"]).utcoffset() == datetime.timedelta(0), line
        parsed.append(record)
    return parsed


def _readyz(worker: Worker) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{worker.url}/readyz", timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def _ready_partitions(worker: Worker) -> list[int]:
    """The partitions a ready worker owns ([] while it is not ready or not listening)."""
    try:
        status, body = _readyz(worker)
    except OSError:  # not listening yet
        return []
    return list(body["partitions"]) if status == 200 else []


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
    coordinator.error("Heartbeat send request failed: %s. Will retry.", "[Error 14] GroupLoadInProgressError")
    coordinator.error("Heartbeat failed: something else")
    levels = [orjson.loads(line)["level"] for line in stream.getvalue().splitlines()]
    assert levels == ["INFO", "INFO", "ERROR"]
    quiet = io.StringIO()
    logs.setup("warn", "human", quiet)
    coordinator.error("Group Coordinator Request failed: %s", "[Error 15] GroupCoordinatorNotAvailableError")
    assert quiet.getvalue() == ""  # lowered to INFO, below warn


@pytest.mark.usefixtures("own_log")
def test_a_rebalance_and_a_request_that_is_not_http_are_info() -> None:
    stream = io.StringIO()
    logs.setup("info", "json", stream)
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    coordinator.warning("Heartbeat failed for group %s because it is rebalancing", "rater")
    coordinator.warning("Heartbeat failed for group %s: coordinator (node %s) is either not started or not valid",
                        "rater", 1)  # a coordinator gone is worth a look
    server = logging.getLogger("aiohttp.server")
    try:
        raise BadHttpMessage("Bad header")
    except BadHttpMessage as exc:
        server.error("Error handling request from %s", "10.0.0.9", exc_info=exc)
    try:
        raise RuntimeError("a handler failed")
    except RuntimeError as exc:
        server.error("Error handling request from %s", "10.0.0.9", exc_info=exc)
    records = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["level"] for r in records] == ["INFO", "WARNING", "INFO", "ERROR"]
    assert "exception" not in records[2]
    assert records[2]["message"] == "Error handling request from 10.0.0.9: BadHttpMessage: Bad header"
    assert "RuntimeError: a handler failed" in records[3]["exception"]


@pytest.mark.kafka
def test_a_worker_rates_and_stops_on_sigterm_with_json_lines_and_no_error(tmp_path: Path, topic_prefix: str) -> None:
    """Start, rate, SIGTERM: exit 0; every line of the log is a JSON object, none is at
    ERROR or CRITICAL, nothing was left unclosed. On a broker of its own, as new as an
    operator's first one: its first group finds no coordinator at once (aiokafka logs
    ``GroupCoordinatorNotAvailableError`` at ERROR and retries)."""
    with LocalKafka() as broker:
        bootstrap = broker.bootstrap
        create_topics(bootstrap, topic_prefix)
        worker = Worker(bootstrap, topic_prefix, tmp_path / "w", {"RATER_LOG_FORMAT": "json"}).start()
        try:
            send_events(bootstrap, topic_prefix, [*open_account("t1", "5.00"), ("cdrs", cdr("t1", "call-1", 60))])
            outs = collect(bootstrap, topic_prefix, lambda seen: any(o.topic == "rated-cdrs" for o in seen), worker)
            assert [o.event["status"] for o in outs if o.topic == "rated-cdrs"] == ["rated"]
            # a port scanner at the web port, then a second worker joins (a rebalance)
            # and leaves (another): all of it normal
            with socket.create_connection(("127.0.0.1", worker.web_port), timeout=5) as scanner:
                scanner.sendall(b"GET /metrics HTTP/1.1\r\nthis is no header\r\n\r\n")
                assert scanner.recv(100).split(b"\r\n")[0].endswith(b" 400 Bad Request")
            other = Worker(bootstrap, topic_prefix, tmp_path / "w2", {"RATER_LOG_FORMAT": "json"}).start()
            try:
                _until(lambda: _ready_partitions(other))
                _until(lambda: 0 < len(_ready_partitions(worker)) < TEST_PARTITIONS)
                other.proc.send_signal(signal.SIGTERM)
                assert other.proc.wait(timeout=60) == 0
            finally:
                other.stop()
            _until(lambda: len(_ready_partitions(worker)) == TEST_PARTITIONS)
            worker.proc.send_signal(signal.SIGTERM)
            assert worker.proc.wait(timeout=60) == 0
        finally:
            worker.stop()
    records = _json_lines(worker.log) + _json_lines(other.log)
    assert [r for r in records if r["level"] in ("ERROR", "CRITICAL")] == []
    assert not [r for r in records if "Unclosed" in r["message"] or "exception" in r]
    assert any(r["logger"] == "rater.driver" and "caught up" in r["message"] for r in records)
    assert any(r["logger"] == "aiohttp.server" and "BadHttpMessage" in r["message"] for r in records)


# --- 8. a worker started before its topics, or its broker -------------------------------

@pytest.mark.kafka
def test_a_worker_started_before_its_topics_says_so_waits_and_then_rates(kafka_bootstrap: str, tmp_path: Path,
                                                                         topic_prefix: str) -> None:
    worker = Worker(kafka_bootstrap, topic_prefix, tmp_path / "w", {"RATER_TOPICS_WAIT": "120"}).start()
    try:
        status, body = _until(lambda: (found := _readyz_or_none(worker)) and found)
        assert status == 503
        assert body["reason"].startswith("waiting for topics: ")
        assert f"{topic_prefix}cdrs" in body["reason"]
        warned = _until(lambda: [line for line in worker.log.read_text().splitlines() if " WARNING " in line
                                 and "topics missing" in line])
        assert "`rater topics create` makes them" in warned[0]
        assert all(f"{topic_prefix}{name}" in warned[0] for name in ALL_TOPICS)
        time.sleep(2)  # it keeps looking, quietly
        create_topics(kafka_bootstrap, topic_prefix)
        send_events(kafka_bootstrap, topic_prefix, [*open_account("t1", "5.00"), ("cdrs", cdr("t1", "call-1", 60))])
        outs = collect(kafka_bootstrap, topic_prefix, lambda seen: any(o.topic == "rated-cdrs" for o in seen), worker)
        assert [o.event["status"] for o in outs if o.topic == "rated-cdrs"] == ["rated"]
        assert _until(lambda: _readyz(worker)[0] == 200)
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(timeout=60) == 0
    finally:
        worker.stop()
    lines = worker.log.read_text().splitlines()
    assert len([line for line in lines if "topics missing" in line]) == 1, lines
    assert not [line for line in lines if " ERROR " in line or "Traceback" in line or "Unclosed" in line], lines


def _readyz_or_none(worker: Worker) -> tuple[int, dict[str, Any]] | None:
    """/readyz once the worker waits for its topics (None before: not listening yet)."""
    worker.check_alive()
    try:
        status, body = _readyz(worker)
    except OSError:
        return None
    return (status, body) if str(body.get("reason", "")).startswith("waiting for topics") else None


@pytest.mark.kafka
def test_a_worker_whose_topics_never_come_exits_1_with_one_error_line(kafka_bootstrap: str, tmp_path: Path,
                                                                      topic_prefix: str) -> None:
    worker = Worker(kafka_bootstrap, topic_prefix, tmp_path / "w", {"RATER_TOPICS_WAIT": "2"}).start()
    try:
        assert worker.proc.wait(timeout=60) == 1
    finally:
        worker.stop()
    lines = worker.log.read_text().splitlines()
    errors = [line for line in lines if " ERROR " in line or " CRITICAL " in line]
    assert len(errors) == 1, lines
    assert "topics missing after 2 s (RATER_TOPICS_WAIT)" in errors[0]
    assert all(f"{topic_prefix}{name}" in errors[0] for name in ALL_TOPICS)
    assert "`rater topics create` makes them" in errors[0]
    assert not [line for line in lines if "Traceback" in line or "Unclosed" in line], lines


@pytest.mark.kafka
def test_a_stop_while_waiting_for_topics_is_a_clean_exit(kafka_bootstrap: str, tmp_path: Path,
                                                         topic_prefix: str) -> None:
    worker = Worker(kafka_bootstrap, topic_prefix, tmp_path / "w", {"RATER_TOPICS_WAIT": "120"}).start()
    try:
        _until(lambda: _readyz_or_none(worker))
        worker.proc.send_signal(signal.SIGINT)
        assert worker.proc.wait(timeout=30) == 0
    finally:
        worker.stop()
    lines = worker.log.read_text().splitlines()
    assert not [line for line in lines if " ERROR " in line or "Traceback" in line or "Unclosed" in line], lines


def test_an_unreachable_broker_is_one_error_line_naming_it(tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    worker = Worker(nowhere, "x.", tmp_path / "w", {"RATER_BROKER_WAIT": "1", "RATER_LOG_FORMAT": "json"}).start()
    try:
        assert worker.proc.wait(timeout=60) == 1
    finally:
        worker.stop()
    records = _json_lines(worker.log)
    [warning] = [r for r in records if r["level"] == "WARNING"]
    assert f"cannot reach the Kafka broker at {nowhere} (RATER_BOOTSTRAP)" in warning["message"]
    [error] = [r for r in records if r["level"] in ("ERROR", "CRITICAL")]
    assert error["message"].startswith(f"cannot reach the Kafka broker at {nowhere} (RATER_BOOTSTRAP) after 1 s")
    assert not [r for r in records if "exception" in r]


# --- 8. settings ------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value", "says"), [
    ("RATER_WEB_PORT", "abc", "must be a TCP port number, 0–65535"),
    ("RATER_WEB_PORT", "70000", "must be a TCP port number"),
    ("RATER_SESSION_TIMEOUT", "ten", "must be a number of seconds > 0"),
    ("RATER_SESSION_TIMEOUT", "0", "must be a number of seconds > 0"),
    ("RATER_TICK_INTERVAL", "-1", "must be a number of seconds ≥ 0"),
    ("RATER_TICK_INTERVAL", "nan", "must be a number of seconds ≥ 0"),
    ("RATER_TOPICS_WAIT", "2m", "must be a number of seconds ≥ 0"),
    ("RATER_BROKER_WAIT", "inf", "must be a number of seconds ≥ 0"),
    ("RATER_LOG_LEVEL", "verbose", "must be one of crit, error, warn, info, debug"),
    ("RATER_LOG_FORMAT", "xml", "must be one of human, json"),
    ("RATER_METRICS", "maybe", "must be on or off"),
    ("RATER_MAX_BATCH", "0", "must be a whole number ≥ 1"),
])
def test_a_setting_the_worker_cannot_use_is_one_line_naming_it(name: str, value: str, says: str) -> None:
    result = CliRunner().invoke(main, ["worker"], env={name: value})
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # said, not raised
    assert result.output.startswith(f"Error: {name}={value!r}: {says}")
    assert result.output.count("\n") == 1


def test_a_data_file_that_is_not_there_is_one_line_naming_it_and_its_variable(tmp_path: Path) -> None:
    nowhere = str(tmp_path / "catalog.toml")
    result = CliRunner().invoke(main, ["worker"], env={"RATER_CATALOG": nowhere})
    assert (result.exit_code, result.output) == (1, f"Error: {nowhere}: catalog file not found (RATER_CATALOG)\n")
    result = CliRunner().invoke(main, ["worker", "--tariff", nowhere])
    assert (result.exit_code, result.output) == (1, f"Error: {nowhere}: tariff file not found\n")


def test_a_bad_setting_stops_the_real_command_with_one_line_and_no_traceback() -> None:
    env = {**os.environ, "RATER_WEB_PORT": "abc"}
    done = subprocess.run([sys.executable, "-m", "rater", "worker"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "Error: RATER_WEB_PORT='abc': must be a TCP port number, 0–65535\n"


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


@pytest.mark.kafka
def test_a_worker_refuses_inputs_that_are_not_co_partitioned(kafka_bootstrap: str, tmp_path: Path,
                                                             topic_prefix: str) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    async def grow() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_partitions({f"{topic_prefix}cdrs": NewPartitions(TEST_PARTITIONS + 2)})
        finally:
            await admin.close()

    asyncio.run(grow())
    worker = Worker(kafka_bootstrap, topic_prefix, tmp_path / "w").start()
    try:
        assert worker.proc.wait(timeout=60) == 1
    finally:
        worker.stop()
    errors = [line for line in worker.log.read_text().splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert f"{topic_prefix}cdrs {TEST_PARTITIONS + 2}" in errors[0]
    assert "co-partitioned" in errors[0]



@pytest.mark.kafka
def test_a_stop_during_a_restore_closes_everything_and_exits_0(kafka_bootstrap: str, tmp_path: Path,
                                                               topic_prefix: str) -> None:
    """SIGTERM while a partition restores from a changelog of 300,000 records: the
    restore is cancelled, every consumer and producer closed, exit 0, no ERROR line."""
    create_topics(kafka_bootstrap, topic_prefix)

    async def fill() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks=1, linger_ms=20,
                                    max_batch_size=512 * 1024)
        await producer.start()
        try:
            for n in range(300_000):
                await producer.send(f"{topic_prefix}rater-state", b"fingerprint-000000000000",
                                    key=b"!old/u/2026-10/call-%d" % n, partition=0)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(fill())
    worker = Worker(kafka_bootstrap, topic_prefix, tmp_path / "w").start()

    def restoring() -> bool:
        worker.check_alive()
        try:
            return _readyz(worker)[1].get("reason") == "restoring partitions from the changelog"
        except OSError:
            return False

    try:
        _until(restoring, timeout_s=90)
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(timeout=60) == 0
    finally:
        worker.stop()
    lines = worker.log.read_text().splitlines()
    assert not [line for line in lines if "partition 0: " in line and "caught up" in line], "restored before the stop"
    assert not [line for line in lines if " ERROR " in line or "Traceback" in line or "Unclosed" in line], lines


class _FlakyFront:
    """A TCP front for the broker (on ``port``, else a free one) that drops its first
    ``refuse`` connections as soon as they are made (a cluster whose broker is not ready
    yet: the port opens, Kafka does not answer), then relays every byte both ways; it runs
    on a thread of its own."""

    def __init__(self, target: str, refuse: int, port: int | None = None) -> None:
        host, _, target_port = target.rpartition(":")
        self.target, self.refuse, self.port = (host, int(target_port)), refuse, port or free_port()
        self.dropped = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _FlakyFront:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self.ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.dropped < self.refuse:
            self.dropped += 1
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def _rates_through_the_front_then_stops(bootstrap: str, prefix: str, worker: Worker, front: _FlakyFront) -> None:
    """A tenant's call is rated once by ``worker`` (which reaches Kafka through ``front``,
    which dropped its first 4 connections); then SIGTERM stops it with exit code 0."""
    send_events(bootstrap, prefix, [*open_account("t1", "5.00"), ("cdrs", cdr("t1", "c-1", 60))])
    outs = collect(bootstrap, prefix, lambda seen: any(o.topic == "rated-cdrs" for o in seen), worker)
    assert [o.event["status"] for o in outs if o.topic == "rated-cdrs"] == ["rated"]
    assert front.dropped == 4
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=60) == 0


@pytest.mark.kafka
def test_a_cluster_that_does_not_answer_yet_is_waited_for_not_a_failed_start(kafka_bootstrap: str, tmp_path: Path,
                                                                               topic_prefix: str) -> None:
    """The soak's finding: a worker restarted right after a broker died exited 1 on the
    first retriable error while it listed the topics. Now it says so once and tries again
    within RATER_BROKER_WAIT, then starts and rates."""
    create_topics(kafka_bootstrap, topic_prefix)
    with _FlakyFront(kafka_bootstrap, refuse=4) as front:
        worker = Worker(f"127.0.0.1:{front.port}", topic_prefix, tmp_path / "w", {"RATER_BROKER_WAIT": "60"}).start()
        try:
            _rates_through_the_front_then_stops(kafka_bootstrap, topic_prefix, worker, front)
        finally:
            worker.stop()
    lines = worker.log.read_text().splitlines()
    waited = [line for line in lines if "could not list its topics" in line]
    assert len(waited) == 1, lines
    assert " WARNING " in waited[0]
    assert "RATER_BROKER_WAIT" in waited[0]
    assert [line for line in lines if "lists its topics" in line and " INFO " in line], lines
    assert not [line for line in lines if " ERROR " in line or " CRITICAL " in line], lines  # aiokafka's too


@pytest.mark.kafka
def test_a_worker_started_before_its_broker_waits_without_an_error_line_and_rates(kafka_bootstrap: str,
                                                                                  tmp_path: Path,
                                                                                  topic_prefix: str) -> None:
    """A compose start where the worker comes first: nothing listens on the broker's port,
    then the port answers before Kafka does (dropped connections), then Kafka answers.
    Each wait is one WARNING and one INFO; aiokafka's ERROR line per failed attempt
    (``Unable connect to "host:port"``) is not in the log: it is not an error while the
    worker waits, and is lowered to DEBUG for the wait only."""
    create_topics(kafka_bootstrap, topic_prefix)
    port = free_port()  # nothing there yet
    worker = Worker(f"127.0.0.1:{port}", topic_prefix, tmp_path / "w",
                    {"RATER_BROKER_WAIT": "60", "RATER_LOG_FORMAT": "json"}).start()
    try:
        _until(lambda: worker.check_alive() or '"level":"WARNING"' in worker.log.read_text())  # nothing there
        with _FlakyFront(kafka_bootstrap, refuse=4, port=port) as front:
            _rates_through_the_front_then_stops(kafka_bootstrap, topic_prefix, worker, front)
    finally:
        worker.stop()
    records = _json_lines(worker.log)
    assert [r for r in records if r["level"] in ("ERROR", "CRITICAL")] == [], records
    warnings = [r["message"] for r in records if r["level"] == "WARNING" and r["logger"] == "rater.preflight"]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"cannot reach the Kafka broker at 127.0.0.1:{port} (RATER_BOOTSTRAP)")
    assert "could not list its topics" in warnings[1]
    assert f'aiokafka: Unable connect to "127.0.0.1:{port}"' in warnings[1]  # the detail is kept, once
    said = [r["message"] for r in records if r["logger"] == "rater.preflight" and r["level"] == "INFO"]
    assert any("answers" in m for m in said), said
    assert any("lists its topics" in m for m in said), said
    assert not [r for r in records if "Unable connect" in r["message"] and r["logger"] != "rater.preflight"]


@pytest.mark.usefixtures("own_log")
def test_aiokafka_connection_errors_are_lowered_only_during_the_preflight_wait() -> None:
    client = logging.getLogger("aiokafka")
    stream = io.StringIO()
    logs.setup("debug", "json", stream)
    with _retried_quietly() as quiet:
        client.error('Unable connect to "%s:%s": %s', "127.0.0.1", 9092, "KafkaConnectionError: closed")
        client.error("Unable to update metadata from %s", [1])
        client.error("Something else went wrong")  # not a retried attempt: stays ERROR
    assert quiet.first == 'Unable connect to "127.0.0.1:9092": KafkaConnectionError: closed'
    # a broker lost after the start: loud again
    client.error("Unable connect to node with id %s: %s", 1, "KafkaConnectionError: refused")
    client.error('Unable connect to "%s:%s": %s', "127.0.0.1", 9092, "KafkaConnectionError: closed")
    levels = [orjson.loads(line)["level"] for line in stream.getvalue().splitlines()]
    assert levels == ["DEBUG", "DEBUG", "ERROR", "ERROR", "ERROR"]
    quiet_at_info = io.StringIO()
    logs.setup("info", "json", quiet_at_info)
    with _retried_quietly():
        client.error('Unable connect to "%s:%s": %s', "127.0.0.1", 9092, "KafkaConnectionError: closed")
    assert quiet_at_info.getvalue() == ""
