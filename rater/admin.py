"""``rater tenant …``: the operator's account commands (SPEC §2, topic ``account-commands``).

Each command builds one event from its options, checks it against the event's JSON
Schema (and an amount against its currency's ISO 4217 minor unit) *before* anything is
sent — a bad value is one line naming the option, exit 2 —, produces it keyed by the
tenant id (``acks=all``, idempotent producer) and prints its ``command_id`` on stdout.
The ``command_id`` is the command's idempotency key: send the same command again with
``--command-id`` and the rater applies it once (the same id with other content is an
``id_conflict`` dead letter).

Exit codes: 0 sent (or printed, ``--dry-run``); 1 the broker could not be reached, the
topic is missing or the send failed; 2 a bad option.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import orjson

TOPIC = "account-commands"
BILLING_MODELS = ("prepaid_credits", "postpaid_overage")
"""``tenant_upserted``'s ``billing_model`` enum (a test checks it against the schema; kept
here so that ``rater --help`` does not load the schemas)."""
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

OPTION_OF_FIELD = {
    "tenant_id": "--tenant",
    "command_id": "--command-id",
    "event_id": "--command-id",
    "country": "--country",
    "currency": "--currency",
    "billing_model": "--billing-model",
    "low_balance_threshold": "--low-balance-threshold",
    "user_id": "--user",
    "usage_location": "--location",
    "capabilities": "--capability",
    "amount": "--amount",
    "purchased_at": "--purchased-at",
    "enabled": "--enabled/--disabled",
    "trigger_amount": "--trigger",
    "recharge_amount": "--recharge",
    "notify/emails": "--email",
    "notify/webhook_url": "--webhook-url",
    "notify/locale": "--locale",
}
"""The option that sets each field of an account command (for error messages)."""

WHAT_IT_MUST_BE = {
    "tenant_id": "1–64 characters of A-Z a-z 0-9 . _ -",
    "command_id": "1–200 characters",
    "event_id": "1–200 characters",
    "user_id": "1–200 characters",
    "country": "an ISO 3166-1 alpha-2 code in capitals, e.g. US",
    "usage_location": "an ISO 3166-1 alpha-2 code in capitals, e.g. US",
    "currency": "an ISO 4217 code in capitals, e.g. USD",
    "low_balance_threshold": "a decimal amount such as 12.50 (no sign, no exponent, at most 4 decimals)",
    "amount": "a decimal amount such as 12.50 (no sign, no exponent, at most 4 decimals)",
    "trigger_amount": "a decimal amount such as 12.50 (no sign, no exponent, at most 4 decimals)",
    "recharge_amount": "a decimal amount such as 12.50 (no sign, no exponent, at most 4 decimals)",
    "purchased_at": "an RFC 3339 time with an offset, e.g. 2026-11-02T09:00:00Z",
    "capabilities": "at most 32 distinct capability ids of A-Z 0-9 _ (up to 32 characters), e.g. MCOPSTN1",
    "notify/emails": "at most 10 e-mail addresses (name@domain, no spaces, up to 254 characters)",
    "notify/webhook_url": "an https:// (or http://) URL without spaces, up to 2048 characters",
    "notify/locale": "a BCP 47 tag such as en, pt-BR, es, ru, zh-CN, it (others fall back to en)",
}


class OptionError(click.ClickException):
    """A bad option value: one line (``Error: --country 'usa': …``), exit 2 as click's
    usage errors."""

    exit_code = 2


class BrokerError(click.ClickException):
    """The broker could not be reached or refused the work: one line, exit 1."""

    exit_code = 1


# --- options shared by every command -----------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def broker_options(func: F) -> F:
    """``--bootstrap``, ``--prefix`` and ``--timeout``, read from the worker's variables."""
    func = click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
                        help="seconds to wait for the broker before giving up (exit 1)")(func)
    func = click.option("--prefix", envvar="RATER_TOPIC_PREFIX", default="", show_default=False,
                        help="topic name prefix [env RATER_TOPIC_PREFIX; default: none]")(func)
    return click.option("--bootstrap", envvar=["RATER_BOOTSTRAP", "KAFKA_BOOTSTRAP"], default=DEFAULT_BOOTSTRAP,
                        show_default=True, help="Kafka bootstrap servers [env RATER_BOOTSTRAP]")(func)


