"""The newcomer's demo: a local broker, the topics, a worker process and a small feed.

``rater demo`` starts everything, feeds one tenant (funds and a few calls) and prints
the rated CDRs and balances as the worker emits them. Ctrl-C (or ``--once`` after the
last expected output) stops the worker and the broker; nothing is left running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from rater.core.times import US_PER_S, format_time_us, parse_time_us
from rater.localkafka import LocalKafka, free_port, spawn, stop_process
from rater.topics import ensure_topics

DEMO_TENANT = "demo-tenant"


def demo_messages(tenant: str = DEMO_TENANT, start: str = "2026-11-02T09:00:00Z") -> list[tuple[str, dict[str, Any]]]:
    """(topic, event) pairs: a US tenant with $5.00 of credits and four calls."""

    def envelope(kind: str, event_id: str, at: str) -> dict[str, Any]:
        return {"type": kind, "schema_version": 1, "event_id": event_id, "tenant_id": tenant, "occurred_at": at}

    def cdr(n: int, seconds: int, destination: str, call_type: str = "user_out") -> dict[str, Any]:
        begin_us = parse_time_us(start) + n * 15 * 60 * US_PER_S
        begin, end = format_time_us(begin_us), format_time_us(begin_us + seconds * US_PER_S)
        return envelope("cdr", f"cdr-{n}", end) | {
            "usage_id": f"{tenant}-call-{n}",
            "call_id": f"call-{n}",
            "conference_id": None,
            "user_id": "alice",
            "user_location": "US",
            "call_type": call_type,
            "number_type": "geographic",
            "caller_number": "+14155550100",
            "destination_number": destination,
            "start_time": begin,
            "end_time": end,
            "duration_seconds": seconds,
        }

    return [
        ("account-commands", envelope("tenant_upserted", "cmd-1", start) | {
            "command_id": "cmd-1", "country": "US", "currency": "USD", "billing_model": "prepaid_credits",
        }),
        ("account-commands", envelope("licenses_assigned", "cmd-2", start) | {
            "command_id": "cmd-2", "user_id": "alice", "usage_location": "US", "capabilities": ["PAYG"],
        }),
        ("account-commands", envelope("funds_added", "cmd-3", start) | {
            "command_id": "cmd-3", "amount": "5.00", "currency": "USD", "purchased_at": start,
        }),
        ("cdrs", cdr(1, 125, "+12125550123")),
        ("cdrs", cdr(2, 42, "+442071838750")),
        ("cdrs", cdr(3, 600, "+4930901820")),
        ("cdrs", cdr(4, 95, "+14155550199", call_type="user_in")),
    ]


async def produce(bootstrap: str, prefix: str, messages: list[tuple[str, dict[str, Any]]]) -> None:
    """Send ``messages`` keyed by their tenant, in order, and wait until all are acked."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for topic, event in messages:
            await producer.send_and_wait(prefix + topic, orjson.dumps(event), key=event["tenant_id"].encode())
    finally:
        await producer.stop()


async def feed_and_watch(  # noqa: PLR0917 - one call site, every argument named there
    bootstrap: str,
    prefix: str,
    messages: list[tuple[str, dict[str, Any]]],
    show: Callable[[str, dict[str, Any]], None],
    alive: Callable[[], None],
    once: bool,
    timeout_s: float,
) -> bool:
    """Feed the account commands, wait for the funded balance, feed the CDRs, and print
    every output event. Returns whether every CDR was rated (with ``once``: in time).

    Input topics are not ordered against each other (SPEC §1.6): a CDR sent together with
    its tenant's first command may be consumed first and dead-lettered ``unknown_tenant``,
    so the demo waits for the account to exist before it places calls.
    """
    commands = [m for m in messages if m[0] != "cdrs"]
    cdrs = [m for m in messages if m[0] == "cdrs"]
    expected = len(cdrs)
    last_command = commands[-1][1]["command_id"]
    consumer = AIOKafkaConsumer(
        *(prefix + t for t in ("rated-cdrs", "balances", "dead-letters")),
        bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        isolation_level="read_committed", group_id=None, enable_auto_commit=False,
    )
    await consumer.start()
    try:
        await produce(bootstrap, prefix, commands)
        print(f"fed {len(commands)} account commands; waiting for the worker ...", flush=True)
        deadline = time.monotonic() + timeout_s
        funded, rated = False, 0
        while time.monotonic() < deadline or not once:
            alive()
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    topic, event = record.topic.removeprefix(prefix), orjson.loads(record.value)
                    show(topic, event)
                    funded = funded or (topic == "balances" and event["caused_by"] == last_command)
                    rated += topic == "rated-cdrs"
            if funded and cdrs:
                await produce(bootstrap, prefix, cdrs)
                print(f"fed {len(cdrs)} CDRs (Ctrl-C stops the demo)", flush=True)
                cdrs = []
            if once and funded and not cdrs and rated >= expected:
                return True
        return False
    finally:
        await consumer.stop()


