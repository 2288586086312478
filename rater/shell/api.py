"""The tenant API under ``/v1`` (docs/api.md), mounted on the worker's web server.

- ``GET /v1/tenants/{tenant}/balance`` — the core's balance snapshot
  (:func:`~rater.core.engine.balance_event`) of the tenant's committed state;
- ``GET /v1/tenants/{tenant}/pools?month=YYYY-MM`` — the pools of one month
  (:func:`~rater.core.pools.pool_report`), by default the partition's current month;
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

import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import orjson
from aiohttp import web

from rater.core.context import RatingContext
from rater.core.engine import balance_event
from rater.core.pools import pool_report
from rater.core.state import TenantState
from rater.core.times import format_time_us, month_of
from rater.shell.routing import ANSWERED, FORWARDED
from rater.shell.task import PARTITION_KEY, decode_state

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
    between the keys: no unit's store write can come between them."""
    raw = store.get(tenant_id.encode())
    record = store.get(PARTITION_KEY)
    offset = store.next_offset()
    if raw is None:
        return None
    clock = orjson.loads(record) if record else {}
    return Snapshot(partition, decode_state(raw), int(clock.get("now_us") or 0), clock.get("tick_us"), offset)


def tenant_id_of(request: web.Request, auth: Auth) -> str:
    """The path's tenant id, once the request may read it (401, 403) and it is valid
    like the schemas' (400)."""
    tenant_id = request.match_info["tenant"]
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


def pools_of_month(state: TenantState, ctx: RatingContext, month: str) -> list[dict[str, Any]]:
    """The pools of ``month`` with a size or a draw, by the core's :func:`pool_report`.

    ``pool_report`` reports the tenant's open month; asked about another, it is given the
    state as seen from that month: the licence counts that size the month (the current
    ones from the open month on, the frozen ones of a closed month — the rule of
    :func:`~rater.core.pools.pool_size_s`) and no cached sizes. The draws are the
    state's own."""
    counts = state.licences if month >= state.open_month else state.frozen.get(month, {})
    seen = dataclasses.replace(state, open_month=month, licences=counts, sizes={})
    return [{k: v for k, v in pool.items() if k != "month"} for pool in pool_report(seen, ctx)
            if pool["month"] == month]


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
                      body: Callable[[Snapshot], dict[str, Any]]) -> web.Response:
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
            return await self._forward(request, where.owner, where.partition)
        if forwarded is not None:
            raise unavailable(f"forwarded by {forwarded}, but partition {where.partition} is not ready on this"
                              f" worker ({where.why_not}): the group is moving it")
        raise unavailable(where.why_not or "the worker does not know the topics' partitions yet")

    async def _forward(self, request: web.Request, owner: str, partition: int | None) -> web.Response:
        """The owner's answer to the same request, marked forwarded (never forwarded again)."""
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S))
        headers = {FORWARDED: self.partitions.advertised}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        try:
            async with self.session.get(owner + request.raw_path, headers=headers, allow_redirects=False) as answer:
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
        tenant_id = tenant_id_of(request, self.auth)
        month = request.query.get("month")
        if month is not None and not MONTH.fullmatch(month):
            raise Problem(400, "invalid-month", "Invalid month", "month is YYYY-MM (01–12)")

        def pools(snapshot: Snapshot) -> dict[str, Any]:
            state = snapshot.state
            shown = month or month_of(max(snapshot.now_us, state.now_us))
            return {
                "tenant_id": tenant_id,
                "month": shown,
                "pools": pools_of_month(state, self.ctx, shown),
                "as_of": snapshot.as_of(),
            }

        return await self._answer(request, tenant_id, pools)
