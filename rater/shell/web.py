"""The worker's web server (aiohttp, on the worker's own event loop).

- ``/metrics`` — Prometheus text format (:mod:`rater.shell.metrics`);
- ``/healthz`` — 200 while the event loop answers (a Kubernetes liveness probe: a loop
  that is stuck answers nothing, and the probe times out);
- ``/v1/...`` — the tenant API (:mod:`rater.shell.api`), when the worker mounts it;
- ``/readyz`` — 200 when every partition the worker owns is restored and consuming, 503
  otherwise (before it joined its group, during a rebalance, while a partition restores
  from its changelog); the body says which, as JSON.

No access log: a scrape every few seconds is not news.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("rater.web")

class WebServerError(RuntimeError):
    """The web server cannot listen (the worker stops: the message says why)."""


Readiness = Callable[[], tuple[bool, dict[str, Any]]]
"""Whether the worker is ready, and the details /readyz shows."""


class WebServer:
    """Serves the three endpoints until stopped."""

    def __init__(self, host: str, port: int, readiness: Readiness, registry: CollectorRegistry | None, *,
                 before_scrape: Callable[[], Awaitable[None]] | None = None,
                 mount: Callable[[web.Application], None] | None = None) -> None:
        """``mount`` adds more routes (the tenant API) to the application."""
        self.host = host
        self.mount = mount
        self.before_scrape = before_scrape
        self.port = port
        self.readiness = readiness
        self.registry = registry
        self.runner: web.AppRunner | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self.registry is not None:
            app.router.add_get("/metrics", self._metrics)
        if self.mount is not None:
            self.mount(app)
        return app

    async def start(self) -> None:
        """Listen (an address in use is a :class:`WebServerError` that says which)."""
        self.runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            self.runner = None
            raise WebServerError(f"the worker's web server cannot listen on {self.host}:{self.port}"
                                 f" (RATER_WEB_HOST, RATER_WEB_PORT): {exc.strerror or exc}") from None
        if self.port == 0 and self.runner.addresses:  # a free port was asked for: say which
            self.port = self.runner.addresses[0][1]
        log.info("serving /metrics, /healthz, /readyz and /v1 on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready, details = self.readiness()
        return web.Response(body=orjson.dumps({"ready": ready, **details}), status=200 if ready else 503,
                            content_type="application/json")

    async def _metrics(self, _request: web.Request) -> web.Response:
        assert self.registry is not None
        if self.before_scrape is not None:
            await self.before_scrape()
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
