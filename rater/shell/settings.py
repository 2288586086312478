"""Worker settings from the environment (every one has a sane default)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Settings:
    """How a worker connects, where it keeps state and what it rates with."""

    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    app_id: str = "rater"
    data_dir: Path = Path("data")
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    partitions: int | None = None
    tariff_path: str | None = None
    catalog_path: str | None = None
    session_timeout_s: float = 10.0
    log_level: str = "info"
    metrics: bool = True
    """Count what the worker does for /metrics (``RATER_METRICS=off``: no counting and no
    /metrics — for measuring what the counting costs; /healthz and /readyz stay)."""
    tick_interval_s: float = 1.0
    """How often the worker carries the wall clock into its partitions (0: never — only
    for tests that send their own ticks)."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Read ``RATER_*`` variables (``KAFKA_BOOTSTRAP`` also names the broker)."""
        env = dict(os.environ if env is None else env)
        default = cls()
        partitions = env.get("RATER_PARTITIONS")
        return cls(
            bootstrap=env.get("RATER_BOOTSTRAP") or env.get("KAFKA_BOOTSTRAP") or default.bootstrap,
            topic_prefix=(prefix := env.get("RATER_TOPIC_PREFIX", default.topic_prefix)),
            # two deployments on one cluster, told apart by their prefix, must not share a
            # consumer group or transactional ids (they would fence each other)
            app_id=env.get("RATER_APP_ID") or prefix + default.app_id,
            data_dir=Path(env.get("RATER_DATA_DIR", str(default.data_dir))),
            web_port=int(env.get("RATER_WEB_PORT", default.web_port)),
            web_host=env.get("RATER_WEB_HOST", default.web_host),
            partitions=int(partitions) if partitions else None,
            tariff_path=env.get("RATER_TARIFF") or None,
            catalog_path=env.get("RATER_CATALOG") or None,
            session_timeout_s=float(env.get("RATER_SESSION_TIMEOUT", default.session_timeout_s)),
            log_level=env.get("RATER_LOG_LEVEL", default.log_level),
            metrics=_switch(env.get("RATER_METRICS", "on"), "RATER_METRICS"),
            tick_interval_s=float(env.get("RATER_TICK_INTERVAL", default.tick_interval_s)),
        )


def _switch(value: str, name: str) -> bool:
    """An on/off setting (on, off, true, false, 1, 0, yes, no)."""
    lowered = value.strip().lower()
    if lowered in {"on", "true", "1", "yes"}:
        return True
    if lowered in {"off", "false", "0", "no"}:
        return False
    raise ValueError(f"{name}={value!r}: expected on or off")
