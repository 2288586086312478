"""The rater's work inside a Faust agent: what ``make bench-stream`` measures against the
rater worker and the pass-through (issue 15 item 3), so anyone can reproduce why the
money path is not on Faust.

    .venv/bin/python benchmarks/faust_rater.py --bootstrap HOST:PORT --prefix P. \\
        --app-id P.faust --data-dir DIR [--guarantee at_least_once|exactly_once]

It does the same work as a ``rater worker`` on the same input: one Faust agent reads
``account-commands`` and ``cdrs`` (co-partitioned by tenant), takes up to ``--take``
events at a time (``stream.take_events``), and hands each partition's share to the same
:class:`~rater.shell.task.PartitionTask` the worker runs — the same edge
(:mod:`rater.edge`: msgspec decoding and validation, dead letters), the same core
(:func:`rater.core.engine.apply`), the same output bytes. The state lives in a Faust
table (RocksDB, its changelog ``{app id}-state-changelog``): the task reads it through
:class:`TableStore`, and every record of a batch's changelog (tenant states, id records,
users, usage, the partition record) is written to the table, which sends it to the
changelog itself. Then the outputs are sent and the producer is flushed before the
batch's events are acknowledged (``at_least_once``: no offset is committed ahead of its
writes); with ``exactly_once`` Faust's transaction manager sends them in the
partition's transaction, which Faust commits with the offsets every
``--commit-interval`` seconds.

Faust's table reads and writes use the RocksDB partition of the *current event*
(``/work/shared/evidence/faust-probe/README.md``: a read in a batch from another
partition silently returns None). The agent groups each batch by partition and points
the current event at one of that partition's events before the task reads or writes
anything (:func:`point_table_at`: a private Faust variable, Faust has no public way —
and the obvious private method loses input, see there). No metrics (the rater run
without metrics is the comparable one), no ticks (no wall clock: the CDRs' own times
drive each partition's clock, as in the rater with ticks off).

Not a product: no rebalance handling beyond Faust's own (a task is dropped when its
partition is revoked), no API, no dead-letter containment beyond the task's own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import weakref
from pathlib import Path
from typing import Any, cast

import faust
import faust.streams as faust_streams
from faust.transport.producer import ProducerBuffer
from faust.types import EventT, StreamT

from rater import edge
from rater.catalog import rating_context
from rater.core.context import RatingContext
from rater.shell.task import TENANT_KEYS, PartitionTask

INPUTS = ("account-commands", "cdrs")
"""The inputs the benchmark feeds (the worker also reads ``recharge-results`` and its ticks)."""
PARTITIONS = 4
TABLE = "state"


def changelog_name(app_id: str) -> str:
    """The topic Faust keeps the table in."""
    return f"{app_id}-{TABLE}-changelog"


class TableStore:
    """A :class:`~rater.shell.task.Store` on a Faust table, for one partition: reads go
    through the table (the current event must be one of the partition's: the agent sets
    it), key scans (purges, the tenants at start) to the partition's RocksDB directly —
    a Faust table has no range scan."""

    def __init__(self, table: faust.Table[bytes, bytes], partition: int) -> None:
        self.table = table
        self.partition = partition

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.table.get(key)
        return value

    def _db(self) -> Any:
        return cast(Any, self.table.data)._db_for_partition(self.partition)

    def keys(self, prefix: bytes, limit: int, after: bytes = b"") -> list[bytes]:
        found: list[bytes] = []
        for key in self._db().keys(from_key=max(prefix, after)):
            if not key.startswith(prefix) or len(found) >= limit:
                break
            if key > after:
                found.append(key)
        return found

    def tenants(self) -> list[tuple[str, bytes]]:
        low, high = TENANT_KEYS
        found = []
        for key, value in self._db().items(from_key=low):
            if key >= high:
                break
            if not key.startswith(b"__faust"):  # Faust keeps its offset in the same key space
                found.append((key.decode(), value))
        return found


def point_table_at(event: EventT[bytes]) -> None:
    """Make ``event`` the current event of this task, for the table: its reads and writes
    go to the current event's partition. Only the context variable the table reads
    (private to Faust, which has no public way), not the stream's ``current_event``:
    ``take_events`` sets that one for the event it is adding, waits for the batch in
    hand to end, then reads it again to buffer the event — pointed elsewhere
    (``stream._set_current_event``, as the faust-probe did), it buffered an old event in
    place of the new one, which was acked without being processed: 2 to 4 rated CDRs of
    5,000–30,000 went missing, and the tenants' later CDRs were rated on a wrong balance."""
    faust_streams._current_event.set(weakref.ref(event))


