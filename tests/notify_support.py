"""Helpers for the notifier's tests: a real SMTP server (aiosmtpd), a real HTTP receiver
(aiohttp), a ``rater notify`` process, and reading its metrics and failures topic."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import os
import ssl
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from prometheus_client.parser import text_string_to_metric_families

from rater.localkafka import free_port, spawn
from tests.support import RaterProcess

SECRET = "test-webhook-secret"
MAIL_FROM = "Rater Billing <billing@rater.test>"


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, alive: Callable[[], None] = lambda: None,
             ) -> Any:
    """Poll ``condition`` until it returns something true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive()
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g}s: {what}")
        time.sleep(0.1)


# --- SMTP ------------------------------------------------------------------------------


@dataclass
class Mail:
    """One message the SMTP server accepted, for one recipient."""

    rcpt: str
    message: EmailMessage
    at: float

    @property
    def event_id(self) -> str:
        return str(self.message["X-Rater-Event-Id"])

    @property
    def kind(self) -> str:
        return str(self.message["X-Rater-Event-Type"])


class MailServer:
    """aiosmtpd on 127.0.0.1, in a thread; ``stop()`` then ``start()`` again is a server
    down for a while, on the same port. With ``starttls`` (a server context) it offers
    STARTTLS and requires it; with ``login`` (user, password) it requires that login,
    over TLS only."""

    def __init__(self, starttls: ssl.SSLContext | None = None, login: tuple[str, str] | None = None) -> None:
        self.port = free_port()
        self.mails: list[Mail] = []
        self.delay_s = 0.0
        """How long each message takes to be accepted (a slow server)."""
        self.starttls = starttls
        self.login = login
        self.logins: list[tuple[str, bool]] = []
        """(user, accepted) of every AUTH attempt."""
        self.sessions_tls: list[bool] = []
        """Whether each accepted message came over TLS."""
        self._controller: Controller | None = None

    def _authenticate(self, _server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any) -> AuthResult:
        user, password = data.login.decode(), data.password.decode()
        accepted = (user, password) == self.login
        self.logins.append((user, accepted))
        return AuthResult(success=accepted, handled=False)  # handled=False: aiosmtpd answers 235 or 535

    async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay_s)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.sessions_tls.append(session.ssl is not None)
        self.mails.extend(Mail(rcpt, message, time.monotonic()) for rcpt in envelope.rcpt_tos)
        return "250 OK"

    def start(self) -> MailServer:
        tls: dict[str, Any] = {}
        if self.starttls is not None:
            tls.update(tls_context=self.starttls, require_starttls=True)
        if self.login is not None:
            tls.update(auth_required=True, auth_require_tls=True, authenticator=self._authenticate)
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **tls)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def to(self, rcpt: str) -> list[Mail]:
        return [m for m in self.mails if m.rcpt == rcpt]


# --- webhooks --------------------------------------------------------------------------


