"""The ``rater`` command line."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import click

from rater.admin import tenant
from rater.export import export
from rater.report import balance, report
from rater.shell.settings import LOG_LEVELS, Settings, SettingsError, count, read
from rater.simulate import simulate


@click.group()
def main() -> None:
    """rater: a stream-processing usage rater for PSTN calling."""


# The operator's commands live in modules of their own (light to import: `rater --help`
# stays quick; each imports Kafka and the rest when it runs).
for command in (tenant, export, simulate, balance, report):
    main.add_command(command)


@main.command()
@click.option("--catalog", type=click.Path(dir_okay=False), envvar="RATER_CATALOG",
              help="use this plan catalog file instead of the shipped default")
@click.option("--tariff", type=click.Path(dir_okay=False), envvar="RATER_TARIFF",
              help="rate with this tariff file instead of the shipped default")
@click.option("--loglevel", "-l", type=click.Choice(LOG_LEVELS), default=None,
              help="worker log level (default: RATER_LOG_LEVEL or info)")
def worker(catalog: str | None, tariff: str | None, loglevel: str | None) -> None:
    """Run a rater worker (settings from RATER_* environment variables)."""
    import dataclasses

    from rater.shell import logs

    try:
        settings = Settings.from_env()
    except SettingsError as exc:  # before the log is set up: RATER_LOG_FORMAT itself may be the bad one
        raise click.ClickException(str(exc)) from None
    settings = dataclasses.replace(settings, log_level=loglevel or settings.log_level)
    logs.setup(settings.log_level, settings.log_format)
    log = logging.getLogger("rater.cli")
    # Until the worker's event loop takes the signals over, SIGTERM stops the start as
    # Ctrl-C does: a clean exit, said in one log record, instead of a traceback.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        _work(settings, log, catalog=catalog, tariff=tariff)
    except KeyboardInterrupt:
        log.info("stopped while starting")


def _work(settings: Settings, log: logging.Logger, *, catalog: str | None, tariff: str | None) -> None:
    """Load the data files, then run the worker."""
    from rater.catalog import DataFileError, rating_context

    try:  # the data files are checked before the worker is even imported
        ctx = rating_context(tariff or settings.tariff_path, catalog or settings.catalog_path)
    except DataFileError as exc:  # a missing file too: the message names it (and the variable that named it)
        message = str(exc) + _named_by(exc, catalog=catalog, tariff=tariff)
        if settings.log_format == "json":  # every line a log shipper reads is JSON
            log.error("%s", message)
            sys.exit(1)
        raise click.ClickException(message) from None

    import rater
    from rater.shell.driver import run_worker

    log.info("rater %s: rating core %s", rater.__version__, rater.CORE_BUILD)
    run_worker(settings, ctx)


def _named_by(exc: Exception, **paths: str | None) -> str:
    """`` (RATER_CATALOG)`` when the file the error is about came from that variable."""
    source = click.get_current_context().get_parameter_source
    named = [f"RATER_{name.upper()}" for name, path in paths.items()
             if path and path in str(exc) and source(name) is click.core.ParameterSource.ENVIRONMENT]
    return f" ({', '.join(named)})" if named else ""


@main.command()
@click.option("--loglevel", "-l", type=click.Choice(LOG_LEVELS), default=None,
              help="log level (default: RATER_LOG_LEVEL or info)")
def notify(loglevel: str | None) -> None:
    """Run the notifier: e-mails and webhooks to each tenant's contacts (settings from
    RATER_SMTP_* and RATER_NOTIFY_* environment variables; docs/notifications.md)."""
    from rater.notifier.settings import NotifySettings
    from rater.shell import logs

    try:
        settings = NotifySettings.from_env()
    except SettingsError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    logs.setup(loglevel or settings.log_level, settings.log_format)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # until Faust's worker takes the signals over
    try:
        from rater.notifier.run import run_notifier

        sys.exit(run_notifier(settings))
    except KeyboardInterrupt:
        logging.getLogger("rater.notify").info("stopped while starting")


@main.group()
def topics() -> None:
    """Kafka topics of topics/topics.toml."""


@topics.command("create")
@click.option("--bootstrap", envvar=["RATER_BOOTSTRAP", "KAFKA_BOOTSTRAP"], default="127.0.0.1:9092",
              show_default=True)
@click.option("--prefix", envvar="RATER_TOPIC_PREFIX", default="", help="topic name prefix")
@click.option("--partitions", type=click.IntRange(min=1), default=None,
              help="partition count of every topic (default: RATER_PARTITIONS, else topics/topics.toml's)")
def topics_create(bootstrap: str, prefix: str, partitions: int | None) -> None:
    """Create the missing topics and check the existing ones."""
    from rater.topics import ensure_topics

    try:
        if partitions is None:
            partitions = read(os.environ, "RATER_PARTITIONS", None, count)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        asyncio.run(ensure_topics(bootstrap, prefix, partitions=partitions, report=click.echo))
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def kafka() -> None:
    """A local Apache Kafka broker from the Maven Central jars (no Docker)."""


@kafka.command("fetch")
def kafka_fetch() -> None:
    """Fetch the broker jars into the cache (once)."""
    from rater.localkafka import ensure_jars

    click.echo(ensure_jars(quiet=False))


@kafka.command("run")
@click.option("--nodes", type=int, default=1, show_default=True)
def kafka_run(nodes: int) -> None:
    """Run a local broker (or NODES-node cluster) until Ctrl-C."""
    from rater.localkafka import main as localkafka_main

    sys.exit(localkafka_main(["run", str(nodes)]))


@main.command()
@click.option("--once", is_flag=True, help="exit after the demo's CDRs are rated instead of waiting for Ctrl-C")
def demo(once: bool) -> None:
    """Start a local broker and a worker, feed a demo tenant, print what comes out."""
    from rater.demo import run_demo

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(run_demo(once=once))
