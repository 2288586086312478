"""The notifier's Prometheus metrics (``rater_notify_*``), on a registry passed in.

Every labelled series the notifier can count is shown at 0 from its start (as the
workers' are): a series that appeared only with its first increment would hide that
increment from ``rate()`` and ``increase()`` — the first failures after a start would
never reach the dashboard's *Notifier failures* nor ``RaterNotifyDeliveriesFailing``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rater.notifier.delivery import CHANNELS
from rater.notifier.render import KINDS
from rater.notifier.settings import RETRY_LEVELS

OUTCOMES = ("delivered", "duplicate", "retry", "failed")
FAILURE_REASONS = ("permanent", "refused", "exhausted")
SKIP_REASONS = ("other_type", "invalid", "too_old", "no_contacts")
CONTACT_ACTIONS = ("set", "cleared", "invalid")

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)
"""Seconds from an event's ``occurred_at`` to its delivery: a second when all is well,
hours when a delivery needed retries."""


class NotifyMetrics:
    """What the notifier counts."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.deliveries = Counter(
            "rater_notify_deliveries", "Delivery attempts by event kind, channel and outcome"
            " (delivered; duplicate: already delivered, not sent again; retry: a later attempt was"
            " scheduled; failed: given up, in notification-failures)",
            ["kind", "channel", "outcome"], registry=registry)
        self.retries = Counter(
            "rater_notify_retries", "Retries scheduled, by channel and back-off level (retry topic)",
            ["channel", "level"], registry=registry)
        self.failures = Counter(
            "rater_notify_failures", "Deliveries given up (written to notification-failures), by channel and"
            " reason (permanent, refused, exhausted)", ["channel", "reason"], registry=registry)
        self.latency = Histogram(
            "rater_notify_delivery_latency_seconds", "From the event's occurred_at to its delivery",
            ["channel"], buckets=LATENCY_BUCKETS, registry=registry)
        self.skipped = Counter(
            "rater_notify_skipped", "Events not delivered, by reason (other_type, invalid, too_old, no_contacts)",
            ["reason"], registry=registry)
        self.contacts = Counter(
            "rater_notify_contacts_updates", "tenant_upserted commands applied to the contacts table, by"
            " action (set, cleared, invalid)", ["action"], registry=registry)
        self.in_flight = Gauge("rater_notify_in_flight", "Delivery attempts under way", registry=registry)
        self.lag = Gauge(
            "rater_notify_consumer_lag", "Records of the notifier's partitions not committed yet (end offset"
            " − committed offset, summed over its partitions of the topic); on a retry topic these are"
            " retries waiting for their due time", ["topic"], registry=registry)
        self._zero()

    def _zero(self) -> None:
        """Create every labelled series at 0 (the lag waits for its first measurement:
        0 before the consumer has started would be a claim)."""
        for kind in KINDS:
            for channel in CHANNELS:
                for outcome in OUTCOMES:
                    self.deliveries.labels(kind, channel, outcome)
        for channel in CHANNELS:
            self.latency.labels(channel)
            for level in range(1, RETRY_LEVELS + 1):
                self.retries.labels(channel, str(level))
            for reason in FAILURE_REASONS:
                self.failures.labels(channel, reason)
        for reason in SKIP_REASONS:
            self.skipped.labels(reason)
        for action in CONTACT_ACTIONS:
            self.contacts.labels(action)
