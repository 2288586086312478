"""What a worker checks before it joins its group: the broker answers, and every topic
of topics/topics.toml exists, with the inputs and the state changelog co-partitioned.

Without these checks a worker started before the broker gave a flood of aiokafka ERROR
lines, and one started before its topics idled for good with only aiokafka's "No
partition metadata" warnings. Now each wait is said once (a WARNING naming the broker,
or the missing topics and that ``rater topics create`` makes them), ``/readyz`` says
what the worker waits for, and a wait that lasts past its bound (``RATER_BROKER_WAIT``,
``RATER_TOPICS_WAIT``) stops the worker with one ERROR line (:class:`PreflightFailed`).
A stop asked for (SIGTERM, SIGINT) while waiting ends the wait at once.

A broker whose port answers before the cluster does (a broker still starting, a
container's published port before the process in it listens) made aiokafka's client log
one ERROR line per attempt to list the topics (``Unable connect to "host:port"``, and
``Unable connect to node with id …`` / ``Unable to update metadata from …`` once it had
the cluster's metadata). Those records, and only while an attempt of this wait runs, are
lowered to DEBUG (:func:`_retried_quietly`); the first one's text goes into the wait's
WARNING and, when the wait runs out, into its ERROR. The same records after the start (a
broker lost) stay ERROR.

The topics are read from the cluster's metadata of *all* topics: a metadata request
that names a topic asks the broker to create it when ``auto.create.topics.enable`` is
on, with the broker's partition count — never what the rater needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from rater.topics import load_topics

log = logging.getLogger("rater.preflight")

POLL_S = 1.0
"""How often a wait looks again."""


class PreflightFailed(RuntimeError):
    """The worker cannot start (the message says why and what to do)."""


def bootstrap_addresses(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` → (host, port) pairs (port 9092 when none is given)."""
    found: list[tuple[str, int]] = []
    for raw in bootstrap.split(","):
        item = raw.strip()
        if not item:
            continue
        host, colon, port = item.rpartition(":")
        if not colon or not port.isdigit():
            host, port = item, "9092"
        found.append((host.strip("[]"), int(port)))
    return found


async def _reachable(bootstrap: str, timeout_s: float = 3.0) -> str | None:
    """None when a TCP connection to some bootstrap address opens; else why not."""
    addresses = bootstrap_addresses(bootstrap)
    failed: list[str] = []
    for host, port in addresses:
        try:
            _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        except TimeoutError:
            failed.append(f"{host}:{port}: no answer in {timeout_s:g} s")
            continue
        except OSError as exc:
            failed.append(f"{host}:{port}: {exc.strerror or exc}")
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None
    return "; ".join(failed) if failed else f"no address in {bootstrap!r}"


RETRIED = ('Unable connect to "', "Unable connect to node with id ", "Unable to update metadata from ")
"""How aiokafka's client (logger ``aiokafka``) starts the ERROR records of one failed
connection or metadata request, which the preflight's wait tries again."""


class _Retried(logging.Filter):
    """Lowers the :data:`RETRIED` ERROR records to DEBUG and keeps the first one's text."""

    def __init__(self) -> None:
        super().__init__()
        self.first: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and isinstance(record.msg, str) and record.msg.startswith(RETRIED):
            if self.first is None:
                self.first = record.getMessage()
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            # the logger checked its level before this filter: check again
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


@contextlib.contextmanager
def _retried_quietly() -> Iterator[_Retried]:
    """For the ``with`` block only: aiokafka's client says a failed attempt at DEBUG (a
    filter on the ``aiokafka`` logger, which holds no other module's records; no other
    Kafka client of the worker runs before the preflight is done)."""
    source = logging.getLogger("aiokafka")
    quiet = _Retried()
    source.addFilter(quiet)
    try:
        yield quiet
    finally:
        source.removeFilter(quiet)


class _Wait:
    """One bounded wait of a start: when it runs out, and whether it was said yet."""

    __slots__ = ("deadline", "warned")

    def __init__(self, bound_s: float) -> None:
        self.deadline = time.monotonic() + bound_s
        self.warned = False


