"""What both simulators need from Kafka: a producer, a clear error when a topic is missing,
and the exit codes their command lines return."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

EXIT_OK = 0
"""Done (the count or duration was reached), or stopped by Ctrl-C / SIGTERM."""
EXIT_KAFKA = 1
"""Kafka failed: no broker, a missing topic, a message not acknowledged."""
EXIT_NOT_READY = 3
"""``traffic --setup``: no worker applied the tenants' accounts in time."""
# 2 is click's: a bad option.


class SimulatorError(Exception):
    """Why a simulator cannot go on (the message is the whole story); carries its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_KAFKA) -> None:
        super().__init__(message)
        self.exit_code = exit_code


async def start_producer(bootstrap: str, *topics: str) -> Any:
    """An idempotent producer (acks from every in-sync replica) that has seen ``topics``
    in the broker's metadata; :class:`SimulatorError` if the broker or a topic is missing."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
    except KafkaError as exc:
        raise SimulatorError(f"cannot reach the Kafka broker at {bootstrap}: {exc!r}") from None
    finally:
        await admin.close()
    if missing := sorted(set(topics) - existing):
        raise SimulatorError(f"no topic {', '.join(missing)} on {bootstrap} (create the topics first:"
                             " rater topics create, with the same RATER_TOPIC_PREFIX)")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=10)
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise SimulatorError(f"cannot reach the Kafka broker at {bootstrap}: {exc!r}") from None
    return producer
