"""Start the notifier: check the topics on the broker, then run the Faust worker until
SIGTERM or Ctrl-C (Faust's worker stops its agents and commits what they finished)."""

from __future__ import annotations

import asyncio
import logging

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from rater.notifier.app import TABLES, Notifier, least_buffer
from rater.notifier.settings import FAILURES, TOPICS, NotifySettings
from rater.topics import wait_for_leaders

log = logging.getLogger("rater.notify")

PRODUCTION_REPLICATION = 3


class NewChangelogAsInfo(logging.Filter):
    """aiokafka's ERROR record of a topic "not found in cluster metadata" becomes INFO
    when the topic is one of the notifier's table changelogs: on a first start the
    notifier creates them and aiokafka asks for their metadata before the broker has it,
    then finds them a moment later (a missing input topic stops the start instead)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if (record.levelno >= logging.ERROR and "not found in cluster metadata" in message
                and f"Topic {self.prefix}" in message and "-changelog" in message):
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


class RebalanceCommitAsInfo(logging.Filter):
    """aiokafka's ERROR record of an offset commit refused because the group is
    rebalancing (``IllegalGeneration``, ``UnknownMemberId``, ``RebalanceInProgress``)
    becomes INFO: the notifier commits every second, a rebalance can start between its
    check and the commit, and nothing is lost — the offsets are committed again after
    the rebalance, or the records are read again (docs/notifications.md)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno >= logging.ERROR and message.startswith("OffsetCommit failed") and any(
                name in message for name in ("IllegalGeneration", "UnknownMemberId", "RebalanceInProgress")):
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


class StartFailed(Exception):
    """The notifier cannot start (the message says why, in one line)."""


async def preflight(settings: NotifySettings) -> tuple[int, int]:
    """(partition count shared by the notifier's topics, replication factor for its
    table changelogs); :class:`StartFailed` when a topic is missing or they differ."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, request_timeout_ms=30_000)
    try:
        await admin.start()
        brokers = len((await admin.describe_cluster())["brokers"])
        described = await admin.describe_topics(None)  # all topics: naming one could auto-create it
    except KafkaError as exc:
        raise StartFailed(f"cannot read the topics from the Kafka broker at {settings.bootstrap}"
                          f" (RATER_BOOTSTRAP): {exc}") from None
    finally:
        await admin.close()
    counts = {t["topic"]: len(t["partitions"]) for t in described if t.get("error_code", 0) == 0}
    names = [settings.topic_prefix + name for name in TOPICS]
    missing = [name for name in names if name not in counts]
    if missing:
        raise StartFailed(f"topics missing: {', '.join(missing)}; `rater topics create` makes them (with the same"
                          " RATER_BOOTSTRAP and RATER_TOPIC_PREFIX)")
    found = {counts[name] for name in names if name != settings.topic_prefix + FAILURES}
    if len(found) != 1:
        shown = ", ".join(f"{name} {counts[name]}" for name in names)
        raise StartFailed(f"the notifier's topics must have one partition count (co-partitioned by tenant): {shown}")
    partitions, replication = found.pop(), min(PRODUCTION_REPLICATION, brokers)
    if settings.buffer < least_buffer(partitions):
        raise StartFailed(f"RATER_NOTIFY_BUFFER={settings.buffer} is too small for {partitions} partitions: at least"
                          f" {least_buffer(partitions)}, or a buffer can fill and stop every topic's reading")
    await _ensure_changelogs(settings, counts, partitions, replication)
    return partitions, replication


async def _ensure_changelogs(settings: NotifySettings, counts: dict[str, int], partitions: int,
                             replication: int) -> None:
    """Create the tables' changelogs before Faust starts. Faust would create them itself,
    but on a first start its table writes can then run before the new topics' metadata
    reaches the client, and fail (``PartitionsMismatch``: "has 0 partitions")."""
    missing = [NewTopic(name, partitions, replication, topic_configs={
        "cleanup.policy": "compact", "min.insync.replicas": str(max(1, min(2, replication - 1)))})
        for name in changelog_names(settings) if name not in counts]
    wrong = [f"{name} {counts[name]}" for name in changelog_names(settings)
             if name in counts and counts[name] != partitions]
    if wrong:
        raise StartFailed(f"the notifier's table changelogs must have {partitions} partitions as its topics:"
                          f" {', '.join(wrong)}")
    if not missing:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, request_timeout_ms=30_000)
    try:
        await admin.start()
        await admin.create_topics(missing)
        await wait_for_leaders(admin, [topic.name for topic in missing])
        log.info("created %s", ", ".join(topic.name for topic in missing))
    except KafkaError as exc:
        raise StartFailed(f"cannot create the notifier's table changelogs: {exc}") from None
    finally:
        await admin.close()


def changelog_names(settings: NotifySettings) -> list[str]:
    """The topics Faust keeps the tables in (``{app id}-{table}-changelog``)."""
    return [f"{settings.app_id}-{table}-changelog" for table in TABLES]


def run_notifier(settings: NotifySettings) -> int:
    """Run until stopped; the exit code (1: could not start)."""
    try:
        partitions, replication = asyncio.run(preflight(settings))
    except StartFailed as exc:
        log.error("%s", exc)
        return 1
    logging.getLogger("aiokafka.cluster").addFilter(NewChangelogAsInfo(settings.app_id))
    logging.getLogger("aiokafka.consumer.group_coordinator").addFilter(RebalanceCommitAsInfo())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    notifier = Notifier(settings, partitions=partitions, replication=replication, loop=loop)
    if settings.webhook_secret is None:
        log.warning("RATER_NOTIFY_WEBHOOK_SECRET is not set: webhooks cannot be signed and are given up"
                    " (notification-failures)")
    log.info("rater notify: group %s, %d partitions, web on %s:%d", settings.app_id, partitions,
             settings.web_host, settings.web_port)
    worker = faust.Worker(notifier.app, loop=loop, quiet=True, override_logging=False,
                          loglevel=settings.log_level)
    worker.spinner = None  # no terminal spinner (its escape codes would land in the log)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0)
    else:
        code = 0
    return 3 if notifier.failed else code