class Preflight:
    """The checks of one worker start; ``waiting`` is what /readyz shows meanwhile."""

    def __init__(self, bootstrap: str, prefix: str, *, broker_wait_s: float, topics_wait_s: float,
                 stopping: asyncio.Event) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.broker_wait_s = broker_wait_s
        self.topics_wait_s = topics_wait_s
        self.stopping = stopping
        self.waiting: str | None = None
        """What the worker is waiting for (None: nothing)."""
        self.partitions: int | None = None
        """The inputs' partition count, once the topics were found."""

    async def _again(self, wait: _Wait, waiting: str, *, failed: str, warning: str) -> bool:
        """One more round of a bounded wait for ``waiting`` (what /readyz shows): raises
        :class:`PreflightFailed` with ``failed`` once the wait's bound is past, says
        ``warning`` the first time, then waits :data:`POLL_S` — True when a stop was asked
        for meanwhile."""
        self.waiting = waiting
        if time.monotonic() >= wait.deadline:
            raise PreflightFailed(failed)
        if not wait.warned:
            log.warning("%s", warning)
            wait.warned = True
        try:
            await asyncio.wait_for(self.stopping.wait(), POLL_S)
        except TimeoutError:
            return False
        return True

    async def run(self) -> bool:
        """Run the checks; False when a stop was asked for meanwhile. Raises
        :class:`PreflightFailed` when a wait ran out or the topics cannot work."""
        try:
            if not await self._broker():
                return False
            return await self._topics()
        finally:
            self.waiting = None

    async def _broker(self) -> bool:
        wait = _Wait(self.broker_wait_s)
        while (why := await _reachable(self.bootstrap)) is not None:
            if await self._again(
                    wait, f"waiting for the Kafka broker at {self.bootstrap}",
                    failed=f"cannot reach the Kafka broker at {self.bootstrap} (RATER_BOOTSTRAP) after"
                           f" {self.broker_wait_s:g} s (RATER_BROKER_WAIT): {why}",
                    warning=f"cannot reach the Kafka broker at {self.bootstrap} (RATER_BOOTSTRAP): {why}; trying"
                            f" again for up to {self.broker_wait_s:g} s (RATER_BROKER_WAIT)"):
                return False
        if wait.warned:
            log.info("the Kafka broker at %s answers", self.bootstrap)
        return True

    async def _topics(self) -> bool:
        specs = load_topics()
        names = {spec.name: self.prefix + spec.name for spec in specs.values()}
        wait = _Wait(self.topics_wait_s)
        while True:
            counts = await self._counts()
            if counts is None:
                return False
            missing = sorted(name for name in names.values() if name not in counts)
            if not missing:
                break
            listed = ", ".join(missing)
            if await self._again(
                    wait, f"waiting for topics: {listed}",
                    failed=f"topics missing after {self.topics_wait_s:g} s (RATER_TOPICS_WAIT): {listed};"
                           " `rater topics create` makes them",
                    warning=f"topics missing: {listed}; `rater topics create` makes them (with the same"
                            " RATER_BOOTSTRAP and RATER_TOPIC_PREFIX); waiting for them for up to"
                            f" {self.topics_wait_s:g} s (RATER_TOPICS_WAIT)"):
                return False
        if wait.warned:
            log.info("every topic exists: starting")
        co_partitioned = sorted({names[s.name] for s in specs.values() if s.role in ("input", "internal")})
        found = {name: counts[name] for name in co_partitioned}
        if len(set(found.values())) != 1:
            shown = ", ".join(f"{name} {count}" for name, count in found.items())
            raise PreflightFailed("the inputs and the state changelog must have one partition count"
                                  f" (co-partitioned by tenant), found: {shown}")
        self.partitions = next(iter(found.values()))
        return True

    async def _counts(self) -> dict[str, int] | None:
        """Every topic's partition count, read from the cluster; None when a stop was asked
        for meanwhile. An error Kafka calls retriable (a broker of the cluster down or not
        ready yet, a leader moving: a worker restarted right after a broker died) is tried
        again, with a new client, for up to ``RATER_BROKER_WAIT``; any other stops the start."""
        wait = _Wait(self.broker_wait_s)
        while True:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=30_000)
            with _retried_quietly() as quiet:
                try:
                    await admin.start()
                    counts = await _partition_counts(admin)
                except KafkaError as exc:
                    said = f"{exc!r}" if quiet.first is None else f"{exc!r}; aiokafka: {quiet.first}"
                    if not exc.retriable:
                        raise PreflightFailed(f"cannot read the topics from the Kafka broker at {self.bootstrap}"
                                              f" (RATER_BOOTSTRAP): {said}") from None
                    error = said
                else:
                    if wait.warned:
                        log.info("the Kafka cluster at %s lists its topics", self.bootstrap)
                    elif quiet.first is not None:  # it got there, but not at once: worth a look
                        log.warning("the Kafka cluster at %s lists its topics, after: %s", self.bootstrap,
                                    quiet.first)
                    return counts
                finally:
                    await admin.close()
            if await self._again(
                    wait, f"waiting for the Kafka cluster at {self.bootstrap} to answer: {error}",
                    failed=f"cannot read the topics from the Kafka broker at {self.bootstrap} (RATER_BOOTSTRAP)"
                           f" after {self.broker_wait_s:g} s (RATER_BROKER_WAIT): {error}",
                    warning=f"the Kafka cluster at {self.bootstrap} could not list its topics ({error}): trying"
                            f" again for up to {self.broker_wait_s:g} s (RATER_BROKER_WAIT)"):
                return None


async def _partition_counts(admin: Any) -> dict[str, int]:
    """Every topic of the cluster → its partition count (topics the broker lists with an
    error, such as one being deleted, left out)."""
    described = await admin.describe_topics(None)  # all topics: naming one could auto-create it
    return {t["topic"]: len(t["partitions"]) for t in described if t.get("error_code", 0) == 0}

