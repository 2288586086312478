"""Worker settings from the environment (every one has a sane default).

A value the worker cannot use is a :class:`SettingsError` whose message names the
variable, the value and what it may be: the command line prints it as one line and
exits 1, before anything starts (no traceback: the message is the whole story).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

LOG_LEVELS = ("crit", "error", "warn", "info", "debug")
LOG_FORMATS = ("human", "json")

T = TypeVar("T")


class SettingsError(ValueError):
    """A ``RATER_*`` variable has a value the worker cannot use (the message says which)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """How a worker connects, where it keeps state and what it rates with."""

    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    app_id: str = "rater"
    data_dir: Path = Path("data")
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    tariff_path: str | None = None
    catalog_path: str | None = None
    session_timeout_s: float = 10.0
    log_level: str = "info"
    log_format: str = "human"
    """``human`` (a line of text per record) or ``json`` (one JSON object per line)."""
    metrics: bool = True
    """Count what the worker does for /metrics (``RATER_METRICS=off``: no counting and no
    /metrics — for measuring what the counting costs; /healthz and /readyz stay)."""
    store_cache_mib: int = 96
    """What the worker's RocksDB stores may hold in memory together, MiB (one block cache,
    a third of it memtables; ``RATER_STORE_CACHE_MIB``): at a million tenants a lookup
    mostly misses it, so more memory here is more speed (docs/benchmarks.md, "Many
    tenants")."""
    tick_interval_s: float = 1.0
    """How often the worker carries the wall clock into its partitions (0: never — only
    for tests that send their own ticks)."""
    topics_wait_s: float = 120.0
    """How long a worker started before its topics exist waits for them, then exits 1."""
    broker_wait_s: float = 120.0
    """How long a worker waits for an unreachable broker at start, then exits 1."""
    advertised_url: str | None = None
    """The URL the other workers forward API requests to (``RATER_ADVERTISED_URL``,
    e.g. ``http://rater-0.rater:6066``); default: the web server's host and port."""
    api_tokens: Path | None = None
    """The tenant API's bearer-token file (``RATER_API_TOKENS``; :mod:`rater.shell.api_auth`);
    without one the API serves only on a loopback address."""
    max_batch: int = 2000
    """Input records a fetch — and so a unit, one transaction per partition — takes at
    most (``RATER_MAX_BATCH``). Smaller units bound how long a backlog's unit keeps the
    records behind it waiting, and cost more transactions per CDR: the curve is in
    docs/benchmarks.md ("CDR latency")."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``RATER_*`` variables (``KAFKA_BOOTSTRAP`` also names the broker); raises
        :class:`SettingsError` for a value the worker cannot use."""
        env = dict(os.environ if env is None else env)
        default = cls()
        prefix = env.get("RATER_TOPIC_PREFIX", default.topic_prefix)
        return cls(
            bootstrap=env.get("RATER_BOOTSTRAP") or env.get("KAFKA_BOOTSTRAP") or default.bootstrap,
            topic_prefix=prefix,
            # two deployments on one cluster, told apart by their prefix, must not share a
            # consumer group or transactional ids (they would fence each other)
            app_id=env.get("RATER_APP_ID") or prefix + default.app_id,
            data_dir=Path(env.get("RATER_DATA_DIR", str(default.data_dir))),
            web_port=read(env, "RATER_WEB_PORT", default.web_port, port),
            web_host=env.get("RATER_WEB_HOST", default.web_host),
            tariff_path=env.get("RATER_TARIFF") or None,
            catalog_path=env.get("RATER_CATALOG") or None,
            session_timeout_s=read(env, "RATER_SESSION_TIMEOUT", default.session_timeout_s, seconds(positive=True)),
            log_level=read(env, "RATER_LOG_LEVEL", default.log_level, choice(LOG_LEVELS)),
            log_format=read(env, "RATER_LOG_FORMAT", default.log_format, choice(LOG_FORMATS)),
            metrics=read(env, "RATER_METRICS", default.metrics, switch),
            store_cache_mib=read(env, "RATER_STORE_CACHE_MIB", default.store_cache_mib, count),
            tick_interval_s=read(env, "RATER_TICK_INTERVAL", default.tick_interval_s, seconds()),
            topics_wait_s=read(env, "RATER_TOPICS_WAIT", default.topics_wait_s, seconds()),
            broker_wait_s=read(env, "RATER_BROKER_WAIT", default.broker_wait_s, seconds()),
            advertised_url=read(env, "RATER_ADVERTISED_URL", default.advertised_url, http_url),
            api_tokens=Path(env["RATER_API_TOKENS"]) if env.get("RATER_API_TOKENS", "").strip() else None,
            max_batch=read(env, "RATER_MAX_BATCH", default.max_batch, count),
        )


def read(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T]) -> T:
    """``env[name]`` parsed (``default`` when unset or empty); a value ``parse`` refuses
    (``ValueError`` saying what it must be) is a :class:`SettingsError` naming ``name``."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return parse(text)
    except ValueError as exc:
        raise SettingsError(f"{name}={text!r}: {exc}") from None


def port(text: str) -> int:
    """A TCP port (0: any free one)."""
    if not text.isdigit() or int(text) > 65535:
        raise ValueError("must be a TCP port number, 0–65535")
    return int(text)


def count(text: str) -> int:
    """A whole number ≥ 1 (a partition count, a batch size)."""
    if not text.isdigit() or int(text) < 1:
        raise ValueError("must be a whole number ≥ 1")
    return int(text)


def seconds(*, positive: bool = False) -> Callable[[str], float]:
    """A parser of a duration in seconds (a decimal number; > 0 when ``positive``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise ValueError(f"must be a number of seconds {'> 0' if positive else '≥ 0'}, e.g. 10 or 0.5")
        return value
    return parse


def http_url(text: str) -> str:
    """An http(s) URL with a host and nothing after it but a path."""
    scheme, _, rest = text.partition("://")
    if scheme not in ("http", "https") or not rest.split("/")[0] or "?" in rest or "#" in rest:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. http://rater-0.rater:6066")
    return text.rstrip("/")


def choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    """A parser of one of ``allowed`` (any case)."""
    def parse(text: str) -> str:
        lowered = text.lower()
        if lowered not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return lowered
    return parse


def switch(text: str) -> bool:
    """An on/off setting (on, off, true, false, 1, 0, yes, no)."""
    lowered = text.lower()
    if lowered in {"on", "true", "1", "yes"}:
        return True
    if lowered in {"off", "false", "0", "no"}:
        return False
    raise ValueError("must be on or off")
