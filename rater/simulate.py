"""``rater simulate``: the CDR traffic simulator and the payment processor simulator.

The commands import Kafka and rich only when they run (``rater --help`` stays fast).
Exit codes: 0 done or stopped by Ctrl-C / SIGTERM, 1 Kafka failed (no broker, a missing
topic, a message not acknowledged), 2 a bad option, 3 ``traffic --setup`` found no worker
applying the accounts in time, 130 a second Ctrl-C (no wait for what is in flight).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import click

from rater.shell.settings import Settings, SettingsError


def _broker_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--bootstrap`` and ``--prefix``, read like the worker's settings when not given."""
    command = click.option("--prefix", default=None,
                           help="topic name prefix (default: RATER_TOPIC_PREFIX, else none)")(command)
    return click.option("--bootstrap", default=None,
                        help="Kafka bootstrap servers (default: RATER_BOOTSTRAP, else KAFKA_BOOTSTRAP,"
                             " else 127.0.0.1:9092)")(command)


def _broker(bootstrap: str | None, prefix: str | None) -> tuple[str, str]:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    return bootstrap or settings.bootstrap, settings.topic_prefix if prefix is None else prefix


def _run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, int]]) -> None:
    """Run ``main(stop)``; Ctrl-C and SIGTERM set ``stop`` (a clean stop, exit 0). A second
    one does not wait for the flush: Ctrl-C exits 130, SIGTERM ends the process."""
    signals = (signal.SIGINT, signal.SIGTERM)

    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def first_signal() -> None:
            print("stopping (once more to stop at once) ...", file=sys.stderr, flush=True)
            stop.set()
            for signum in signals:
                loop.remove_signal_handler(signum)

        for signum in signals:
            loop.add_signal_handler(signum, first_signal)
        return await main(stop)

    try:
        code = asyncio.run(runner())
    except KeyboardInterrupt:
        click.echo("interrupted again: stopped without waiting for the messages in flight", err=True)
        code = 130
    sys.exit(code)


@click.group()
def simulate() -> None:
    """Simulators for demos and load: CDR traffic, a payment processor."""


@simulate.command()
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="CDRs per second")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="stop after this many seconds (default: run until Ctrl-C, or --count)")
@click.option("--count", type=click.IntRange(min=0), default=None, help="stop after this many CDRs")
@click.option("--tenants", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--users", type=click.IntRange(min=1), default=100, show_default=True,
              help="users, spread over the tenants (at least one each: ≥ --tenants)")
@click.option("--seed", type=int, default=1, show_default=True, help="the same seed gives the same call mix")
@click.option("--setup/--no-setup", default=True, show_default=True,
              help="first send the tenants' account commands (tenant, licences, funds, auto-recharge) and wait"
                   " until a worker has applied them")
@click.option("--setup-timeout", type=click.FloatRange(min=0), default=120.0, show_default=True,
              help="seconds to wait for a worker to apply the accounts (then exit 3)")
@click.option("--tenant-prefix", default=None,
              help="tenant ids are PREFIX00000, PREFIX00001, ... (default: s{seed}t{tenants}u{users}-)")
@click.option("--run-id", default=None, help="part of every usage id (default: random, so runs never collide)")
@click.option("--notify-domain", default=None, metavar="DOMAIN",
              help="give each tenant a contact for rater notify: admin@TENANT.DOMAIN, in its country's language")
@click.option("--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="seconds between status lines when the output is not a terminal")
@_broker_options
def traffic(*, rate: float, duration: float | None, count: int | None, tenants: int, users: int, seed: int,
            setup: bool, setup_timeout: float, tenant_prefix: str | None, run_id: str | None, interval: float,
            notify_domain: str | None, bootstrap: str | None, prefix: str | None) -> None:
    """Send a realistic call mix (rater/workload.py) to {prefix}cdrs at --rate CDRs/s.

    CDRs end when they are sent (keyed by tenant id); Ctrl-C or SIGTERM stops with a summary.
    """
    from rater.simulators.traffic import TrafficPlan, run_traffic

    if users < tenants:
        raise click.BadParameter(f"every tenant needs a user: at least --tenants ({tenants})", param_hint="--users")
    bootstrap, prefix = _broker(bootstrap, prefix)
    plan = TrafficPlan(rate_per_s=rate, tenants=tenants, users=users, seed=seed, run_id=run_id or uuid.uuid4().hex[:8],
                       tenant_prefix=tenant_prefix, duration_s=duration, count=count, setup=setup,
                       setup_timeout_s=setup_timeout, notify_domain=notify_domain)
    _run_until_signal(lambda stop: run_traffic(bootstrap, prefix, plan, interval_s=interval, stop=stop))


@simulate.command()
@click.option("--fail", "fail", multiple=True, metavar="TENANT[:REASON]",
              help="answer this tenant's requests with failed (reason default: card_expired); repeatable")
@click.option("--delay", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="seconds each request takes to process")
@click.option("--group", default=None, help="consumer group (default: {prefix}payments-simulator)")
@click.option("--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="seconds between status lines when the output is not a terminal")
@_broker_options
def payments(*, fail: tuple[str, ...], delay: float, group: str | None, interval: float, bootstrap: str | None,
             prefix: str | None) -> None:
    """Answer {prefix}recharge-requests on {prefix}recharge-results, until Ctrl-C or SIGTERM.

    Succeeds unless the tenant is named by --fail; at least once, every result a function
    of its request (the rater applies a request_id once).
    """
    from rater.simulators.payments import PaymentRules, parse_fail, run_payments

    bootstrap, prefix = _broker(bootstrap, prefix)
    failing = dict(parse_fail(option) for option in fail)
    if "" in failing:
        raise click.BadParameter("needs a tenant id: TENANT[:REASON]", param_hint="--fail")
    rules = PaymentRules(failing=failing, delay_s=delay)
    group = group or f"{prefix}payments-simulator"
    _run_until_signal(lambda stop: run_payments(bootstrap, prefix, rules, group, interval_s=interval, stop=stop))
