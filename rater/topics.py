"""The topics of ``topics/topics.toml``: read the declarations, create or check them."""

from __future__ import annotations

import asyncio
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from rater.resources import data_dir

ROLES = ("input", "internal", "output")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One declared topic (logical name, without the prefix)."""

    name: str
    role: str
    partitions: int
    replication_factor: int
    min_insync_replicas: int
    config: dict[str, str] = field(default_factory=dict)


def load_topics(path: Path | None = None) -> dict[str, TopicSpec]:
    """Read and check the declarations; inputs must share one partition count."""
    path = path or data_dir("topics") / "topics.toml"
    data = tomllib.loads(path.read_text())
    defaults = data.get("defaults", {})
    specs: dict[str, TopicSpec] = {}
    for name, entry in data.get("topic", {}).items():
        role = entry.get("role")
        if role not in ROLES:
            raise ValueError(f"{path}: topic {name}: role {role!r} is not one of {ROLES}")
        specs[name] = TopicSpec(
            name=name,
            role=role,
            partitions=int(entry.get("partitions", defaults.get("partitions", 1))),
            replication_factor=int(entry.get("replication_factor", defaults.get("replication_factor", 1))),
            min_insync_replicas=int(entry.get("min_insync_replicas", defaults.get("min_insync_replicas", 1))),
            config={k: str(v) for k, v in entry.get("config", {}).items()},
        )
    counts = {s.partitions for s in specs.values() if s.role in ("input", "internal")}
    if len(counts) != 1:
        raise ValueError(f"{path}: input and internal topics must be co-partitioned, found {sorted(counts)}")
    return specs


def input_partitions(specs: dict[str, TopicSpec]) -> int:
    """The shared partition count of the inputs (and so of the state changelogs)."""
    return next(s.partitions for s in specs.values() if s.role == "input")


async def wait_for_leaders(admin: Any, names: list[str], timeout_s: float = 30.0) -> None:
    """Wait until every partition of ``names`` has a leader (new topics take a moment)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        if all(
            t.get("error_code", 0) == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        ):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"topics without leaders after {timeout_s:.0f}s: {names}")
        await asyncio.sleep(0.1)


CHECKED_CONFIGS = frozenset({"cleanup.policy", "max.message.bytes", "message.timestamp.type"})
"""Settings an existing topic must have as declared: a changelog that deletes old
records loses state, a topic that takes smaller records stops the worker (a larger
limit is fine: ``max.message.bytes`` is checked as a minimum), a tick topic that keeps
the producer's timestamps (``CreateTime``) gives the worker no measure of the broker's
clock. Other differences (retention, say) are the operator's to make and are only
reported."""
AT_LEAST = frozenset({"max.message.bytes"})


def _enough(have: str | None, want: str) -> bool:
    """Whether a limit ``have`` is at least ``want``."""
    return have is not None and have.isdigit() and int(have) >= int(want)


async def _config_mismatches(admin: AIOKafkaAdminClient, prefix: str, specs: list[TopicSpec],
                             report: Any) -> list[str]:
    """What differs between the existing topics' settings and the declared ones."""
    wanted = [s for s in specs if s.config]
    if not wanted:
        return []
    resources = [ConfigResource(ConfigResourceType.TOPIC, prefix + s.name, dict.fromkeys(s.config)) for s in wanted]
    actual: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            actual[resource["resource_name"]] = {
                entry["config_names"]: entry["config_value"] for entry in resource["config_entries"]}
    wrong: list[str] = []
    for spec in wanted:
        name = prefix + spec.name
        for key, value in spec.config.items():
            have = actual.get(name, {}).get(key)
            if have != value:
                line = f"{name} has {key}={have}, topics.toml says {value}"
                if key in AT_LEAST and _enough(have, value):
                    report(f"note: {line} (a larger limit is fine)")
                elif key in CHECKED_CONFIGS:
                    wrong.append(line)
                else:
                    report(f"note: {line}")
    return wrong


async def ensure_topics(
    bootstrap: str,
    prefix: str = "",
    *,
    partitions: int | None = None,
    path: Path | None = None,
    report: Any = print,
) -> dict[str, str]:
    """Create the missing topics and check the existing ones' partition counts and
    the settings in :data:`CHECKED_CONFIGS`.

    ``partitions`` overrides the declared count for every topic (tests use small
    counts). Returns logical name → state (``created`` / ``exists``); raises
    ``RuntimeError`` when an existing topic has the wrong partition count or setting.
    """
    specs = load_topics(path)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        existing = {
            t["topic"]: len(t["partitions"])
            for t in await admin.describe_topics([prefix + n for n in specs])
            if t.get("error_code", 0) == 0
        }
        outcome: dict[str, str] = {}
        wrong: list[str] = []
        missing: list[NewTopic] = []
        for spec in specs.values():
            name = prefix + spec.name
            want = partitions or spec.partitions
            if name in existing:
                outcome[spec.name] = "exists"
                if existing[name] != want:
                    wrong.append(f"{name} has {existing[name]} partitions, expected {want}")
                continue
            rf = min(spec.replication_factor, brokers)
            min_isr = min(spec.min_insync_replicas, max(1, rf - 1))
            if rf < spec.replication_factor:
                report(f"note: {name}: replication factor {rf} "
                       f"(declared {spec.replication_factor}; {brokers} broker(s))")
            config = dict(spec.config, **{"min.insync.replicas": str(min_isr)})
            missing.append(NewTopic(name, want, rf, topic_configs=config))
            outcome[spec.name] = "created"
        wrong += await _config_mismatches(admin, prefix, [s for s in specs.values() if outcome[s.name] == "exists"],
                                          report)
        if missing:
            await admin.create_topics(missing)
            await wait_for_leaders(admin, [t.name for t in missing])
        for spec_name, state in outcome.items():
            report(f"{prefix + spec_name}: {state}")
        if wrong:
            raise RuntimeError("topics do not match topics/topics.toml: " + "; ".join(wrong))
        return outcome
    finally:
        await admin.close()
