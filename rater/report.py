"""``rater balance``, ``rater report pools`` and ``rater report usage``: a tenant's
balance, pools and a month's usage through the
tenant HTTP API (docs/api.md) of any worker — it answers itself or forwards to the owner.

The worker is ``--url`` (``RATER_API_URL``, default ``http://127.0.0.1:6066``); the bearer
token is ``--token`` (``RATER_API_TOKEN``) or the first line of ``--token-file``
(``RATER_API_TOKEN_FILE``). On a terminal the answer is a rich table; piped, plain text
lines; ``--json`` prints the API's JSON body as it came.

Exit codes: 0 shown; 1 the API could not be reached, answered 5xx or a 404 that is not
``unknown-tenant`` (no such route: ``--url`` is no rater worker), or still answered 503
after :data:`RETRIES` waits of its ``Retry-After``; 2 a bad option (or a 400);
4 the tenant is unknown (404) or the token is missing, unknown or not allowed (401/403).
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import click

DEFAULT_URL = "http://127.0.0.1:6066"
RETRIES = 3
"""How many times a 503 is retried after its ``Retry-After`` (at most :data:`MAX_WAIT_S` each)."""
MAX_WAIT_S = 10.0
TIMEOUT_S = 10.0
DENIED_EXIT = 4
EXIT_HELP = ("Exit codes: 0 shown; 1 API unreachable, 5xx, no such route, or 503 after 3 retries; "
             "2 bad option; 4 unknown tenant (404) or token missing/refused (401/403).")


class ApiError(click.ClickException):
    """The API could not answer: one line, exit 1."""

    exit_code = 1


class DeniedError(click.ClickException):
    """Unknown tenant, or the token was refused: one line, exit 4."""

    exit_code = DENIED_EXIT


class BadOption(click.ClickException):
    """A bad option (or an answer 400 about it): one line, exit 2."""

    exit_code = 2


F = TypeVar("F", bound=Callable[..., Any])


def api_options(func: F) -> F:
    """--url, --token, --token-file, --json, --tenant of every API command."""
    for option in reversed([
        click.option("--tenant", required=True, help="the tenant id"),
        click.option("--url", envvar="RATER_API_URL", default=DEFAULT_URL, show_default=True,
                     help="any worker's API (env RATER_API_URL)"),
        click.option("--token", envvar="RATER_API_TOKEN", default=None,
                     help="bearer token (env RATER_API_TOKEN)"),
        click.option("--token-file", envvar="RATER_API_TOKEN_FILE", default=None,
                     type=click.Path(dir_okay=False),
                     help="a file whose first non-empty line is the bearer token (env RATER_API_TOKEN_FILE)"),
        click.option("--json", "as_json", is_flag=True, help="print the API's JSON answer"),
    ]):
        func = option(func)
    return func


def bearer(token: str | None, token_file: str | None) -> str | None:
    """The token of ``--token``, else the first non-empty line of ``--token-file``."""
    if token:
        return token.strip()
    if token_file is None:
        return None
    try:
        with open(token_file, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError as exc:
        raise BadOption(f"--token-file {token_file}: cannot read it ({exc.strerror or exc})") from None
    if not lines:
        raise BadOption(f"--token-file {token_file}: empty")
    return lines[0]


def get(url: str, path: str, token: str | None, *, retries: int = RETRIES,
        sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """GET ``url + path`` and its JSON body; the errors of the module's exit codes."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise BadOption(f"--url {url!r}: an http:// or https:// URL with a host")
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    full = url.rstrip("/") + path
    for attempt in range(retries + 1):
        request = urllib.request.Request(full, headers=headers)  # noqa: S310
        try:
            # the scheme is checked above: http or https only
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
                body: dict[str, Any] = json.loads(response.read())
                return body
        except urllib.error.HTTPError as exc:
            slug, detail = _problem(exc)
            if exc.code == 503 and attempt < retries:
                sleep(_retry_after(exc.headers.get("Retry-After")))
                continue
            # a 404 that is not `unknown-tenant` (no such route: not a rater API there) is exit 1
            if exc.code in (401, 403) or (exc.code == 404 and slug == "unknown-tenant"):
                raise DeniedError(f"{full}: {exc.code} {detail}") from None
            if exc.code == 400:
                raise BadOption(f"{full}: 400 {detail}") from None
            raise ApiError(f"{full}: {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"{full}: cannot reach the API ({reason})") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value or 2), 0.0), MAX_WAIT_S)
    except ValueError:
        return 2.0


def _problem(exc: urllib.error.HTTPError) -> tuple[str, str]:
    """The RFC 9457 problem's type (last segment) and a one-line text of it."""
    try:
        problem = json.loads(exc.read())
        slug = str(problem.get("type", "")).rsplit("/", 1)[-1]
        text = f"{problem.get('title', exc.reason)}: {problem.get('detail', '')}".rstrip(": ")
        return slug, " ".join(text.split())
    except (ValueError, OSError, AttributeError):
        return "", str(exc.reason)


def _console() -> Any:
    from rich.console import Console

    return Console()


def _as_of(body: dict[str, Any]) -> str:
    a = body.get("as_of") or {}
    return (f"partition {a.get('partition')}, clock {a.get('clock')}, tick {a.get('tick')}, "
            f"changelog offset {a.get('changelog_offset')}")


def show_balance(body: dict[str, Any], tty: bool) -> None:
    recharge = body.get("auto_recharge") or {}
    recharge_text = (f"on: below {recharge.get('trigger_amount')} add {recharge.get('recharge_amount')}"
                     if recharge.get("enabled") else "off")
    lots = body.get("lots") or []
    if not tty:
        click.echo(f"tenant\t{body['tenant_id']}")
        click.echo(f"balance\t{body['balance']} {body['currency']}")
        click.echo(f"status\t{body['status']}")
        click.echo(f"billing_model\t{body.get('billing_model')}")
        click.echo(f"auto_recharge\t{recharge_text}")
        for lot in lots:
            click.echo(f"lot\t{lot['lot_id']}\t{lot['remaining']}\t{lot['expires_at']}")
        click.echo(f"as_of\t{_as_of(body)}")
        return
    from rich.table import Table

    console = _console()
    head = Table(title=f"tenant {body['tenant_id']}", show_header=False)
    head.add_row("balance", f"{body['balance']} {body['currency']}")
    head.add_row("status", str(body["status"]))
    head.add_row("billing model", str(body.get("billing_model")))
    head.add_row("auto-recharge", recharge_text)
    head.add_row("as of", _as_of(body))
    console.print(head)
    table = Table(title="lots")
    for name in ("lot", "remaining", "expires"):
        table.add_column(name, justify="right" if name == "remaining" else "left")
    for lot in lots:
        table.add_row(lot["lot_id"], lot["remaining"], lot["expires_at"])
    console.print(table)


def show_pools(body: dict[str, Any], tty: bool) -> None:
    columns = ("capability", "location", "scope", "size_seconds", "used_seconds", "available_seconds")
    pools = body.get("pools") or []
    if not tty:
        click.echo(f"tenant\t{body['tenant_id']}\tmonth\t{body['month']}")
        click.echo("\t".join(columns))
        for pool in pools:
            click.echo("\t".join(str(pool[c]) for c in columns))
        click.echo(f"as_of\t{_as_of(body)}")
        return
    from rich.table import Table

    table = Table(title=f"tenant {body['tenant_id']}: pools of {body['month']}",
                  caption=f"as of {_as_of(body)}")
    for name in ("capability", "location", "scope", "size s", "used s", "available s"):
        table.add_column(name, justify="right" if name.endswith(" s") else "left")
    for pool in pools:
        table.add_row(*(str(pool[c]) for c in columns))
    _console().print(table)


USAGE_COLUMNS = ("capability", "scope", "destination_country", "calls", "seconds", "pool_seconds",
                 "credit_seconds", "charged_seconds", "charge", "uncollected")


def show_usage(body: dict[str, Any], tty: bool) -> None:
    rows = body.get("usage") or []
    totals = {"capability": "total", "scope": None, "destination_country": None, **(body.get("totals") or {})}
    if not tty:
        click.echo(f"tenant\t{body['tenant_id']}\tmonth\t{body['month']}\tcurrency\t{body['currency']}")
        click.echo("\t".join(USAGE_COLUMNS))
        for row in [*rows, totals]:
            click.echo("\t".join("-" if row.get(c) is None else str(row[c]) for c in USAGE_COLUMNS))
        click.echo(f"as_of\t{_as_of(body)}")
        return
    from rich.table import Table

    table = Table(title=f"tenant {body['tenant_id']}: usage of {body['month']} ({body['currency']})",
                  caption=f"as of {_as_of(body)}", show_footer=True)
    heads = ("capability", "scope", "country", "calls", "seconds", "pool s", "credit s", "billed s", "charge",
             "uncollected")
    for name, column in zip(heads, USAGE_COLUMNS, strict=True):
        footer = "" if totals.get(column) is None else str(totals[column])
        table.add_column(name, footer=footer, justify="left" if column in USAGE_COLUMNS[:3] else "right")
    for row in rows:
        table.add_row(*("-" if row.get(c) is None else str(row[c]) for c in USAGE_COLUMNS))
    _console().print(table)


def _emit(body: dict[str, Any], as_json: bool, show: Callable[[dict[str, Any], bool], None]) -> None:
    if as_json:
        click.echo(json.dumps(body, indent=2 if sys.stdout.isatty() else None))
    else:
        show(body, sys.stdout.isatty())


def _tenant_path(tenant: str) -> str:
    return "/v1/tenants/" + urllib.parse.quote(tenant, safe="")


@click.command(epilog=EXIT_HELP)
@api_options
def balance(*, tenant: str, url: str, token: str | None, token_file: str | None, as_json: bool) -> None:
    """A tenant's balance, status, lots, auto-recharge and as_of, from the API."""
    body = get(url, _tenant_path(tenant) + "/balance", bearer(token, token_file))
    _emit(body, as_json, show_balance)


@click.group()
def report() -> None:
    """Reports from the tenant API."""


@report.command("pools", epilog=EXIT_HELP)
@api_options
@click.option("--month", default=None, help="YYYY-MM (default: the tenant's current month)")
def report_pools(*, tenant: str, url: str, token: str | None, token_file: str | None, as_json: bool,
                 month: str | None) -> None:
    """A tenant's pools of a month: capability, location, scope, size, used, available."""
    path = _tenant_path(tenant) + "/pools" + _month_query(month)
    body = get(url, path, bearer(token, token_file))
    _emit(body, as_json, show_pools)


@report.command("usage", epilog=EXIT_HELP)
@api_options
@click.option("--month", default=None, help="YYYY-MM (default: the tenant's current month)")
def report_usage(*, tenant: str, url: str, token: str | None, token_file: str | None, as_json: bool,
                 month: str | None) -> None:
    """A tenant's usage of a month (kept 13 months): calls, seconds and money by capability,
    scope and destination country, with the month's totals."""
    body = get(url, _tenant_path(tenant) + "/usage" + _month_query(month), bearer(token, token_file))
    _emit(body, as_json, show_usage)


def _month_query(month: str | None) -> str:
    """``?month=`` of a valid ``--month`` (else exit 2), nothing without one."""
    if month is None:
        return ""
    if not re.fullmatch(r"[0-9]{4}-(0[1-9]|1[0-2])", month):  # ASCII digits: isdigit() takes "²" and "２"
        raise BadOption(f"--month {month!r}: YYYY-MM (01–12)")
    return f"?month={month}"


__all__ = ["balance", "report"]