def command_options(func: F) -> F:
    """The options of every account command: the tenant, the command id, the broker."""
    func = broker_options(func)
    func = click.option("--dry-run", is_flag=True,
                        help="print the command as JSON instead of sending it (no broker needed)")(func)
    func = click.option("--command-id", default=None,
                        help="the command's idempotency key (default: a new UUID); send a command again with "
                             "the same id and content and the rater applies it once")(func)
    return click.option("--tenant", "tenant_id", required=True, help="tenant id")(func)


# --- building and checking ---------------------------------------------------------------

def now_rfc3339() -> str:
    """The wall clock in UTC, to the second, as the wire writes times."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build(kind: str, tenant_id: str, command_id: str | None, **fields: Any) -> dict[str, Any]:
    """An account command with its envelope; ``event_id`` is the ``command_id``, so a
    retry repeats the message (``occurred_at`` aside, which is not its content)."""
    command_id = command_id if command_id is not None else str(uuid.uuid4())
    return {"type": kind, "schema_version": 1, "event_id": command_id, "tenant_id": tenant_id,
            "occurred_at": now_rfc3339(), "command_id": command_id, **fields}


def check(event: dict[str, Any]) -> None:
    """Raise :class:`OptionError` naming the option of the first field the schema refuses."""
    from rater import schemas

    error = schemas.first_error(event["type"], event)
    if error is None and isinstance(event.get("notify"), dict):  # the rater takes any object: the notifier's rules
        error = schemas.definition_error("notify", event["notify"])
        error = None if error is None else "notify/" + error
    if error is None:
        return
    where, _, why = error.partition(": ")
    field = "/".join(where.split("/")[:2]) if where.startswith("notify/") else where.split("/")[0]
    option = OPTION_OF_FIELD.get(field)
    if option is None:  # not an option's field: a bug of this module, said as it is
        raise OptionError(f"{event['type']}: {error}")
    value = event.get(field) if not field.startswith("notify/") else None
    shown = f" {value!r}" if isinstance(value, str) else ""
    raise OptionError(f"{option}{shown}: must be {WHAT_IT_MUST_BE[field]}" if field in WHAT_IT_MUST_BE
                      else f"{option}{shown}: {why}")


def check_amount(option: str, amount: str | None, currency: str) -> None:
    """An amount with more decimals than ``currency`` allows (SPEC §1.6) is refused here,
    as the rater would refuse it (``schema`` dead letter); so is an unknown currency."""
    from rater.catalog import currency_exponents
    from rater.core.money import MoneyFormatError, parse_decimal

    exponent = currency_exponents().get(currency)
    if exponent is None:
        raise OptionError(f"--currency {currency!r}: not an ISO 4217 currency with a minor unit")
    if amount is None:
        return
    try:
        parse_decimal(amount, exponent)
    except MoneyFormatError:
        raise OptionError(f"{option} {amount!r}: {currency} amounts have at most {exponent} decimal(s)") from None


# --- sending -------------------------------------------------------------------------------

async def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
    """Send one record (``acks=all``, idempotent); returns its (partition, offset)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                client_id="rater-cli")
    try:
        await producer.start()
        metadata = await producer.client.fetch_all_metadata()
        if topic not in metadata.topics():
            raise BrokerError(f"topic {topic} does not exist on {bootstrap}; `rater topics create` makes it")
        sent = await producer.send_and_wait(topic, value, key=key)
        return sent.partition, sent.offset
    finally:
        await producer.stop()


def run_bounded(work: Callable[[], Any], bootstrap: str, timeout_s: float) -> Any:
    """Run the coroutine ``work()`` for at most ``timeout_s``; a broker that cannot be
    reached or does not answer in time is a :class:`BrokerError` (one line, exit 1)."""
    from aiokafka.errors import KafkaConnectionError, KafkaError

    async def bounded() -> Any:
        return await asyncio.wait_for(work(), timeout_s)

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its retries would repeat what the one line says
    try:
        return asyncio.run(bounded())
    except TimeoutError:
        raise BrokerError(f"no answer from the Kafka broker at {bootstrap} within {timeout_s:g}s") from None
    except KafkaConnectionError:
        raise BrokerError(f"cannot reach the Kafka broker at {bootstrap} (--bootstrap, RATER_BOOTSTRAP)") from None
    except KafkaError as exc:
        raise BrokerError(f"Kafka broker at {bootstrap}: {exc}") from None
    except OSError as exc:  # a bootstrap address that does not resolve, say
        raise BrokerError(f"cannot reach the Kafka broker at {bootstrap}: {exc}") from None


