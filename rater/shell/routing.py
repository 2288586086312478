"""Which worker answers for which tenant: the partition → URL map of the consumer group,
and the one hop that takes a request to the owner (docs/api.md, "Routing").

Kafka Streams' ``application.server`` pattern: every member sends the URL it serves the
API on in its subscription's user data; the group leader assigns the partitions exactly
as the range assignor does (a worker owns partition *p* of every input topic: they are
co-partitioned by tenant) and puts the whole partition → URL map in every member's
assignment user data. Each worker so knows, from the same generation of the group, who
owns every partition.

The assignor's protocol is ``rater-range`` (version 0), and it is the only one a worker
offers: aiokafka 0.14 sends one JoinGroup per assignor given (aio-libs/aiokafka#1168), the
second with other protocols than the first, which makes the coordinator start a new
rebalance — with two workers, a storm of them that held a busy machine's group without an
assignment for over a minute. Workers of a version that offered only ``range`` cannot join
the same group: such an upgrade stops the old workers first (docs/api.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

log = logging.getLogger("rater.routing")

FORWARDED = "Rater-Forwarded-By"
"""The header of a request one worker forwarded to another (its value: the forwarder's
URL). A forwarded request is answered by the worker it reached, never forwarded again."""
ANSWERED = "Rater-Answered-By"
"""The header of a tenant answer: the URL of the worker that read the state."""
MAX_URL = 2048


def _url_of(user_data: bytes) -> str | None:
    """The URL a member sent (None: none, or not ours to read)."""
    try:
        data = orjson.loads(user_data) if user_data else None
    except orjson.JSONDecodeError:
        return None
    url = data.get("url") if isinstance(data, dict) else None
    return url if isinstance(url, str) and 0 < len(url) <= MAX_URL else None


class UrlRangeAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """The range assignment, with the partition → URL map for every member.

    aiokafka calls an assignor's ``metadata``, ``assign`` and ``on_assignment`` on the
    object it is given: an instance, here, that knows this worker's URL and keeps the
    latest map."""

    name = "rater-range"
    version = 0

    def __init__(self, url: str = "") -> None:
        self.url = url
        """This worker's advertised URL (set before the consumer joins)."""
        self.urls: dict[int, str] = {}
        """Partition number → the URL of the worker that owns it, as of the last assignment."""

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), orjson.dumps({"url": self.url}))

    def assign(self, cluster: ClusterMetadata,
               members: Mapping[str, ConsumerProtocolMemberMetadata]) -> dict[str, ConsumerProtocolMemberAssignment]:
        """The range assignor's assignment, each member's user data the partition → URL map."""
        ranged = RangePartitionAssignor.assign(cluster, members)
        urls: dict[str, str] = {}
        for member_id, assignment in ranged.items():
            url = _url_of(members[member_id].user_data)
            if url is None:
                log.warning("group member %s sent no URL: its partitions are answered by it alone", member_id)
                continue
            for _topic, partitions in assignment.assignment:
                for p in partitions:
                    urls[str(p)] = url
        shared = orjson.dumps({"v": 1, "urls": urls})
        return {member_id: ConsumerProtocolMemberAssignment(assignment.version, assignment.assignment, shared)
                for member_id, assignment in ranged.items()}

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        self.urls = routes_of(assignment.user_data)

    def forget(self) -> None:
        """A rebalance began: the map is no longer the group's (until the next assignment)."""
        self.urls = {}


def routes_of(user_data: bytes) -> dict[int, str]:
    """The partition → URL map of an assignment's user data ({} when it holds none)."""
    try:
        data: Any = orjson.loads(user_data) if user_data else {}
    except orjson.JSONDecodeError:
        return {}
    urls = data.get("urls") if isinstance(data, dict) and data.get("v") == 1 else None
    if not isinstance(urls, dict):
        return {}
    return {int(p): url for p, url in urls.items() if p.isdigit() and isinstance(url, str)}


def advertised_url(configured: str | None, host: str, port: int) -> str:
    """This worker's URL for the others: ``RATER_ADVERTISED_URL``, else the web server's
    host and port (a wildcard address is no address to call: the host's name instead)."""
    if configured:
        return configured.rstrip("/")
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - recognising the wildcard, not binding to it
        import socket  # noqa: PLC0415 - only for this default

        host = socket.gethostname()
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{port}"