def build_app(args: argparse.Namespace, ctx: RatingContext) -> faust.App:
    """The app, its topics, its table and its one agent."""
    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.bootstrap}",
        store="rocksdb://",
        datadir=str(args.data_dir),
        autodiscover=False,
        processing_guarantee=args.guarantee,
        topic_partitions=PARTITIONS,
        topic_replication_factor=1,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        broker_commit_interval=args.commit_interval,
        broker_commit_every=args.commit_every,
        broker_max_poll_records=args.max_poll_records,
        stream_buffer_maxsize=args.buffer_maxsize,
        stream_wait_empty=False,
        stream_recovery_delay=0.0,
        producer_linger=args.linger,
        producer_max_batch_size=256 * 1024,
        producer_acks=-1,
        consumer_max_fetch_size=4 * 1024 * 1024,
    )
    prefix = args.prefix
    names = {prefix + name: name for name in INPUTS}
    source = app.topic(*names, key_type=bytes, value_type=bytes, partitions=PARTITIONS)
    table = app.Table(TABLE, partitions=PARTITIONS, key_type=bytes, value_type=bytes)
    tasks: dict[int, PartitionTask] = {}

    async def rate(stream: StreamT[bytes]) -> None:
        producer = await app.maybe_start_producer()
        async for events in stream.take_events(args.take, within=args.within):
            by_partition: dict[int, list[EventT[bytes]]] = {}
            for event in events:
                by_partition.setdefault(event.message.partition, []).append(event)
            for p, of_p in by_partition.items():
                point_table_at(of_p[-1])
                task = tasks.get(p)
                if task is None:
                    task = tasks[p] = PartitionTask(p, ctx, TableStore(table, p), topic_prefix=prefix,
                                                    counting=False, partitions=PARTITIONS)
                records = [edge.Record(names[m.topic], p, m.offset, m.key, m.value, int(m.timestamp * 1000))
                           for m in (event.message for event in of_p)]
                batch = task.process(records)
                for key, value in batch.changelog():
                    if value is None:
                        with contextlib.suppress(KeyError):
                            del table[key]
                    else:
                        table[key] = value
                for out in batch.outputs:
                    await producer.send(prefix + out.topic, out.key, out.value, p, None, None)
            # every write and output of the batch is in Kafka before its events are acked
            await app.producer.flush()

    app.agent(source, name="rate")(rate)

    @app.on_partitions_revoked.connect  # type: ignore[misc]
    async def _revoked(_app: Any, revoked: Any, **_kwargs: Any) -> None:
        for tp in revoked:
            tasks.pop(tp.partition, None)

    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True, help="the topics' prefix (as RATER_TOPIC_PREFIX)")
    parser.add_argument("--app-id", required=True, help="Faust's app id: its consumer group")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--guarantee", choices=("at_least_once", "exactly_once"), default="at_least_once")
    parser.add_argument("--take", type=int, default=8000, help="events per batch (stream.take_events)")
    parser.add_argument("--within", type=float, default=0.2, help="seconds a batch waits to fill")
    parser.add_argument("--max-poll-records", type=int, default=8000)
    parser.add_argument("--buffer-maxsize", type=int, default=32768)
    parser.add_argument("--linger", type=float, default=0.02, help="producer linger, seconds")
    parser.add_argument("--commit-interval", type=float, default=0.5)
    parser.add_argument("--commit-every", type=int, default=10_000)
    parser.add_argument("--producer-buffer", type=int, default=20_000,
                        help="records Faust's producer buffer (the table's changelog sends) holds before the stream"
                             " waits for it to drain (ProducerBuffer.max_messages, a class attribute, not a"
                             " setting; Faust's default 100)")
    # the defaults are the best found (docs/benchmarks.md, "Settings tried")
    parser.add_argument("--log-level", default="warn")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper().replace("WARN", "WARNING"))
    ProducerBuffer.max_messages = args.producer_buffer
    logging.getLogger("faust.transport.producer").setLevel(logging.ERROR)  # "producer buffer full", per batch
    ctx = rating_context()
    gc.collect()
    gc.freeze()  # as the worker does: the catalog out of the cyclic collector's sight
    gc.set_threshold(50_000, 20, 100)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = build_app(args, ctx)
    worker = faust.Worker(app, loop=loop, quiet=True, override_logging=False, loglevel=args.log_level)
    worker.spinner = None
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
