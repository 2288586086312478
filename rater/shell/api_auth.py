"""Who may read which tenant through the API: bearer tokens from a file (docs/api.md).

``RATER_API_TOKENS`` names a TOML (``.toml``) or JSON file with one table, ``tokens``:
each token maps to ``"*"`` (every tenant) or a list of tenant ids::

    [tokens]
    "5b1f...e2" = "*"                  # the platform
    "9c0a...41" = ["acme", "acme-eu"]  # one customer's own tools

A presented token is compared with every token of the file, in constant time (SHA-256 of
both, ``hmac.compare_digest``, no early exit), so the time of an answer does not say how
much of a token was right, nor which one matched. The file is read once at start.

Without a file, the API serves only on a loopback address (a developer's machine, a
sidecar on the same host; the worker says so once at start, at INFO); bound elsewhere
it refuses every tenant request (403, ``api-not-configured``) and the worker says so once
at start, a WARNING — the worker still runs, rates and serves /metrics, /healthz and
/readyz, which deployments rely on.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path

from rater.shell.api import TENANT_ID

log = logging.getLogger("rater.api")

ALL = "*"


class TokensError(ValueError):
    """The token file cannot be used (the worker stops: the message says why)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """The tenants one token may read (``everyone``: all of them)."""

    everyone: bool
    tenants: frozenset[str]

    def allows(self, tenant_id: str) -> bool:
        return self.everyone or tenant_id in self.tenants


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Tokens:
    """The bearer tokens of the API and what each may read."""

    def __init__(self, grants: dict[str, Grant]) -> None:
        self._grants = [(_digest(token), grant) for token, grant in grants.items()]

    def __len__(self) -> int:
        return len(self._grants)

    @classmethod
    def load(cls, path: Path) -> Tokens:
        """Read a token file (:class:`TokensError` says what is wrong with it)."""
        where = f"RATER_API_TOKENS={path}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TokensError(f"{where}: cannot read it ({exc.strerror or exc})") from None
        try:
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise TokensError(f"{where}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'} ({exc})") from None
        table = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(table, dict) or not table:
            raise TokensError(f'{where}: needs a non-empty "tokens" table (token = "*" or a list of tenant ids)')
        grants: dict[str, Grant] = {}
        for token, allowed in table.items():
            shown = token[:4] + "…"
            if len(token) < 16 or not token.isascii() or not token.isprintable() or " " in token:
                raise TokensError(f"{where}: token {shown} must be 16 or more printable ASCII characters, no spaces")
            if allowed == ALL:
                grants[token] = Grant(True, frozenset())
            elif isinstance(allowed, list) and all(isinstance(t, str) and TENANT_ID.fullmatch(t) for t in allowed):
                grants[token] = Grant(False, frozenset(allowed))
            else:
                raise TokensError(f'{where}: token {shown} must map to "*" or a list of tenant ids')
        return cls(grants)

    def grant(self, presented: str) -> Grant | None:
        """What ``presented`` may read (None: not a token of the file). Every token is
        compared, whichever matches."""
        digest = _digest(presented)
        found: Grant | None = None
        for known, grant in self._grants:
            if hmac.compare_digest(digest, known):
                found = grant
        return found


def is_loopback(host: str) -> bool:
    """Whether the web server binds only to this host's loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a request may do: read ``tenant_id``, or the problem to answer."""

    status: int
    slug: str = ""
    detail: str = ""


OK = Verdict(200)


class Auth:
    """The API's access rule: tokens when there are some, else loopback only."""

    def __init__(self, tokens: Tokens | None, host: str) -> None:
        self.tokens = tokens
        self.open = tokens is None and is_loopback(host)
        """No token file and a loopback address: every request is served."""
        if tokens is None and self.open:
            # INFO, not WARNING: the default of a developer's machine, which nobody else reaches
            log.info("the tenant API under /v1 is unauthenticated: no RATER_API_TOKENS, and the web server"
                     " listens on the loopback address %s only", host)
        elif tokens is None:
            log.warning("the tenant API under /v1 refuses every request (403): no RATER_API_TOKENS, and the web"
                        " server listens on %s, not a loopback address. Name a token file in RATER_API_TOKENS"
                        " (docs/api.md) to serve it", host)
        else:
            log.info("the tenant API under /v1 takes the %d bearer token(s) of RATER_API_TOKENS", len(tokens))

    def check(self, authorization: str | None, tenant_id: str) -> Verdict:
        """May a request with this ``Authorization`` header read ``tenant_id``?"""
        if self.open:
            return OK
        if self.tokens is None:
            return Verdict(403, "api-not-configured", "the API has no RATER_API_TOKENS and the worker does not"
                                                      " listen on a loopback address: it serves no tenant")
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return Verdict(401, "unauthenticated", "send Authorization: Bearer <token>")
        grant = self.tokens.grant(presented.strip())
        if grant is None:
            return Verdict(401, "invalid-token", "the bearer token is not one of this deployment's")
        if not grant.allows(tenant_id):
            return Verdict(403, "tenant-not-allowed", f"the bearer token may not read tenant {tenant_id!r}")
        return OK
