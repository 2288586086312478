"""``rater export usage``: a tenant's rated CDRs of one billing month as CSV (RFC 4180),
in the columns of a PSTN usage report (``docs/export.md`` describes each column).

Only the tenant's partition of ``{prefix}rated-cdrs`` is read (the rater keys every
output by tenant id and places it by Kafka's default partitioner, murmur2), with
``read_committed``, from the first offset whose timestamp is at or after
:data:`LOOK_BEFORE` ahead of the month's start, up to the end offsets taken when the
export starts (or the first offset past :data:`LOOK_AFTER` the month's end, if sooner):
rated CDRs of a month are made during the month and its grace (SPEC §1.5; a record's
timestamp is the broker's clock when the worker made it). ``--from-beginning`` reads
every retained record instead.

Exit codes: 0 written; 1 the broker or topic could not be used (nothing written to
``-o FILE``); 2 a bad option; 3 written, but the partition's oldest records are gone
(retention), so rows of the month may be missing.

Retention may delete records while they are read (the broker checks every few minutes,
and deletes a whole segment once its newest record is older than ``retention.ms``). The
consumer therefore never resets its position by itself (``auto_offset_reset="none"``:
the default, ``latest``, would jump to the end and write an empty CSV that looks
complete); a read that finds its next records gone goes on from the partition's new
first offset and exits 3.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import click

from rater.admin import BrokerError, OptionError, broker_options, run_bounded

TOPIC = "rated-cdrs"
LOOK_BEFORE = timedelta(days=2)
"""A CDR ending up to a day past the partition's clock is still rated (later ones are
``future``), so a month's first rated CDRs may be stamped up to a day before it starts;
one more day covers clock differences between hosts."""
LOOK_AFTER = timedelta(days=8)
"""CDRs of a closed month are rated for 7 days after it ends (the grace); later ones
are dead letters ``late``. One more day of margin."""
INCOMPLETE_EXIT = 3


def _text(value: object) -> str:
    return "" if value is None else str(value)


COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("Usage ID", lambda r: _text(r["usage_id"])),
    ("Call ID", lambda r: _text(r["call_id"])),
    ("User", lambda r: _text(r["user_id"])),
    ("User location", lambda r: _text(r["user_location"])),
    ("Caller ID", lambda r: _text(r["caller_number"])),
    ("Call type", lambda r: _text(r["call_type"])),
    ("Number type", lambda r: _text(r["number_type"])),
    ("Domestic/International", lambda r: _text(r["scope"])),
    ("Destination dialed", lambda r: _text(r["destination_country"])),
    ("Destination number", lambda r: _text(r["destination_number"])),
    ("Start time", lambda r: _text(r["start_time"])),
    ("End time", lambda r: _text(r["end_time"])),
    ("Duration seconds", lambda r: _text(r["duration_seconds"])),
    ("Connection fee", lambda r: _text(r["connection_fee"])),
    ("Charge", lambda r: _text(r["charge"])),
    ("Currency", lambda r: _text(r["currency"])),
    ("Capability", lambda r: _text(r["capability"])),
    ("Status", lambda r: _text(r["status"])),
    ("Uncollected", lambda r: _text(r["uncollected"])),
]
"""The CSV's header and how each column comes from a ``rated_cdr`` (docs/export.md)."""
HEADER = [name for name, _ in COLUMNS]


def row(rated: dict[str, Any]) -> list[str]:
    """A rated CDR as a CSV row of :data:`COLUMNS`."""
    return [cell(rated) for _, cell in COLUMNS]


def month_window(month: str) -> tuple[datetime, datetime]:
    """The month's first instant and the next month's (UTC); ``ValueError`` if ``month``
    is not ``YYYY-MM``."""
    if len(month) != 7 or month[4] != "-" or not (month[:4] + month[5:]).isdigit():
        raise ValueError(month)
    start = datetime(int(month[:4]), int(month[5:]), 1, tzinfo=UTC)
    end = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def tenant_partition(tenant: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) gives the key ``tenant``."""
    from aiokafka.partitioner import murmur2

    return int((murmur2(tenant.encode()) & 0x7FFFFFFF) % partitions)


@dataclass
class Summary:
    """What an export read and wrote."""

    partition: int = -1
    first_offset: int = 0
    stop_offset: int = 0
    records: int = 0
    rows: int = 0
    duplicates: int = 0
    other_months: int = 0
    incomplete: bool = False
    """The partition's oldest records were deleted and the month may have had some."""
    gone_before: int = 0
    """With :attr:`incomplete`: the partition holds no records before this offset."""
    notes: list[str] = field(default_factory=list)