def _print_event(topic: str, event: dict[str, Any]) -> None:
    if topic == "rated-cdrs":
        print(
            f"rated-cdrs  {event['usage_id']:<20} {event['call_type']:<9} {event['destination_number']:<14}"
            f" {event['duration_seconds']:>4}s  {event['status']:<16} charge={event['charge']} "
            f"{event['currency']}  balance_after={event['balance_after']}",
            flush=True,
        )
    elif topic == "balances":
        print(
            f"balances    {event['tenant_id']:<20} balance={event['balance']} {event['currency']} "
            f"({event['status']}, {len(event['lots'])} lot(s))  caused_by={event['caused_by']}",
            flush=True,
        )
    else:
        print(f"dead-letter {event['reason']}: {event['message']}", flush=True)


def run_demo(once: bool = False, timeout_s: float = 120.0) -> int:
    """Run the demo; returns the process exit code."""
    workdir = Path(tempfile.mkdtemp(prefix="rater-demo-"))
    code = 1
    kafka: LocalKafka | None = None
    worker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    prefix = os.environ.get("RATER_TOPIC_PREFIX", f"demo{int(time.time())}." if bootstrap else "")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # retries while new topics settle
    try:
        if not bootstrap:
            print("starting a local Apache Kafka broker (first run fetches its jars) ...", flush=True)
            kafka = LocalKafka(workdir=workdir / "kafka").start()
            bootstrap = kafka.bootstrap
        print(f"broker: {bootstrap}", flush=True)
        asyncio.run(ensure_topics(bootstrap, prefix, report=lambda _line: None))
        env = dict(
            os.environ,
            RATER_BOOTSTRAP=bootstrap,
            RATER_TOPIC_PREFIX=prefix,
            RATER_APP_ID=f"{prefix}rater-demo",
            RATER_DATA_DIR=str(workdir / "worker-data"),
            RATER_WEB_PORT=str(web_port := free_port()),
            RATER_SESSION_TIMEOUT="6",
            RATER_LOG_LEVEL="warn",
        )
        worker_log = workdir / "worker.log"
        worker = spawn([sys.executable, "-m", "rater", "worker"], log=worker_log, env=env)
        print(f"worker started (pid {worker.pid}, log {worker_log})", flush=True)
        print(f"worker metrics: http://127.0.0.1:{web_port}/metrics (health: /healthz, readiness: /readyz)",
              flush=True)
        messages = demo_messages()

        def alive() -> None:
            if worker is not None and worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}; see {worker_log}")

        done = asyncio.run(feed_and_watch(bootstrap, prefix, messages, _print_event, alive, once, timeout_s))
        if done:
            code = 0
        else:
            print(f"the demo's CDRs were not all rated within {timeout_s:.0f}s; see {worker_log}")
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        code = 0
    except (RuntimeError, OSError) as exc:
        print(f"demo failed: {exc}", flush=True)
    finally:
        if worker is not None:
            stop_process(worker, timeout_s=20)
        if kafka is not None:
            kafka.stop()
        if code == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", flush=True)
        print("stopped: worker and broker are down", flush=True)
    return code
