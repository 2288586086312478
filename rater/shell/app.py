"""The Faust app: topics, the tenant-state table and the agent that feeds the core.

One agent (one writer per tenant state) consumes every input topic; they are
co-partitioned by tenant, so a tenant's state lives in exactly one partition of the
``tenants`` table (RocksDB, changelog co-partitioned). For each message: decode at the
edge, apply in the core, write the tenant's state back, send the outputs, and flush the
producer before the next message (so no output is still buffered when Faust commits
the input's offset).
"""

from __future__ import annotations

import logging
from typing import Any

import faust
import orjson

from rater import edge
from rater.catalog import rating_context
from rater.core.clock import PartitionClock
from rater.core.context import RatingContext
from rater.core.engine import Rejection, Step, apply, balance_event
from rater.core.inputs import Cdr
from rater.core.state import TenantState
from rater.shell.settings import Settings
from rater.topics import input_partitions, load_topics

log = logging.getLogger("rater")

INPUT_TOPICS = ("cdrs", "account-commands", "recharge-results")
OUTPUT_TOPICS = ("rated-cdrs", "balances", "low-balance", "recharge-requests", "notifications", "dead-letters")


def _raw_topic(app: faust.App, *names: str, partitions: int) -> Any:
    return app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        internal=False,
    )


def create_app(settings: Settings, ctx: RatingContext | None = None) -> faust.App:
    """Build the worker's Faust app from ``settings``."""
    ctx = ctx or rating_context(settings.tariff_path, settings.catalog_path)
    partitions = settings.partitions or input_partitions(load_topics())
    prefix = settings.topic_prefix
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust wants the parent to exist
    session_s = settings.session_timeout_s
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.bootstrap.split(",")],
        store="rocksdb://",
        datadir=str(settings.data_dir),
        processing_guarantee="at_least_once",
        topic_partitions=partitions,
        topic_replication_factor=1,
        broker_session_timeout=session_s,
        broker_heartbeat_interval=max(0.5, session_s / 4),
        broker_request_timeout=max(30.0, session_s * 3),
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
    )
    inputs = _raw_topic(app, *(prefix + name for name in INPUT_TOPICS), partitions=partitions)
    outputs = {name: _raw_topic(app, prefix + name, partitions=partitions) for name in OUTPUT_TOPICS}
    tenants = app.Table(
        "tenants",
        default=None,
        partitions=partitions,
        key_type=str,
        value_type=bytes,  # raw bytes: the state is orjson of TenantState.to_dict()
    )

    def load_state(tenant_id: str) -> TenantState | None:
        raw = tenants.get(tenant_id)
        return None if raw is None else TenantState.from_dict(orjson.loads(raw))

    # The time each input partition has reached (SPEC §1.6). Kept in memory for now: after
    # a restart it starts again from the tenants' own "now", which the core never lets go
    # back. The tick topic and a durable clock come with the streaming service (issue 4).
    clocks: dict[int, PartitionClock] = {}

    @app.agent(inputs, name="rate")
    async def rate(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            record = edge.Record(
                topic=message.topic.removeprefix(prefix),
                partition=message.partition,
                offset=message.offset,
                key=message.key,
                value=message.value,
                timestamp_ms=round(message.timestamp * 1000),
            )
            decoded = edge.decode(record)
            outs: list[tuple[str, dict[str, Any]]] = []
            if isinstance(decoded, edge.Refusal):
                refusal: edge.Refusal | None = decoded
            else:
                clock = clocks.get(record.partition, PartitionClock())
                future = clock.refuses(decoded.end_us, ctx) if isinstance(decoded, Cdr) else None
                if future is not None:
                    step: Step = Step(None, rejection=Rejection("future", future))
                else:
                    step = apply(load_state(decoded.tenant_id), decoded, ctx, clock.now_us, record.position)
                    if isinstance(decoded, Cdr) and step.rejection is None:
                        clocks[record.partition] = clock.accept(decoded.end_us)
                refusal = None
                if step.rejection is not None:
                    refusal = edge.Refusal(step.rejection.reason, step.rejection.message, decoded.tenant_id)
                if step.changed and step.state is not None:
                    # also when the input was refused: work that fell due before it (a lot
                    # expiring) happened, and its outputs are sent
                    tenants[decoded.tenant_id] = orjson.dumps(step.state.to_dict())
                outs = [(out.stream, out.payload) for out in step.outputs]
                if step.state is not None and step.balance_cause is not None:
                    snapshot = balance_event(step.state, ctx, step.now_us, step.balance_cause)
                    outs.append((snapshot.stream, snapshot.payload))
            if refusal is not None:
                outs.append(("dead-letters", edge.dead_letter(record, message.topic, refusal)))
            for stream_name, payload in outs:
                await outputs[stream_name].send(key=message.key, value=edge.encode(payload))
            await app.producer.flush()

    return app