def send(event: dict[str, Any], *, bootstrap: str, prefix: str, timeout_s: float, dry_run: bool) -> None:
    """Check ``event``, then produce it (or print it with ``dry_run``) and print its id."""
    check(event)
    value = orjson.dumps(event)
    if dry_run:
        click.echo(value.decode())
        return
    topic = prefix + TOPIC
    partition, offset = run_bounded(
        lambda: _produce(bootstrap, topic, event["tenant_id"].encode(), value), bootstrap, timeout_s)
    click.echo(f"{event['type']} for {event['tenant_id']}: sent to {topic} partition {partition}"
               f" offset {offset}", err=True)
    click.echo(event["command_id"])


# --- the commands --------------------------------------------------------------------------

@click.group("tenant")
def tenant() -> None:
    """Account commands for a tenant, sent to {prefix}account-commands.

    Each prints the command's id (its idempotency key) on stdout. Exit codes: 0 sent,
    1 the broker or topic could not be used, 2 a bad option (nothing sent).
    Broker settings come from RATER_BOOTSTRAP and RATER_TOPIC_PREFIX, as the worker's.
    """


@tenant.command("upsert")
@command_options
@click.option("--country", required=True, help="the tenant's country (ISO 3166-1 alpha-2, e.g. US)")
@click.option("--currency", required=True,
              help="ISO 4217 currency, e.g. USD (fixed by the tenant's first upsert)")
@click.option("--billing-model", type=click.Choice(BILLING_MODELS),
              default="prepaid_credits", show_default=True)
@click.option("--low-balance-threshold", default=None, metavar="AMOUNT",
              help="a low-balance event when the balance falls below this (default: the auto-recharge trigger)")
@click.option("--email", "emails", multiple=True, metavar="ADDRESS",
              help="an admin the notifier e-mails (repeat for more, at most 10)")
@click.option("--webhook-url", default=None, metavar="URL", help="where the notifier POSTs each notification")
@click.option("--locale", default=None, metavar="TAG",
              help="the notifications' language: en, pt-BR, es, ru, zh-CN, it (others: en) [default: en]")
def tenant_upsert(*, tenant_id: str, command_id: str | None, dry_run: bool, bootstrap: str, prefix: str,
                  timeout: float, country: str, currency: str, billing_model: str,
                  low_balance_threshold: str | None, emails: tuple[str, ...], webhook_url: str | None,
                  locale: str | None) -> None:
    """Create a tenant or change its country, billing model, low-balance threshold or
    contacts (a full upsert: contacts left out are no contacts)."""
    notify: dict[str, Any] | None = None
    if emails or webhook_url or locale:
        notify = {"emails": list(emails), "webhook_url": webhook_url, "locale": locale or "en"}
    event = build("tenant_upserted", tenant_id, command_id, country=country, currency=currency,
                  billing_model=billing_model, low_balance_threshold=low_balance_threshold,
                  **({"notify": notify} if notify is not None else {}))
    check(event)
    check_amount("--low-balance-threshold", low_balance_threshold, currency)
    send(event, bootstrap=bootstrap, prefix=prefix, timeout_s=timeout, dry_run=dry_run)


@tenant.command("licences")
@command_options
@click.option("--user", "user_id", required=True, help="the user's id")
@click.option("--location", "usage_location", required=True,
              help="the user's usage location (ISO 3166-1 alpha-2), which sizes the pools")
@click.option("--capability", "capabilities", multiple=True, metavar="ID",
              help="a capability (licence) of the catalog, e.g. MCOPSTN1; repeat for several")
@click.option("--none", "no_capabilities", is_flag=True, help="take every licence away from the user")
@click.option("--catalog", type=click.Path(dir_okay=False), envvar="RATER_CATALOG", default=None,
              help="the plan catalog the workers rate with, to check the capability ids against "
                   "[env RATER_CATALOG; default: the shipped one]")
