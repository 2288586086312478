"""The ``rater`` command line."""

from __future__ import annotations

import asyncio
import os
import sys

import click

from rater.shell.settings import Settings


@click.group()
def main() -> None:
    """rater: a stream-processing usage rater for PSTN calling."""


@main.command()
@click.option("--catalog", type=click.Path(exists=True, dir_okay=False), envvar="RATER_CATALOG",
              help="use this plan catalog file instead of the shipped default")
@click.option("--tariff", type=click.Path(exists=True, dir_okay=False), envvar="RATER_TARIFF",
              help="rate with this tariff file instead of the shipped default")
@click.option("--loglevel", "-l", type=click.Choice(["crit", "error", "warn", "info", "debug"]),
              default=None, help="worker log level (default: RATER_LOG_LEVEL or info)")
def worker(catalog: str | None, tariff: str | None, loglevel: str | None) -> None:
    """Run a rater worker (settings from RATER_* environment variables)."""
    from rater.catalog import DataFileError, rating_context

    settings = Settings.from_env()
    try:  # the data files are checked before the worker is even imported
        ctx = rating_context(tariff or settings.tariff_path, catalog or settings.catalog_path)
    except DataFileError as exc:
        raise click.ClickException(str(exc)) from None

    import dataclasses

    import rater
    from rater.shell.driver import run_worker

    click.echo(f"rater {rater.__version__}: rating core {rater.CORE_BUILD}", err=True)
    run_worker(dataclasses.replace(settings, log_level=loglevel or settings.log_level), ctx)


@main.group()
def topics() -> None:
    """Kafka topics of topics/topics.toml."""


@topics.command("create")
@click.option("--bootstrap", envvar=["RATER_BOOTSTRAP", "KAFKA_BOOTSTRAP"], default="127.0.0.1:9092",
              show_default=True)
@click.option("--prefix", envvar="RATER_TOPIC_PREFIX", default="", help="topic name prefix")
@click.option("--partitions", type=int, default=None, help="override the declared partition count")
def topics_create(bootstrap: str, prefix: str, partitions: int | None) -> None:
    """Create the missing topics and check the existing ones."""
    from rater.topics import ensure_topics

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
