"""Session fixtures: one real Kafka broker per test run (or ``KAFKA_BOOTSTRAP``)."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import settings

from rater.localkafka import broker_for_tests

# CI replays the same examples every run (main stays green for a reason that can be
# reproduced); a developer's run draws new ones, so the search keeps going.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real Apache Kafka broker for the whole session."""
    with broker_for_tests() as bootstrap:
        yield bootstrap


@pytest.fixture
def topic_prefix() -> str:
    """A fresh topic prefix, so every test has topics (and a consumer group) of its own."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture(autouse=True)
def _logger_levels() -> Iterator[None]:
    """Loggers as they were before each test: a command run in-process (click's
    CliRunner) may quiet aiokafka for the rest of its process, as a CLI should."""
    names = ("aiokafka", "aiohttp", "rater")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