def tenant_licences(*, tenant_id: str, command_id: str | None, dry_run: bool, bootstrap: str, prefix: str,
                    timeout: float, user_id: str, usage_location: str, capabilities: tuple[str, ...],
                    no_capabilities: bool, catalog: str | None) -> None:
    """Set a user's licences: the --capability list REPLACES the user's whole set."""
    if bool(capabilities) == no_capabilities:
        raise OptionError("--capability: give at least one (the list replaces the user's set), "
                          "or --none to take every licence away" if not capabilities
                          else "--none: not together with --capability")
    event = build("licenses_assigned", tenant_id, command_id, user_id=user_id, usage_location=usage_location,
                  capabilities=list(capabilities))
    check(event)
    check_capabilities(capabilities, catalog)
    send(event, bootstrap=bootstrap, prefix=prefix, timeout_s=timeout, dry_run=dry_run)


def check_capabilities(capabilities: tuple[str, ...], catalog_path: str | None) -> None:
    """A capability the catalog does not define is refused here, as the worker would
    refuse the command (``schema`` dead letter)."""
    from rater.catalog import DataFileError, load_catalog

    try:
        catalog = load_catalog(catalog_path)
    except DataFileError as exc:
        raise OptionError(f"--catalog: {exc}") from None
    for capability in capabilities:
        if capability not in catalog.by_id:
            raise OptionError(f"--capability {capability!r}: not in catalog {catalog.version}"
                              f" (it has {', '.join(catalog.by_id)})")


@tenant.command("remove-user")
@command_options
@click.option("--user", "user_id", required=True, help="the user's id")
def tenant_remove_user(*, tenant_id: str, command_id: str | None, dry_run: bool, bootstrap: str, prefix: str,
                       timeout: float, user_id: str) -> None:
    """Remove a user and the user's licences (the pools shrink at once)."""
    event = build("user_removed", tenant_id, command_id, user_id=user_id)
    send(event, bootstrap=bootstrap, prefix=prefix, timeout_s=timeout, dry_run=dry_run)


@tenant.command("funds")
@command_options
@click.option("--amount", required=True, metavar="AMOUNT", help="credits bought, a decimal string, e.g. 25.00")
@click.option("--currency", required=True, help="ISO 4217 currency; must be the tenant's")
@click.option("--purchased-at", default=None, metavar="TIME",
              help="RFC 3339 purchase time (the lot expires 12 months later) [default: now; "
                   "required with --command-id]")
def tenant_funds(*, tenant_id: str, command_id: str | None, dry_run: bool, bootstrap: str, prefix: str,
                 timeout: float, amount: str, currency: str, purchased_at: str | None) -> None:
    """Add a lot of communications credits (its lot id is the command id)."""
    if command_id is not None and purchased_at is None:
        # the purchase time is part of the command's content: a retry stamped "now" again
        # would be the same id with other content, an id_conflict, and the lot not added
        raise OptionError("--purchased-at: required with --command-id (a retry must repeat the purchase time,"
                          " or the rater refuses it as an id_conflict)")
    event = build("funds_added", tenant_id, command_id, amount=amount, currency=currency,
                  purchased_at=purchased_at or now_rfc3339())
    check(event)
    check_amount("--amount", amount, currency)
    if purchased_at is None and not dry_run:
        click.echo(f"purchased_at {event['purchased_at']} (repeat it with --purchased-at to retry this command)",
                   err=True)
    send(event, bootstrap=bootstrap, prefix=prefix, timeout_s=timeout, dry_run=dry_run)


@tenant.command("auto-recharge")
@command_options
@click.option("--enabled/--disabled", required=True, help="turn auto-recharge on or off")
@click.option("--trigger", "trigger_amount", default=None, metavar="AMOUNT",
              help="recharge when the balance falls below this (required with --enabled; default 0 when disabled)")
@click.option("--recharge", "recharge_amount", default=None, metavar="AMOUNT",
              help="recharge with this amount (required with --enabled; default 0 when disabled)")
def tenant_auto_recharge(*, tenant_id: str, command_id: str | None, dry_run: bool, bootstrap: str, prefix: str,
                         timeout: float, enabled: bool, trigger_amount: str | None,
                         recharge_amount: str | None) -> None:
    """Configure auto-recharge (amounts in the tenant's currency)."""
    for option, value in (("--trigger", trigger_amount), ("--recharge", recharge_amount)):
        if enabled and value is None:
            raise OptionError(f"{option}: required with --enabled")
    event = build("auto_recharge_configured", tenant_id, command_id, enabled=enabled,
                  trigger_amount=trigger_amount or "0", recharge_amount=recharge_amount or "0")
    send(event, bootstrap=bootstrap, prefix=prefix, timeout_s=timeout, dry_run=dry_run)
