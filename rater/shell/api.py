"""The tenant API under ``/v1`` (docs/api.md), mounted on the worker's web server.

- ``GET /v1/tenants/{tenant}/balance`` — the core's balance snapshot
  (:func:`~rater.core.engine.balance_event`) of the tenant's committed state;
- ``GET /v1/tenants/{tenant}/pools?month=YYYY-MM`` — the pools of one month
  (:func:`~rater.core.pools.month_pools`), by default the partition's current month;
- ``GET /v1/tenants/{tenant}/usage?month=YYYY-MM`` — the month's usage by capability,
  scope and destination country (the core's :func:`~rater.core.usage.usage_report` of
  the tenant's usage record of the month, beside its state), by default the partition's current month;
- ``POST /v1/authorize`` — may a call start, and for how long (the core's
  :func:`~rater.core.authorize.authorize` of the tenant's committed state; reserves nothing);
- ``GET /v1/openapi.json`` — the OpenAPI 3.1 document of these (``rater/data/openapi.json``).

**Consistency.** A tenant is read from the local store of the partition that owns it,
never from the task's in-memory states (a unit in flight changes those in place before
it commits). The driver writes the store only after a unit committed, in one atomic
RocksDB write holding the states, the partition record and the changelog offset; a
request reads the three synchronously, with no ``await`` between the reads, so on the
event loop no write can come between them. An answer is therefore the state of the last
unit that committed, and ``as_of`` says which: the partition's clock in its partition
record and the changelog offset the store had reached (every record below it applied).
Outputs a unit produced are visible on the topics at the same commit; a request may miss
a unit that committed a moment ago (its store write follows the commit), never show one
that did not.

**Routing.** A tenant whose partition another worker owns is answered by that worker:
the request goes there once (:mod:`rater.shell.routing` has the group's partition → URL
map) and its answer comes back as it is; with no owner known, 503 and ``Retry-After``.

Errors are RFC 9457 problem details (``application/problem+json``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import orjson
from aiohttp import web

from rater.core.authorize import AuthorizeRequest, authorize
from rater.core.context import RatingContext
from rater.core.engine import balance_event
from rater.core.pools import month_pools
from rater.core.state import TenantState
from rater.core.times import MAX_TIME_US, MIN_TIME_US, TimeFormatError, format_time_us, month_of, parse_time_us
from rater.core.usage import usage_report
from rater.shell.routing import ANSWERED, FORWARDED
from rater.shell.task import PARTITION_KEY, decode_state, month_usage, store_user_reader

if TYPE_CHECKING:
    from rater.shell.api_auth import Auth

log = logging.getLogger("rater.api")

PREFIX = "/v1"
TENANT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""A tenant id as the schemas have it (common.json), matched with ``fullmatch``: ``$``
would let ``acme\\n`` through."""
MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
OPENAPI = Path(__file__).resolve().parent.parent / "data" / "openapi.json"
"""The API's OpenAPI 3.1 document (served at ``/v1/openapi.json``; the tests hold every
answer to it)."""
PROBLEM_TYPES = "https://rater.invalid/problems/"
PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_S = 2
"""What a 503 asks a client to wait: a rebalance or a restore usually ends in seconds."""
FORWARD_TIMEOUT_S = 5.0
"""How long a forwarded request may take (the owner reads its store: milliseconds)."""
MAX_BODY = 4096
"""The largest authorize body taken (a call's description is a few hundred bytes): 413 above."""
AUTHORIZE_FIELDS = ("tenant_id", "user_id", "call_type", "number_type", "destination", "user_location")
"""The authorize body's string fields (``user_id`` may be null: bots), then ``start_time``."""
PASSED_BACK = ("Retry-After", "WWW-Authenticate", ANSWERED)
"""The owner's headers a forwarded answer keeps (with its status, type and body)."""


class Committed(Protocol):
    """What the API reads of a partition's committed state (the driver's LocalStore)."""

    def get(self, key: bytes) -> bytes | None:
        """The value stored under ``key``."""

    def next_offset(self) -> int:
        """The changelog offset the store has reached (every record below it applied)."""


@dataclass(frozen=True, slots=True)
class Located:
    """Where a tenant's state is, as this worker sees it now."""

    partition: int | None
    """The tenant's partition (murmur2 of its id, as producers pick it); None while the
    partition count is not known yet."""
    store: Committed | None
    """The partition's committed state, when this worker owns it and it is ready."""
    why_not: str = ""
    """Why ``store`` is None (a rebalance, a restore, another worker's partition)."""
    owner: str | None = None
    """The URL of the worker that owns the partition, when another does and the group
    said which (:mod:`rater.shell.routing`)."""


