"""What one step of the core produces, and the working set it is built in.

A :class:`Step` is the result of applying one input (or of time passing): the state, the
output events (:class:`Output`) and a :class:`Rejection`, if any. While the core works on
it, the step is a :class:`Work`: the tenant and the rating context are known, and its
helpers stamp every event with the tenant, ``occurred_at`` and :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rater.core.context import RatingContext
from rater.core.money import format_decimal
from rater.core.state import TenantState
from rater.core.times import format_time_us
from rater.core.usage import UsageDelta

SCHEMA_VERSION = 1


class Output:
    """An event for one of the output streams (``rated-cdrs``, ``balances``, ...).

    Its wire fields (``payload``: RFC 3339 times, decimal-string amounts) are formatted
    from the decided values on first access — when the shell encodes it — so rating
    pays for deciding, not for formatting. The values are captured when the event is
    made; later changes to the state do not reach it."""

    __slots__ = ("_args", "_build", "_payload", "stream")

    def __init__(self, stream: str, payload: dict[str, Any] | None = None,
                 build: Callable[..., dict[str, Any]] | None = None, args: tuple[Any, ...] = ()) -> None:
        self.stream = stream
        self._payload = payload
        self._build = build
        self._args = args

    @property
    def payload(self) -> dict[str, Any]:
        """The event as the wire contract's JSON object (SPEC §2)."""
        if self._payload is None:
            assert self._build is not None
            self._payload = self._build(*self._args)
            self._build, self._args = None, ()
        return self._payload

    def __repr__(self) -> str:
        return f"Output({self.stream!r}, {self.payload!r})"


@dataclass(frozen=True, slots=True)
class Rejection:
    """An input the core refuses; the shell turns it into a dead letter."""

    reason: str
    message: str


class Step:
    """The result of applying one input (or of time passing) — and, while the core
    works on it, the step's working set (the context and the outputs so far)."""

    __slots__ = ("balance_cause", "changed", "ctx", "now", "now_us", "outputs", "rejection", "state", "tenant",
                 "usage")

    tenant: TenantState
    """The tenant the core works on (``state`` narrowed; unset when there is none)."""
    ctx: RatingContext
    """The rating context (unset on a step that never reached a tenant)."""

    def __init__(self, state: TenantState | None, ctx: RatingContext | None = None, now_us: int = 0, *,
                 rejection: Rejection | None = None) -> None:
        self.state = state
        if state is not None:
            self.tenant = state
        if ctx is not None:
            self.ctx = ctx
        self.now_us = now_us
        """The "now" the step ran at (a balance snapshot's ``occurred_at``)."""
        self.now = ""  # formatted on first use
        self.outputs: list[Output] = []
        self.rejection = rejection
        self.changed = False
        """Whether the state must be written back."""
        self.balance_cause: str | None = None
        """The id of the last input (or time-driven cause) that changed what a ``balance``
        snapshot shows, if any: the shell emits one :func:`~rater.core.engine.balance_event` per tenant per
        batch of inputs (a compacted topic keeps only the latest anyway)."""
        self.usage: UsageDelta | None = None
        """What a rated call adds to its tenant's usage of its month (:mod:`rater.core.usage`)."""


class Work(Step):
    """A step while the core works on it: the tenant and the context are known."""

    __slots__ = ()

    def money(self, minor: int) -> str:
        """An amount in the tenant's minor units as the wire's decimal string."""
        return format_decimal(minor, self.tenant.exponent)

    def emit(self, stream: str, kind: str, event_id: str, fields: dict[str, Any]) -> None:
        """An event of type ``kind`` for ``stream``, stamped with the tenant and "now"."""
        if not self.now:
            self.now = format_time_us(self.now_us)
        payload = {
            "type": kind,
            "schema_version": SCHEMA_VERSION,
            "event_id": f"{self.tenant.tenant_id}/{event_id}",
            "tenant_id": self.tenant.tenant_id,
            "occurred_at": self.now,
        }
        payload.update(fields)
        self.outputs.append(Output(stream, payload))

    def notify(self, kind: str, event_id: str, fields: dict[str, Any]) -> None:
        """A ``notifications`` event of type ``kind``."""
        self.emit("notifications", kind, f"{kind}/{event_id}", fields)

    def balance(self, caused_by: str) -> None:
        """What a balance snapshot shows changed because of ``caused_by``."""
        self.balance_cause = caused_by


def finish(events: Work, rejection: Rejection | None, changed: bool) -> Step:
    """The step done: its rejection, and whether the state must be written back."""
    events.rejection = rejection
    events.changed = changed or events.changed or bool(events.outputs) or events.balance_cause is not None
    return events
