"""The notifier's Prometheus metrics (``rater_notify_*``), on a registry passed in."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
