"""Helpers for the integration tests: topics, worker processes, producing and reading."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from rater import schemas
from rater.localkafka import free_port, spawn, stop_process
from rater.topics import ensure_topics

TEST_PARTITIONS = 4
OUTPUT_TOPICS = ("rated-cdrs", "balances", "low-balance", "recharge-requests", "notifications", "dead-letters")


def create_topics(bootstrap: str, prefix: str) -> None:
    """Create every declared topic under ``prefix`` with the test partition count."""
    asyncio.run(ensure_topics(bootstrap, prefix, partitions=TEST_PARTITIONS, report=lambda _line: None))


class RaterProcess:
    """What the tests' real ``rater`` processes share: a web port, a log, a liveness check
    that shows the log's tail, and a clean stop."""

    proc: Any
    web_port: int
    what = "process"

    @property
    def url(self) -> str:
        """Where the process serves its pages."""
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def log(self) -> Path:
        raise NotImplementedError

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])
            raise AssertionError(f"{self.what} exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        stop_process(self.proc, timeout_s=30)


@dataclass
class Worker(RaterProcess):
    """A real ``rater worker`` process (/metrics, /healthz and /readyz at ``url``)."""

    bootstrap: str
    prefix: str
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: Any = None
    web_port: int = 0
    command: tuple[str, ...] = (sys.executable, "-m", "rater", "worker")
    """How the worker is started (``benchmarks/latency.py`` starts it with a log setting)."""
    what = "worker"

    @property
    def log(self) -> Path:
        return self.workdir / "worker.log"

    def start(self) -> Worker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.web_port = free_port()
        env = dict(
            os.environ,
            RATER_BOOTSTRAP=self.bootstrap,
            RATER_TOPIC_PREFIX=self.prefix,
            RATER_APP_ID=f"{self.prefix}rater",
            RATER_DATA_DIR=str(self.workdir / "data"),
            RATER_WEB_PORT=str(self.web_port),
            RATER_PARTITIONS=str(TEST_PARTITIONS),
            RATER_SESSION_TIMEOUT="6",
            RATER_LOG_LEVEL="info",
        )
        env.setdefault("RATER_TICK_INTERVAL", "0")  # the tests' CDRs carry fixed dates: no wall-clock ticks
        env.update(self.extra_env)
        self.proc = spawn(list(self.command), log=self.log, env=env)
        return self


def fresh_worker(bootstrap: str, stem: str, workdir: Path) -> Worker:
    """A started worker on topics of its own (prefix ``{stem}{random}.``)."""
    prefix = f"{stem}{uuid.uuid4().hex[:8]}."
    create_topics(bootstrap, prefix)
    return Worker(bootstrap, prefix, workdir).start()


def event(kind: str, tenant: str, event_id: str, at: str = "2026-11-02T09:00:00Z", **fields: Any) -> dict[str, Any]:
    """An input event with its envelope."""
    return {"type": kind, "schema_version": 1, "event_id": event_id, "tenant_id": tenant,
            "occurred_at": at, **fields}


def cdr(tenant: str, usage_id: str, seconds: int, *, destination: str = "+12125550123",
        start: str = "2026-11-02T10:00:00Z", end: str = "2026-11-02T10:30:00Z", **overrides: Any) -> dict[str, Any]:
    """A CDR; ``end`` is only a label here (the duration is what is rated)."""
    fields = {
        "usage_id": usage_id, "call_id": f"call-{usage_id}", "conference_id": None, "user_id": "alice",
        "user_location": "US", "call_type": "user_out", "number_type": "geographic",
        "caller_number": "+14155550100", "destination_number": destination,
        "start_time": start, "end_time": end, "duration_seconds": seconds,
    }
    fields.update(overrides)
    return event("cdr", tenant, f"evt-{usage_id}", at=end, **fields)


async def produce(bootstrap: str, prefix: str, messages: list[tuple[str, bytes | None, bytes | None]]) -> None:
    """Send raw (topic, key, value) messages in order and wait for the acks."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                max_request_size=2 * 1024 * 1024)
    await producer.start()
    try:
        for topic, key, value in messages:
            await producer.send_and_wait(prefix + topic, value, key=key)
    finally:
        await producer.stop()


def send_events(bootstrap: str, prefix: str, items: list[tuple[str, dict[str, Any]]]) -> None:
    """Send JSON events keyed by their tenant."""
    asyncio.run(produce(bootstrap, prefix, [
        (topic, item["tenant_id"].encode(), orjson.dumps(item)) for topic, item in items
    ]))


@dataclass(frozen=True)
class Out:
    """One output record, validated against its schema."""

    topic: str
    key: bytes | None
    event: dict[str, Any]


async def _collect(bootstrap: str, prefix: str, until: Callable[[list[Out]], bool], timeout_s: float,
                   alive: Callable[[], None], log: Path | None = None) -> list[Out]:
    consumer = AIOKafkaConsumer(
        *(prefix + t for t in OUTPUT_TOPICS), bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        isolation_level="read_committed", group_id=None, enable_auto_commit=False,
    )
    await consumer.start()
    seen: list[Out] = []
    deadline = time.monotonic() + timeout_s

    async def read(waiting_for: str) -> None:
        alive()
        if time.monotonic() > deadline:
            summary = [(o.topic, o.event.get("type"), o.event.get("event_id")) for o in seen]
            tail = ""
            if log is not None and log.exists():  # what the worker was doing: the one clue a CI run keeps
                tail = "\n--- the worker's log, last 60 lines ---\n" + "\n".join(
                    log.read_text(errors="replace").splitlines()[-60:])
            raise AssertionError(f"{waiting_for} after {timeout_s:.0f}s; seen {summary}{tail}")
        for records in (await consumer.getmany(timeout_ms=300)).values():
            for record in records:
                payload = orjson.loads(record.value)
                error = schemas.first_error(payload["type"], payload)
                assert error is None, f"{record.topic}: {payload['type']} breaks its schema: {error}"
                seen.append(Out(record.topic.removeprefix(prefix), record.key, payload))

    try:
        while not until(seen):
            await read("outputs not complete")
        # What ``until`` names was committed, and with it everything committed before it:
        # its own transaction's records on other topics, earlier transactions, on any
        # partition. All of that is below each partition's end now; read up to there, so
        # that an output the test finds absent was not merely not fetched yet. The end is
        # the high watermark, not the last stable offset: another producer's transaction
        # still open would hold that below records committed after it began.
        ends = await _ends_now(bootstrap, consumer.assignment())
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            await read("the outputs committed so far not all read")
        return seen
    finally:
        await consumer.stop()


async def _ends_now(bootstrap: str, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
    """Each partition's end (its high watermark: committed or not) as the broker has it now."""
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await probe.start()
    try:
        return dict(await probe.end_offsets(list(partitions)))
    finally:
        await probe.stop()


def collect(bootstrap: str, prefix: str, until: Callable[[list[Out]], bool], worker: Worker | None = None,
            timeout_s: float = 90.0) -> list[Out]:
    """Read every output topic from the start until ``until(outputs)`` holds, then on to
    each partition's end as it was then; each output is checked against its JSON Schema
    on the way.

    Topics and partitions are fetched independently: only what ``until`` requires is sure
    to have been read when it holds. Reading on to the ends makes sure of everything
    committed no later than that — so also of absences — but not of what is committed
    later (a unit still being worked on): whatever a test asserts is there must still be
    among its conditions, and an absence means something only for outputs that would
    have been committed with or before what the conditions name."""
    return asyncio.run(_collect(bootstrap, prefix, until, timeout_s, worker.check_alive if worker else lambda: None,
                                worker.log if worker else None))


async def alter_topic(bootstrap: str, topic: str, config: dict[str, str]) -> None:
    """Set ``topic``'s own settings to ``config`` (all of them: the rest go back to the
    broker's defaults) and wait until the broker shows them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=config)])
        for _ in range(100):  # the broker applies it from the controller's metadata a moment later
            wanted = ConfigResource(ConfigResourceType.TOPIC, topic, dict.fromkeys(config))
            [response] = await admin.describe_configs([wanted])
            entries = response.to_object()["resources"][0]["config_entries"]
            if {e["config_names"]: e["config_value"] for e in entries} == config:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{topic} never showed {config}")
    finally:
        await admin.close()
