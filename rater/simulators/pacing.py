"""Pacing against a monotonic clock the caller reads: a token bucket.

Sleeping ``1/rate`` between messages drifts (every sleep overshoots, and the work between
sleeps adds up); here tokens accrue from the time that really passed, so the long-run rate
is the target whatever the sleeps do, and a stall is caught up by at most ``capacity``
messages at once. Time is an argument, so tests drive it by hand.
"""

from __future__ import annotations


class TokenBucket:
    """``rate_per_s`` tokens a second, holding at most ``capacity``; starts with one token
    (the first message goes at once)."""

    def __init__(self, rate_per_s: float, capacity: float, now_s: float) -> None:
        assert rate_per_s > 0, rate_per_s
        assert capacity >= 1, capacity
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self.tokens = 1.0
        self.last_s = now_s

    def _refill(self, now_s: float) -> None:
        if now_s > self.last_s:
            self.tokens = min(self.capacity, self.tokens + (now_s - self.last_s) * self.rate_per_s)
            self.last_s = now_s

    def take(self, now_s: float, most: int) -> int:
        """How many messages may go now (at most ``most``); their tokens are spent."""
        self._refill(now_s)
        allowed = min(int(self.tokens), most)
        self.tokens -= allowed
        return max(allowed, 0)

    def wait_s(self, now_s: float) -> float:
        """Seconds until the next token (0 when one is there)."""
        self._refill(now_s)
        return max(0.0, (1.0 - self.tokens) / self.rate_per_s)
