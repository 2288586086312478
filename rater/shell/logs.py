"""The worker's log: human lines (the default) or one JSON object per line for log
shippers (``RATER_LOG_FORMAT=json``), and what is made of aiokafka's records.

A JSON line has ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger`` and
``message``, plus ``exception`` (the traceback text) when the record carries one and
``stack`` when it carries a stack. A record is always exactly one line: newlines inside
the message or the traceback are escaped by JSON.

An ERROR line must mean something is wrong, or operators learn to ignore them: aiokafka
logs a group coordinator that is not known yet — a new group, a broker starting or
moving its coordinator, after which it retries and goes on — at ERROR, and a heartbeat
that meets a normal rebalance at WARNING; aiohttp logs a request it cannot parse (a port
scanner) at ERROR with a traceback. Those records are lowered to INFO here.
"""

from __future__ import annotations

import datetime
import logging
import sys
from typing import Any, TextIO

import orjson
from aiohttp.http_exceptions import HttpProcessingError
from aiokafka import errors

LEVELS = {"crit": logging.CRITICAL, "error": logging.ERROR, "warn": logging.WARNING, "info": logging.INFO,
          "debug": logging.DEBUG}
"""``RATER_LOG_LEVEL`` / ``--loglevel`` → the logging level."""
HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


class CoordinatorNotReadyAsInfo(logging.Filter):
    """aiokafka's ERROR records of a group coordinator not (yet) available become INFO:
    aiokafka retries until it finds one, and a worker that cannot join its group for
    long is not ready (``/readyz``), which is where an operator looks."""

    TRANSIENT = tuple(error.__name__ for error in (
        errors.CoordinatorNotAvailableError, errors.NotCoordinatorError, errors.CoordinatorLoadInProgressError))
    """The names aiokafka's messages carry (``[Error 15] GroupCoordinatorNotAvailableError``;
    ``CoordinatorLoadInProgressError`` is an alias: its records say ``GroupLoadInProgressError``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and any(name in record.getMessage() for name in self.TRANSIENT):
            record.levelno, record.levelname = logging.INFO, "INFO"
            # a handler's level was checked by the logger before this filter: check again
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


TRANSIENT_SOURCES = ("aiokafka.consumer.group_coordinator", "aiokafka.producer.sender")
"""The loggers whose coordinator records :class:`CoordinatorNotReadyAsInfo` lowers."""


class RebalanceAsInfo(logging.Filter):
    """aiokafka's WARNING records of a heartbeat that meets a rebalance become INFO: a
    rebalance is how a group takes in or lets go of a worker (a deploy, a restart), and
    the worker rejoins by itself (``/readyz`` says "rebalancing" meanwhile)."""

    NORMAL = ("because it is rebalancing", "generation id is not  current", "generation id is not current")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and any(text in record.getMessage() for text in self.NORMAL):
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


class BadRequestAsInfo(logging.Filter):
    """aiohttp's ERROR record (with a traceback) of a request it could not parse becomes
    one INFO line: a port scanner or a client speaking something else to the metrics
    port is the client's fault, not the worker's. A handler that raises stays ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.levelno >= logging.ERROR and isinstance(exc, HttpProcessingError):
            record.msg, record.args = f"{record.getMessage()}: {exc.__class__.__name__}: {exc.message}", None
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


def _add_filter(logger_name: str, kind: type[logging.Filter]) -> None:
    source = logging.getLogger(logger_name)
    if not any(isinstance(f, kind) for f in source.filters):
        source.addFilter(kind())


def setup(level: str, log_format: str, stream: TextIO | None = None) -> logging.Handler:
    """Send every record at ``level`` (a key of :data:`LEVELS`) and above to ``stream``
    (stderr) as ``human`` or ``json`` lines; replaces the root logger's handlers.
    Returns the handler."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(HUMAN_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    for name in TRANSIENT_SOURCES:
        _add_filter(name, CoordinatorNotReadyAsInfo)
    _add_filter("aiokafka.consumer.group_coordinator", RebalanceAsInfo)
    _add_filter("aiohttp.server", BadRequestAsInfo)
    logging.captureWarnings(True)  # a Python warning is a record too (one line, in the format)
    return handler