class Partitions(Protocol):
    """The worker's partitions, as the API needs them (the driver)."""

    @property
    def advertised(self) -> str:
        """This worker's own URL, as the group knows it."""

    def locate(self, tenant_id: str) -> Located:
        """Where ``tenant_id``'s state is."""

    def broker_now_us(self) -> int:
        """The broker's clock as this worker measured it (µs)."""


class Problem(Exception):
    """An RFC 9457 problem: raised by a handler, answered as ``application/problem+json``."""

    def __init__(self, status: int, slug: str, title: str, detail: str, *,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.headers = headers or {}

    def response(self) -> web.Response:
        return problem_response(self.status, self.slug, self.title, self.detail, self.headers)


def problem_response(status: int, slug: str, title: str, detail: str,
                     headers: dict[str, str] | None = None) -> web.Response:
    """A problem as a response (for middlewares, which return rather than raise)."""
    return web.Response(status=status, headers=headers, content_type=PROBLEM_JSON, body=orjson.dumps({
        "type": PROBLEM_TYPES + slug, "title": title, "status": status, "detail": detail,
    }))


def unavailable(detail: str) -> Problem:
    """503 with ``Retry-After``: the tenant's partition is moving or not ready."""
    return Problem(503, "unavailable", "Tenant not available now", detail,
                   headers={"Retry-After": str(RETRY_AFTER_S)})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A tenant's committed state, read at one point of its partition's changelog."""

    partition: int
    state: TenantState
    now_us: int
    tick_us: int | None
    changelog_offset: int
    store: Committed
    """Where the rest of the tenant's records are read (before any ``await``)."""

    def as_of(self) -> dict[str, Any]:
        """What the answer reflects: the partition's clock and changelog offset."""
        return {
            "partition": self.partition,
            "clock": format_time_us(self.now_us) if self.now_us else None,
            "tick": None if self.tick_us is None else format_time_us(self.tick_us),
            "changelog_offset": self.changelog_offset,
        }


def read_snapshot(store: Committed, partition: int, tenant_id: str) -> Snapshot | None:
    """The tenant's committed state (None: no such tenant). Reads without an ``await``
    between the keys: no unit's store write can come between them. Its users are read
    from the store when asked for: the caller uses the snapshot before any ``await``."""
    raw = store.get(tenant_id.encode())
    record = store.get(PARTITION_KEY)
    offset = store.next_offset()
    if raw is None:
        return None
    clock = orjson.loads(record) if record else {}
    state = decode_state(raw)
    state.users.reader = store_user_reader(store.get, tenant_id)  # read (authorize) before any ``await``
    return Snapshot(partition, state, int(clock.get("now_us") or 0), clock.get("tick_us"), offset, store)


def tenant_id_of(request: web.Request, auth: Auth, tenant_id: str | None = None) -> str:
    """The path's tenant id (or ``tenant_id``, a body's), once the request may read it
    (401, 403) and it is valid like the schemas' (400)."""
    tenant_id = request.match_info["tenant"] if tenant_id is None else tenant_id
    verdict = auth.check(request.headers.get("Authorization"), tenant_id)
    if verdict.status == 401:
        challenge = 'Bearer realm="rater"' + (', error="invalid_token"' if verdict.slug == "invalid-token" else "")
        raise Problem(401, verdict.slug, "Unauthorized", verdict.detail, headers={"WWW-Authenticate": challenge})
    if verdict.status == 403:
        raise Problem(403, verdict.slug, "Forbidden", verdict.detail)
    if not TENANT_ID.fullmatch(tenant_id):
        raise Problem(400, "invalid-tenant-id", "Invalid tenant id",
                      "a tenant id is 1–64 characters of A-Z, a-z, 0-9, '.', '_' and '-'")
    return tenant_id


def invalid_body(detail: str) -> Problem:
    return Problem(422, "invalid-body", "Invalid request body", detail)


def authorize_fields(raw: bytes) -> dict[str, Any]:
    """The authorize body's fields, checked (400 not JSON, 422 a field named)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "invalid-json", "Body is not JSON", f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise invalid_body("the body is a JSON object")
    unknown = sorted(set(body) - {*AUTHORIZE_FIELDS, "start_time"})
    if unknown:
        raise invalid_body(f"{unknown[0][:64]!r}: no such field")
    for name in AUTHORIZE_FIELDS:
        value = body.get(name)
        if name == "user_id" and value is None:
            continue
        if not isinstance(value, str) or not 1 <= len(value) <= 64:
            raise invalid_body(f"{name}: required, a string of 1–64 characters")
    start = body.get("start_time")
    if start is not None:
        if not isinstance(start, str) or len(start) > 40:
            raise invalid_body("start_time: an RFC 3339 time with an offset")
        try:
            body["start_us"] = parse_time_us(start)
        except TimeFormatError as exc:
            body["start_us"] = _out_of_range(start, exc)
    return body


def _out_of_range(text: str, error: TimeFormatError) -> int:
    """A time outside the rater's (1970 to 9000) as the nearest one it takes: the core then
    refuses the call as ``late`` or ``future``, as it would a CDR. Not a time: 422."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or not text[:4].isdigit():
        raise invalid_body(f"start_time: {error}") from None
    return MIN_TIME_US if int(text[:4]) < 1970 else MAX_TIME_US - 1


def month_asked(request: web.Request) -> str | None:
    """The query's ``month`` (None: the partition's current one); 400 when not YYYY-MM."""
    month = request.query.get("month")
    if month is not None and not MONTH.fullmatch(month):
        raise Problem(400, "invalid-month", "Invalid month", "month is YYYY-MM (01–12)")
    return month


def pools_of_month(state: TenantState, ctx: RatingContext, month: str) -> list[dict[str, Any]]:
    """The pools of ``month`` with a size or a draw (the core's :func:`month_pools`), as
    the API shows them (the month is the request's)."""
    return [{k: v for k, v in pool.items() if k != "month"} for pool in month_pools(state, ctx, month)]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Api:
    """The ``/v1`` routes of one worker."""

    def __init__(self, ctx: RatingContext, partitions: Partitions, auth: Auth) -> None:
        self.ctx = ctx
        self.partitions = partitions
        self.auth = auth
        self.openapi = OPENAPI.read_bytes()
        self.session: aiohttp.ClientSession | None = None
        """The client of forwarded requests (made at the first one)."""

    def mount(self, app: web.Application) -> None:
        """Add the routes, and the middleware that answers every ``/v1`` error as a problem."""
        app.middlewares.append(self._problems)
        app.on_cleanup.append(self._close)
        app.router.add_get(PREFIX + "/tenants/{tenant}/balance", self._balance)
        app.router.add_get(PREFIX + "/tenants/{tenant}/pools", self._pools)
        app.router.add_get(PREFIX + "/tenants/{tenant}/usage", self._usage)
        app.router.add_post(PREFIX + "/authorize", self._authorize)
        app.router.add_get(PREFIX + "/openapi.json", self._openapi)

    @web.middleware
    async def _problems(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """aiohttp's own errors under ``/v1`` (no such route, wrong method) as problems;
        a bug is a 500 problem, logged with its traceback."""
        if not request.path.startswith(PREFIX + "/") and request.path != PREFIX:
            return await handler(request)
        try:
            return await handler(request)
        except Problem as problem:
            return problem.response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            return problem_response(exc.status, "http-" + str(exc.status), exc.reason, exc.text or exc.reason,
                                    headers)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return problem_response(500, "internal-error", "Internal error",
                                    "the worker failed answering this request (its log says why)")

    async def _close(self, _app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def _answer(self, request: web.Request, tenant_id: str,
                      body: Callable[[Snapshot], dict[str, Any]], sent: bytes | None = None) -> web.Response:
        """``body`` of the tenant's committed state, read here when this worker owns its
        partition, else the owner's answer (one hop), else 503."""
        where = self.partitions.locate(tenant_id)
        if where.partition is not None and where.store is not None:
            snapshot = read_snapshot(where.store, where.partition, tenant_id)
            if snapshot is None:
                raise Problem(404, "unknown-tenant", "Unknown tenant",
                              f"no tenant {tenant_id!r}: it has no tenant_upserted yet")
            return web.Response(body=orjson.dumps(body(snapshot)), content_type="application/json",
                                headers={ANSWERED: self.partitions.advertised})
        forwarded = request.headers.get(FORWARDED)
        if where.owner is not None and forwarded is None and where.owner != self.partitions.advertised:
            return await self._forward(request, where.owner, where.partition, sent)
        if forwarded is not None:
            raise unavailable(f"forwarded by {forwarded}, but partition {where.partition} is not ready on this"
                              f" worker ({where.why_not}): the group is moving it")
        raise unavailable(where.why_not or "the worker does not know the topics' partitions yet")

    async def _forward(self, request: web.Request, owner: str, partition: int | None,
                       body: bytes | None = None) -> web.Response:
        """The owner's answer to the same request (``body``: the one it was sent, already
        read), marked forwarded (never forwarded again)."""
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S))
        headers = {FORWARDED: self.partitions.advertised}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self.session.request(request.method, owner + request.raw_path, data=body, headers=headers,
                                            allow_redirects=False) as answer:
                body = await answer.read()
                kept = {name: answer.headers[name] for name in PASSED_BACK if name in answer.headers}
                return web.Response(status=answer.status, body=body, headers=kept,
                                    content_type=answer.content_type, charset=answer.charset)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise unavailable(f"the owner of partition {partition}, {owner}, did not answer: {exc!r}") from None

    async def _openapi(self, _request: web.Request) -> web.Response:
        """The OpenAPI document (no token needed: it says nothing about a tenant)."""
        return web.Response(body=self.openapi, content_type="application/json")

    async def _balance(self, request: web.Request) -> web.Response:
        tenant_id = tenant_id_of(request, self.auth)
        return await self._answer(request, tenant_id, self._balance_of)

    def _balance_of(self, snapshot: Snapshot) -> dict[str, Any]:
        state = snapshot.state
        payload = balance_event(state, self.ctx, max(snapshot.now_us, state.now_us), "api").payload
        return {
            "tenant_id": state.tenant_id,
            "balance": payload["balance"],
            "currency": payload["currency"],
            "status": payload["status"],
            "billing_model": state.billing_model,
            "lots": payload["lots"],
            "auto_recharge": payload["auto_recharge"],
            "pools": payload["pools"],
            "as_of": snapshot.as_of(),
        }

    async def _pools(self, request: web.Request) -> web.Response:
        return await self._of_month(request, lambda snapshot, month: {
            "pools": pools_of_month(snapshot.state, self.ctx, month)})

    async def _usage(self, request: web.Request) -> web.Response:
        return await self._of_month(request, lambda snapshot, month: {
            "currency": snapshot.state.currency,
            **usage_report(month_usage(snapshot.store.get, snapshot.state.tenant_id, month), snapshot.state.exponent),
        })

    async def _of_month(self, request: web.Request,
                        fields: Callable[[Snapshot, str], dict[str, Any]]) -> web.Response:
        """An answer about one month of a tenant (``?month=``, by default the partition's
        current month): its ``fields`` between the tenant and month and ``as_of``."""
        tenant_id = tenant_id_of(request, self.auth)
        month = month_asked(request)

        def body(snapshot: Snapshot) -> dict[str, Any]:
            shown = month or month_of(max(snapshot.now_us, snapshot.state.now_us))
            return {"tenant_id": tenant_id, "month": shown, **fields(snapshot, shown), "as_of": snapshot.as_of()}

        return await self._answer(request, tenant_id, body)

    async def _authorize(self, request: web.Request) -> web.Response:
        """May the call the body describes start, and for how long (docs/api.md)? The
        core decides from the tenant's committed state at "now": the later of the
        broker's clock and the partition's time. Nothing is reserved."""
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise Problem(413, "body-too-large", "Body too large", f"an authorize body is at most {MAX_BODY} bytes")
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            raise Problem(413, "body-too-large", "Body too large", f"an authorize body is at most {MAX_BODY} bytes")
        fields = authorize_fields(raw)
        tenant_id = tenant_id_of(request, self.auth, fields["tenant_id"])
        broker_now = self.partitions.broker_now_us()

        def answer(snapshot: Snapshot) -> dict[str, Any]:
            now_us = max(broker_now, snapshot.now_us, snapshot.state.now_us)
            call = AuthorizeRequest(tenant_id, fields.get("user_id"), fields["call_type"], fields["number_type"],
                                    fields["destination"], fields["user_location"], fields.get("start_us", now_us))
            payload = authorize(snapshot.state, call, self.ctx, now_us).payload()
            payload["tenant_id"] = tenant_id
            payload["start_time"] = format_time_us(call.start_us)
            payload["as_of"] = snapshot.as_of()
            return payload

        return await self._answer(request, tenant_id, answer, raw)