@dataclass
class Call:
    """One webhook request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """An aiohttp server on 127.0.0.1 in a thread. ``answers[path]`` is (delay s, status)
    for that path (default: at once, 204)."""

    port: int = field(default_factory=free_port)
    calls: list[Call] = field(default_factory=list)
    answers: dict[str, tuple[float, int]] = field(default_factory=dict)
    tls: ssl.SSLContext | None = None
    """A server context: https (the URLs name ``localhost``, as its certificate must)."""
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        if self.tls is not None:
            return f"https://localhost:{self.port}{path}"
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append(Call(request.path, dict(request.headers), body, time.monotonic()))
        delay, status = self.answers.get(request.path, (0.0, 204))
        await asyncio.sleep(delay)
        return web.Response(status=status)

    def start(self) -> Receiver:
        ready = threading.Event()

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.tls).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        threading.Thread(target=serve, daemon=True).start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    def to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]


def verify_signature(call: Call, secret: str = SECRET, tolerance_s: int = 300) -> bool:
    """What docs/notifications.md tells a receiver to do."""
    parts = dict(item.split("=", 1) for item in call.headers["Rater-Signature"].split(","))
    timestamp = int(parts["t"])
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + call.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - timestamp) <= tolerance_s


# --- the notifier process --------------------------------------------------------------


@dataclass
class NotifierProc(RaterProcess):
    """A real ``rater notify`` process (/metrics and /healthz at ``url``)."""

    bootstrap: str
    prefix: str
    workdir: Path
    smtp_port: int
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: Any = None
    web_port: int = 0
    what = "notifier"

    @property
    def log(self) -> Path:
        return self.workdir / "notify.log"

    def start(self) -> NotifierProc:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.web_port = free_port()
        env = dict(
            os.environ,
            RATER_BOOTSTRAP=self.bootstrap,
            RATER_TOPIC_PREFIX=self.prefix,
            RATER_NOTIFY_DATA_DIR=str(self.workdir / "data"),
            RATER_NOTIFY_WEB_PORT=str(self.web_port),
            RATER_SMTP_HOST="127.0.0.1",
            RATER_SMTP_PORT=str(self.smtp_port),
            RATER_SMTP_TLS="none",
            RATER_NOTIFY_FROM=MAIL_FROM,
            RATER_NOTIFY_WEBHOOK_SECRET=SECRET,
            RATER_NOTIFY_WEBHOOK_ALLOW_HTTP="on",
            RATER_NOTIFY_WEBHOOK_ALLOW_CIDRS="127.0.0.1/32",
            RATER_NOTIFY_RETRY_DELAYS="0.3,0.6,1,1.5",
            RATER_NOTIFY_MAX_ATTEMPTS="4",
            RATER_NOTIFY_TIMEOUT="5",
            RATER_NOTIFY_MAX_AGE="0",
            RATER_LOG_LEVEL="info",
            RATER_SESSION_TIMEOUT="6",
        )
        env.update(self.extra_env)
        self.proc = spawn([sys.executable, "-m", "rater", "notify"], log=self.log, env=env)
        wait_for(lambda: self.health().get("assigned_partitions"), 90, "the notifier's partitions assigned",
                 self.check_alive)
        return self

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                return dict(orjson.loads(response.read()))
        except OSError:
            return {}

    def metric(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels``."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                   if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def error_lines(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines() if " ERROR " in line]


# --- events ----------------------------------------------------------------------------


def utc(at: datetime | None = None, **delta: float) -> str:
    """``at`` (default now) + ``delta`` as the schemas' UTC time."""
    return ((at or datetime.now(UTC)) + timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def upsert(tenant: str, notify: dict[str, Any] | None, n: int = 1) -> dict[str, Any]:
    """A ``tenant_upserted`` with ``notify``."""
    return {"type": "tenant_upserted", "schema_version": 1, "event_id": f"{tenant}-up{n}", "tenant_id": tenant,
            "occurred_at": utc(), "command_id": f"{tenant}-c{n}", "country": "US", "currency": "USD",
            "billing_model": "prepaid_credits", "notify": notify}


def notification(kind: str, tenant: str, n: int, at: str | None = None) -> dict[str, Any]:
    """A schema-valid rater output event of ``kind``."""
    fields: dict[str, Any] = {
        "recharge_succeeded": {"request_id": f"{tenant}/recharge/{n}", "amount": "20.00", "balance": "24.80",
                               "currency": "USD"},
        "recharge_failed": {"request_id": f"{tenant}/recharge/{n}", "reason": "card_expired",
                            "retry_after": utc(hours=1)},
        "balance_depleted": {"currency": "USD"},
        "low_balance": {"balance": "4.80", "threshold": "5.00", "currency": "USD"},
        "pool_exhausted": {},
    }[kind]
    return {"type": kind, "schema_version": 1, "event_id": f"{tenant}/{kind}/{n}", "tenant_id": tenant,
            "occurred_at": at or utc(), **fields}


async def _read_topic(bootstrap: str, topic: str, until: Callable[[list[dict[str, Any]]], bool],
                      timeout_s: float) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(seen):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: not complete after {timeout_s:g}s; seen {seen}")
            for records in (await consumer.getmany(timeout_ms=300)).values():
                seen.extend(orjson.loads(r.value) for r in records)
        return seen
    finally:
        await consumer.stop()


def read_topic(bootstrap: str, topic: str, until: Callable[[list[dict[str, Any]]], bool],
               timeout_s: float = 60) -> list[dict[str, Any]]:
    """Every record of ``topic`` from the start (JSON) once ``until`` holds."""
    return asyncio.run(_read_topic(bootstrap, topic, until, timeout_s))


async def _describe(bootstrap: str, topic: str) -> tuple[int, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                                  {"cleanup.policy": None})])
        entries = response.to_object()["resources"][0]["config_entries"]
        policy = next(e["config_value"] for e in entries if e["config_names"] == "cleanup.policy")
        return len(described["partitions"]), policy
    finally:
        await admin.close()


def describe_topic(bootstrap: str, topic: str) -> tuple[int, str]:
    """(partition count, cleanup.policy) of an existing topic."""
    return asyncio.run(_describe(bootstrap, topic))
