"""The back-off ladder (pure): after an attempt, deliver nothing more, retry later on a
level's topic, or give up.

Attempt ``n`` (1 = the first) that ends transient is followed by attempt ``n + 1`` on
retry level ``min(n, levels)`` after that level's delay; the levels' delays are the
setting ``RATER_NOTIFY_RETRY_DELAYS`` (levels beyond its length reuse its last delay on
the last topic). Each level has its own topic, where every record waits the same delay,
so due times follow append order and a level's agent may wait for its head's.
"""

from __future__ import annotations

from dataclasses import dataclass

from rater.notifier.delivery import DELIVERED, REFUSED, TRANSIENT, Outcome


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again on ``level`` (1-based) once ``delay_s`` has passed."""

    level: int
    delay_s: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop: ``reason`` is ``permanent``, ``refused`` or ``exhausted``."""

    reason: str


def after(outcome: Outcome, attempts: int, delays_s: tuple[float, ...], max_attempts: int) -> Retry | GiveUp | None:
    """What follows attempt number ``attempts`` that ended in ``outcome`` (``None``: delivered)."""
    if outcome.status == DELIVERED:
        return None
    if outcome.status == REFUSED:
        return GiveUp("refused")
    if outcome.status != TRANSIENT:
        return GiveUp("permanent")
    if attempts >= max_attempts:
        return GiveUp("exhausted")
    level = min(attempts, len(delays_s))
    return Retry(level, delays_s[level - 1])
