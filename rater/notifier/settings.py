"""The notifier's settings from the environment (``RATER_SMTP_*``, ``RATER_NOTIFY_*`` and
the worker's ``RATER_BOOTSTRAP``, ``RATER_TOPIC_PREFIX``, ``RATER_LOG_LEVEL``).

A value the notifier cannot use is a :class:`~rater.shell.settings.SettingsError` naming
the variable; ``rater notify`` prints it as one line and exits 2. docs/notifications.md
lists every setting.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path

from rater.shell.settings import LOG_FORMATS, LOG_LEVELS, choice, count, port, read, seconds, switch

RETRY_LEVELS = 4
"""Retry topics ``notify-retry-1`` … ``notify-retry-4`` (topics/topics.toml): one per
back-off level, so within a topic due times follow append order."""
COMMANDS = "account-commands"
NOTIFICATIONS = "notifications"
LOW_BALANCE = "low-balance"
FAILURES = "notification-failures"
RETRY_TOPICS = tuple(f"notify-retry-{level}" for level in range(1, RETRY_LEVELS + 1))
TOPICS = (COMMANDS, NOTIFICATIONS, LOW_BALANCE, *RETRY_TOPICS, FAILURES)
"""Every topic the notifier reads or writes (topics/topics.toml declares them; its
table changelogs it creates itself)."""
TLS_MODES = ("starttls", "tls", "none")
DEFAULT_SMTP_PORTS = {"starttls": 587, "tls": 465, "none": 25}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """How the notifier connects to Kafka, to the mail server and to webhooks."""

    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    app_id: str = "rater-notify"
    data_dir: Path = Path("notify-data")
    web_port: int = 6067
    web_host: str = "127.0.0.1"
    session_timeout_s: float = 10.0
    """How soon the group gives a silent notifier's partitions to another (Kafka's session timeout)."""
    log_level: str = "info"
    log_format: str = "human"
    smtp_host: str = "localhost"
    smtp_port: int = 587
    smtp_tls: str = "starttls"
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_ca_file: Path | None = None
    """CA certificates (PEM) trusted for the mail server's TLS, beside the system's."""
    mail_from: str = "rater@localhost"
    webhook_secret: str | None = None
    webhook_allow_http: bool = False
    webhook_allowed_networks: tuple[Network, ...] = ()
    webhook_ca_file: Path | None = None
    """CA certificates (PEM) trusted for webhooks' https, beside the system's."""
    timeout_s: float = 10.0
    """One delivery attempt's limit (connect, send, answer), e-mail or webhook."""
    concurrency: int = 8
    """Deliveries in flight per agent (a slow endpoint holds one of them for at most
    ``timeout_s``); one tenant's deliveries still go one at a time, in order."""
    buffer: int = 4096
    """Records Faust holds per agent before it stops fetching that agent's partitions
    (its ``stream_buffer_maxsize``): the notifier's read-ahead, and its memory."""
    retry_delays_s: tuple[float, ...] = (60.0, 600.0, 3600.0, 21600.0)
    max_attempts: int = 8
    max_age_s: float = 86400.0
    """A notification older than this (from its ``occurred_at``) is skipped, not sent (0: no limit)."""
    delivered_ttl_s: float = 7 * 86400.0
    """How long a delivery is remembered (the ``notifications`` topic keeps 7 days)."""
    dry_run: bool = False
    """Send nothing: every delivery is made (the e-mail rendered and built, the webhook's
    body signed) and counted as delivered — for a staging stack, and to measure the
    notifier without a mail server (``benchmarks/notifier.py``)."""

    @property
    def mail_domain(self) -> str:
        """The domain of the From address (Message-IDs end with it)."""
        return parseaddr(self.mail_from)[1].rpartition("@")[2]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NotifySettings:
        """Read the variables; :class:`SettingsError` for a value the notifier cannot use."""
        env = dict(os.environ if env is None else env)
        default = cls()
        prefix = env.get("RATER_TOPIC_PREFIX", default.topic_prefix)
        tls = read(env, "RATER_SMTP_TLS", default.smtp_tls, choice(TLS_MODES))
        return cls(
            bootstrap=env.get("RATER_BOOTSTRAP") or env.get("KAFKA_BOOTSTRAP") or default.bootstrap,
            topic_prefix=prefix,
            app_id=env.get("RATER_NOTIFY_APP_ID") or prefix + default.app_id,
            data_dir=Path(env.get("RATER_NOTIFY_DATA_DIR") or str(default.data_dir)),
            web_port=read(env, "RATER_NOTIFY_WEB_PORT", default.web_port, port),
            web_host=env.get("RATER_NOTIFY_WEB_HOST") or default.web_host,
            session_timeout_s=read(env, "RATER_SESSION_TIMEOUT", default.session_timeout_s, seconds(positive=True)),
            log_level=read(env, "RATER_LOG_LEVEL", default.log_level, choice(LOG_LEVELS)),
            log_format=read(env, "RATER_LOG_FORMAT", default.log_format, choice(LOG_FORMATS)),
            smtp_host=env.get("RATER_SMTP_HOST") or default.smtp_host,
            smtp_port=read(env, "RATER_SMTP_PORT", DEFAULT_SMTP_PORTS[tls], port),
            smtp_tls=tls,
            smtp_user=env.get("RATER_SMTP_USER") or None,
            smtp_password=env.get("RATER_SMTP_PASSWORD") or None,
            smtp_ca_file=read(env, "RATER_SMTP_CA_FILE", None, ca_file),
            mail_from=read(env, "RATER_NOTIFY_FROM", default.mail_from, mailbox),
            webhook_secret=env.get("RATER_NOTIFY_WEBHOOK_SECRET") or None,
            webhook_allow_http=read(env, "RATER_NOTIFY_WEBHOOK_ALLOW_HTTP", default.webhook_allow_http, switch),
            webhook_allowed_networks=read(env, "RATER_NOTIFY_WEBHOOK_ALLOW_CIDRS", (), networks),
            webhook_ca_file=read(env, "RATER_NOTIFY_WEBHOOK_CA_FILE", None, ca_file),
            timeout_s=read(env, "RATER_NOTIFY_TIMEOUT", default.timeout_s, seconds(positive=True)),
            concurrency=read(env, "RATER_NOTIFY_CONCURRENCY", default.concurrency, count),
            buffer=read(env, "RATER_NOTIFY_BUFFER", default.buffer, count),
            retry_delays_s=read(env, "RATER_NOTIFY_RETRY_DELAYS", default.retry_delays_s, delays),
            max_attempts=read(env, "RATER_NOTIFY_MAX_ATTEMPTS", default.max_attempts, count),
            max_age_s=read(env, "RATER_NOTIFY_MAX_AGE", default.max_age_s, seconds()),
            delivered_ttl_s=read(env, "RATER_NOTIFY_KEEP_DELIVERED", default.delivered_ttl_s, seconds(positive=True)),
            dry_run=read(env, "RATER_NOTIFY_DRY_RUN", default.dry_run, switch),
        )