class Progress:
    """Records read of the records to read: a rich bar on the terminal, or nothing."""

    def __init__(self, shown: bool) -> None:
        self.shown = shown
        self.bar: Any = None
        self.task: Any = None

    def start(self, total: int, label: str) -> None:
        if not self.shown:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("records"), TimeRemainingColumn(), console=Console(stderr=True))
        self.bar.start()
        self.task = self.bar.add_task(label, total=total)

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


async def read_month(bootstrap: str, topic: str, tenant: str, month: str, *, write: Callable[[list[str]], None],
                     progress: Progress, from_beginning: bool, stall_s: float) -> Summary:
    """Read the tenant's rated CDRs of ``month`` and ``write`` each as a row."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    start, end = month_window(month)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", client_id="rater-export",
                                auto_offset_reset="none",  # records deleted under the read: an error, not a jump
                                max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=16 * 1024 * 1024)
    summary = Summary()
    try:
        try:
            async with asyncio.timeout(stall_s):
                await consumer.start()
                cluster = await consumer._client.fetch_all_metadata()  # topics() keeps only the names
                partitions = cluster.partitions_for_topic(topic)
                if not partitions:
                    raise BrokerError(f"topic {topic} does not exist on {bootstrap}; `rater topics create` makes it")
                tp = TopicPartition(topic, tenant_partition(tenant, len(partitions)))
                summary.partition = tp.partition
                consumer.assign([tp])
                begin = (await consumer.beginning_offsets([tp]))[tp]
                last = (await consumer.end_offsets([tp]))[tp]  # read_committed: the last stable offset
                if begin < 0 or last < 0:  # -1 is the client's "unknown offset": not "nothing to read"
                    raise BrokerError(f"{topic} partition {tp.partition}: the broker gave no usable offsets"
                                      f" (first {begin}, end {last})")
                first, stop = begin, last
                if not from_beginning:
                    found = await consumer.offsets_for_times({tp: int((start - LOOK_BEFORE).timestamp() * 1000)})
                    after = await consumer.offsets_for_times({tp: int((end + LOOK_AFTER).timestamp() * 1000)})
                    first = found[tp].offset if found[tp] is not None else last
                    stop = min(last, after[tp].offset) if after[tp] is not None else last
                    # records were deleted (retention) and none retained is older than the
                    # window: some of the deleted ones may have been of this month
                    summary.incomplete = begin > 0 and first == begin
                    summary.gone_before = begin
                elif begin > 0:
                    summary.notes.append(f"the partition's records before offset {begin} are gone (retention)")
        except TimeoutError:
            raise BrokerError(f"no answer from the Kafka broker at {bootstrap} within {stall_s:g}s") from None
        summary.first_offset, summary.stop_offset = first, stop
        progress.start(stop - first, f"{tenant} {month}")
        if first < stop:
            await _read(consumer, tp, tenant, month, first, stop, write, progress, summary, stall_s)
        return summary
    finally:
        progress.stop()
        await consumer.stop()


async def _read(consumer: Any, tp: Any, tenant: str, month: str, first: int, stop: int,  # noqa: PLR0917
                write: Callable[[list[str]], None], progress: Progress, summary: Summary, stall_s: float) -> None:
    """Read ``tp`` from ``first`` up to ``stop``; rows of the tenant's ``month`` only.

    Records deleted (retention) before they were read make the summary incomplete; the
    read goes on from the partition's new first offset."""
    import orjson
    from aiokafka.errors import OffsetOutOfRangeError

    key = tenant.encode()
    consumer.seek(tp, first)
    moved_at = time.monotonic()
    position = first
    while position < stop:
        try:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=5_000)
        except OffsetOutOfRangeError:
            position, moved_at = await _past_deleted(consumer, tp, position, stop, summary), time.monotonic()
            progress.update(min(position, stop) - first)
            continue
        for record in batch.get(tp, []):
            if record.offset >= stop:
                break
            summary.records += 1
            if record.key != key:  # another tenant on the same partition
                continue
            rated = orjson.loads(record.value)
            if rated.get("type") != "rated_cdr" or rated.get("tenant_id") != tenant:
                continue
            if rated["billing_month"] != month:
                summary.other_months += 1
            elif rated["status"] == "duplicate":
                summary.duplicates += 1
            else:
                write(row(rated))
                summary.rows += 1
        now = await consumer.position(tp)
        if now != position:
            position, moved_at = now, time.monotonic()
            progress.update(min(position, stop) - first)
        elif time.monotonic() - moved_at > stall_s:
            raise BrokerError(f"reading {tp.topic} partition {tp.partition} stalled at offset {position} "
                              f"(of {stop}) for {stall_s:g}s")