def mailbox(text: str) -> str:
    """An e-mail address, alone or with a display name (``Rater <billing@example.com>``)."""
    address = parseaddr(text)[1]
    local, at, domain = address.rpartition("@")
    if not (local and at and domain) or any(c.isspace() for c in address):
        raise ValueError("must be an e-mail address, e.g. billing@example.com or 'Rater <billing@example.com>'")
    return text


def ca_file(text: str) -> Path:
    """A readable PEM file of CA certificates (checked by loading it, as TLS will)."""
    path = Path(text)
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no PEM CA certificate in it"
        raise ValueError(f"must be a readable PEM file of CA certificates ({reason})") from None
    return path


def networks(text: str) -> tuple[Network, ...]:
    """A comma-separated list of CIDR networks (``127.0.0.1/32,10.0.0.0/8``)."""
    try:
        return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError("must be comma-separated CIDR networks, e.g. 127.0.0.1/32,10.1.0.0/16") from None


def delays(text: str) -> tuple[float, ...]:
    """1 to :data:`RETRY_LEVELS` comma-separated back-off delays in seconds, not decreasing."""
    parse: Callable[[str], float] = seconds(positive=True)
    try:
        values = tuple(parse(part.strip()) for part in text.split(","))
    except ValueError:
        values = ()
    if not 1 <= len(values) <= RETRY_LEVELS or list(values) != sorted(values):
        raise ValueError(f"must be 1 to {RETRY_LEVELS} comma-separated delays in seconds > 0, not decreasing,"
                         " e.g. 60,600,3600,21600")
    return values