async def _past_deleted(consumer: Any, tp: Any, position: int, stop: int, summary: Summary) -> int:
    """The records from ``position`` on were deleted before they were read: note it,
    make the summary incomplete and seek to the partition's new first offset (returned)."""
    begin: int = (await consumer.beginning_offsets([tp]))[tp]
    if begin <= position:  # nothing was deleted: out of range for another reason
        raise BrokerError(f"{tp.topic} partition {tp.partition}: offset {position} is out of range, though the"
                          f" partition starts at {begin}")
    summary.incomplete, summary.gone_before = True, begin
    summary.notes.append(f"records {position}–{min(begin, stop) - 1} were deleted (retention) before they were read")
    if begin < stop:
        consumer.seek(tp, begin)
    return begin


def _csv_writer(out: TextIO) -> Any:
    return csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)


def _show_progress(flag: bool | None, output: str | None) -> bool:
    """A bar only when a person watches: stderr and stdout on a terminal and the CSV
    going to a file (``--progress`` / ``--no-progress`` decide otherwise)."""
    if flag is not None:
        return flag
    return output is not None and sys.stderr.isatty() and sys.stdout.isatty()


@click.group("export")
def export() -> None:
    """Export what the rater made (CSV)."""


@export.command("usage")
@click.option("--tenant", "tenant_id", required=True, help="tenant id")
@click.option("--month", required=True, metavar="YYYY-MM", help="billing month (UTC)")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="write the CSV to this file (written whole or not at all) [default: stdout]")
@click.option("--from-beginning", is_flag=True,
              help="read every retained record of the tenant's partition, not only the month's window")
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="a progress bar on stderr [default: when -o FILE and on a terminal]")
@broker_options
def usage(*, tenant_id: str, month: str, output: str | None, from_beginning: bool, show_progress: bool | None,
          bootstrap: str, prefix: str, timeout: float) -> None:
    """A tenant's rated CDRs of one billing month as CSV (RFC 4180), one row per call.

    Duplicates (status duplicate) are left out; blocked and partially funded calls are
    in, with their Status. Exit codes: 0 written, 1 broker or topic unusable,
    2 bad option, 3 written but possibly incomplete (records deleted by retention).
    See docs/export.md for the columns.
    """
    try:
        month_window(month)
    except ValueError:
        raise OptionError(f"--month {month!r}: must be a month YYYY-MM, e.g. 2026-11") from None
    if not tenant_id or len(tenant_id) > 64 or not all(c.isascii() and (c.isalnum() or c in "._-")
                                                       for c in tenant_id):
        raise OptionError(f"--tenant {tenant_id!r}: must be 1–64 characters of A-Z a-z 0-9 . _ -")
    if output is None:
        stream = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=False)
        try:
            summary = _export(stream, tenant_id, month, bootstrap, prefix, timeout, from_beginning,
                              _show_progress(show_progress, output))
        finally:
            stream.flush()
            stream.detach()
    else:
        summary = _export_to_file(Path(output), tenant_id, month, bootstrap, prefix, timeout, from_beginning,
                                  _show_progress(show_progress, output))
    _report(summary, tenant_id, month, prefix + TOPIC)


def _export(stream: TextIO, tenant: str, month: str, bootstrap: str, prefix: str,  # noqa: PLR0917
            timeout: float, from_beginning: bool, shown: bool) -> Summary:
    writer = _csv_writer(stream)
    writer.writerow(HEADER)
    return run_bounded(  # type: ignore[no-any-return]
        lambda: read_month(bootstrap, prefix + TOPIC, tenant, month, write=writer.writerow,
                           progress=Progress(shown), from_beginning=from_beginning, stall_s=timeout),
        bootstrap, timeout_s=86_400)


def _export_to_file(path: Path, tenant: str, month: str, bootstrap: str, prefix: str,  # noqa: PLR0917
                    timeout: float, from_beginning: bool, shown: bool) -> Summary:
    """Write to a temporary file beside ``path``, renamed over it when complete."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path())
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream:
            summary = _export(stream, tenant, month, bootstrap, prefix, timeout, from_beginning, shown)
        os.chmod(temporary, 0o644)  # mkstemp makes it 0600
        os.replace(temporary, path)
        return summary
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _report(summary: Summary, tenant: str, month: str, topic: str) -> None:
    """One line on stderr (the CSV may be on stdout); exit 3 when possibly incomplete."""
    skipped = f"; {summary.duplicates} duplicate(s) left out" if summary.duplicates else ""
    click.echo(f"{summary.rows} row(s) of {tenant} for {month}{skipped} (read {summary.records} record(s) of"
               f" {topic} partition {summary.partition}, offsets {summary.first_offset}–{summary.stop_offset})",
               err=True)
    for note in summary.notes:
        click.echo(f"note: {note}", err=True)
    if summary.incomplete:
        click.echo(f"warning: {topic} partition {summary.partition} no longer holds its records before offset"
                   f" {summary.gone_before} (retention): rows of {month} may be missing", err=True)
        sys.exit(INCOMPLETE_EXIT)
