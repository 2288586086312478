"""Generate ``deploy/grafana/dashboards/rater.json``, the rater's Grafana dashboard.

Dashboards as code: the panels are the table below (plain Python dicts, no SDK — the
JSON model Grafana reads is small and stable, and ``tests/test_dashboard.py`` checks its
structure; grafanalib and grafana-foundation-sdk would add a dependency that tracks
Grafana's releases for the dozen keys used here). Every query selects the job ``rater``
and filters on the ``worker`` template variable (``instance=~"$worker"``; the variable's
values are ``label_values(up{job="rater"}, instance)``: every worker Prometheus scrapes, a
dead one too), and ``tests/test_prometheus.py`` runs every query against a real
Prometheus scraping two real workers. The notifier's row selects the job ``rater-notify``
and the ``notifier`` variable instead (``instance=~"$notifier"``), and
``tests/test_prometheus_notifier.py`` runs its queries against a real Prometheus scraping a
real ``rater notify``.

Regenerate after editing (``tests/test_dashboard.py`` fails when the committed file and a
fresh generation differ)::

    .venv/bin/python tools/gen_dashboard.py
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TARGET = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards" / "rater.json"

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
"""The provisioned datasource (deploy/grafana/provisioning/datasources/prometheus.yml)."""
JOB = 'job="rater"'
"""The scrape job of the workers, as the alert rules select it: ``up`` is Prometheus's for
every target, and the same workers scraped under another job as well would count twice."""
W = f'{JOB},instance=~"$worker"'
"""The selector every query of the workers' panels carries."""
NOTIFY_JOB = 'job="rater-notify"'
"""The scrape job of the notifiers (``rater notify``, docs/notifications.md): a job of its own,
so the workers' sums and alerts never count it."""
N = f'{NOTIFY_JOB},instance=~"$notifier"'
"""The selector every query of the notifier's panels carries."""
WIDTH = 24  # Grafana's grid
HEIGHT = 8


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str
    instant: bool = False
    """One value at the dashboard's end time (a stat or a table), not a series over time."""
    table: bool = False
    """Grafana's table format: the labels become columns."""


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat | table
    width: int = 12
    extra: dict[str, Any] = field(default_factory=dict)
    """More field defaults (min, max)."""
    hide: tuple[str, ...] = ()
    """Columns a table does not show."""


def rate(metric: str, by: str, window: str = "$__rate_interval", matchers: str = "", on: str = W) -> str:
    inner = f"{on},{matchers}" if matchers else on
    return f"sum by ({by}) (rate({metric}{{{inner}}}[{window}]))"


def quantile(q: float, histogram: str, by: str = "", on: str = W) -> str:
    keys = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({keys}) (rate({histogram}_bucket{{{on}}}[$__rate_interval])))"


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    ("Workers", (
        Panel("Workers ready", "Workers whose /readyz says ready (rater_ready), workers that answer Prometheus's"
              " scrape (up), and the workers Prometheus is told to scrape (its targets of job rater: a dead"
              " worker stays counted here, not up). A worker is not ready while it waits for the broker or the"
              " topics, joins its group, during a rebalance and while a partition restores from its changelog.",
              (Query(f"sum(rater_ready{{{W}}})", "ready"), Query(f"sum(up{{{W}}})", "up"),
               Query(f"count(up{{{W}}})", "workers")),
              kind="stat", width=6),
        Panel("Readiness per worker", "1 = ready. A worker that stays at 0 for minutes is stuck restoring or"
              " rebalancing: see Restore progress below.",
              (Query(f"rater_ready{{{W}}}", "{{instance}}"),), width=9, extra={"max": 1, "min": 0}),
        Panel("Partitions owned / ready", "Partitions assigned to each worker, and how many of them are restored"
              " and consuming. Owned > ready means a restore is under way.",
              (Query(f"rater_partitions_owned{{{W}}}", "{{instance}} owned"),
               Query(f"rater_partitions_ready{{{W}}}", "{{instance}} ready")), width=9),
        Panel("Versions", "Each worker's version and which rating core it runs (compiled or pure).",
              (Query(f"rater_info{{{W}}}", "{{instance}}", instant=True, table=True),),
              kind="table", width=12, hide=("Time", "Value", "__name__", "job")),
        Panel("Process CPU and memory", "CPU seconds per second and resident memory of each worker process.",
              (Query(f"rate(process_cpu_seconds_total{{{W}}}[$__rate_interval])", "{{instance}} CPU"),
               Query(f"process_resident_memory_bytes{{{W}}} / 2^30", "{{instance}} RSS GiB")), width=12),
    )),
    ("Throughput", (
        Panel("Rated CDRs by status", "Rated CDRs committed per second, by status (rated, partially_funded,"
              " blocked, ...). A rise of blocked or partially_funded means tenants out of money or licences.",
              (Query(rate("rater_cdrs_rated_total", "status"), "{{status}}"),), unit="ops"),
        Panel("Rated CDRs by capability", "Rated CDRs per second by the capability that paid most of the call"
              " (none: nothing paid).",
              (Query(rate("rater_cdrs_rated_total", "capability"), "{{capability}}"),), unit="ops"),
        Panel("Input records by topic", "Input records committed per second, by input topic.",
              (Query(rate("rater_input_records_total", "topic"), "{{topic}}"),), unit="ops"),
        Panel("Output records by topic and type", "Records produced in committed units per second.",
              (Query(rate("rater_output_records_total", "topic, type"), "{{topic}} {{type}}"),), unit="ops"),
        Panel("Dead letters by reason", "Dead letters per second by reason and source topic. Each one is an input"
              " the rater could not use (its bytes are on the dead-letters topic): read the reason in"
              " docs/operating.md.",
              (Query(rate("rater_dead_letters_total", "reason, topic"), "{{reason}} ({{topic}})"),), unit="ops",
              width=24),
    )),
    ("Latency and lag", (
        Panel("CDR end → commit (p50, p99)", "From a call's end_time to the commit of the unit that rated it:"
              " includes the telephony platform's own delay in publishing the CDR.",
              (Query(quantile(0.5, "rater_cdr_end_to_commit_seconds"), "p50"),
               Query(quantile(0.99, "rater_cdr_end_to_commit_seconds"), "p99")), unit="s", width=8),
        Panel("Input record → commit (p50, p99)", "From an input record's Kafka timestamp to its unit's commit,"
              " by topic. Only rater-ticks is stamped by the broker (LogAppendTime); the other topics keep their"
              " producer's CreateTime (for cdrs the platform's: its send time, the call's end or a backfill's old"
              " time), so with no lag a high value there is the producer's delay, not the rater's.",
              (Query(quantile(0.5, "rater_record_to_commit_seconds", "topic"), "p50 {{topic}}"),
               Query(quantile(0.99, "rater_record_to_commit_seconds", "topic"), "p99 {{topic}}")), unit="s",
              width=8),
        Panel("Consumer lag per partition", "Records of each owned input partition not yet fetched. Growing lag:"
              " the workers do not keep up (add workers up to the partition count). A stuck worker's lag freezes"
              " (it is measured from its last fetch): see the RaterNotCommitting alert.",
              (Query(f"sum by (topic, partition) (rater_consumer_lag_records{{{W}}})", "{{topic}} {{partition}}"),),
              width=8),
    )),
    ("Money", (
        Panel("Charged per currency", "Charges of rated CDRs, minor units per second (cents for USD).",
              (Query(rate("rater_charged_minor_units_total", "currency"), "{{currency}}"),), width=6),
        Panel("Debited per currency", "Money debited from prepaid credit lots, minor units per second.",
              (Query(rate("rater_debited_minor_units_total", "currency"), "{{currency}}"),), width=6),
        Panel("Overage per currency", "Post-paid overage charged, minor units per second.",
              (Query(rate("rater_overage_minor_units_total", "currency"), "{{currency}}"),), width=6),
        Panel("Uncollected per currency", "Charges a prepaid tenant's credits could not pay, minor units per"
              " second: revenue lost unless collected another way.",
              (Query(rate("rater_uncollected_minor_units_total", "currency"), "{{currency}}"),), width=6),
        Panel("Money in the time range", "Totals over the dashboard's time range, in minor units.",
              (Query(f"sum by (currency) (increase(rater_charged_minor_units_total{{{W}}}[$__range]))",
                     "charged {{currency}}", instant=True),
               Query(f"sum by (currency) (increase(rater_debited_minor_units_total{{{W}}}[$__range]))",
                     "debited {{currency}}", instant=True),
               Query(f"sum by (currency) (increase(rater_overage_minor_units_total{{{W}}}[$__range]))",
                     "overage {{currency}}", instant=True),
               Query(f"sum by (currency) (increase(rater_uncollected_minor_units_total{{{W}}}[$__range]))",
                     "uncollected {{currency}}", instant=True)), kind="stat", width=24),
    )),
    ("Accounts", (
        Panel("Recharge requests", "Auto-recharge requests emitted per second, by currency.",
              (Query(rate("rater_recharge_requests_total", "currency"), "{{currency}}"),), unit="ops", width=8),
        Panel("Recharge outcomes", "Recharge results the payment service answered, per second, by outcome."
              " Failures: cards declined or expired, or the payment service down.",
              (Query(rate("rater_recharge_outcomes_total", "outcome"), "{{outcome}}"),), unit="ops", width=8),
        Panel("Low balance / depleted", "low_balance events (a balance crossed below its threshold) and"
              " balance_depleted notifications (a prepaid balance reached zero), per minute.",
              (Query(f"sum(rate(rater_low_balance_events_total{{{W}}}[$__rate_interval])) * 60", "low balance"),
               Query(f"sum(rate(rater_balance_depleted_events_total{{{W}}}[$__rate_interval])) * 60",
                     "depleted")), width=8),
    )),
    ("Units", (
        Panel("Batch size (p50, p99, mean)", "Input records per unit (one transaction per partition batch). Big"
              " batches: the worker is catching up.",
              (Query(quantile(0.5, "rater_batch_records"), "p50"), Query(quantile(0.99, "rater_batch_records"), "p99"),
               Query(f"sum(rate(rater_batch_records_sum{{{W}}}[$__rate_interval]))"
                     f" / sum(rate(rater_batch_records_count{{{W}}}[$__rate_interval]))", "mean")), width=8),
        Panel("Unit commit duration (p50, p99)", "A unit's transaction from begin to commit. Seconds here: the"
              " broker is slow (disk, replication) or overloaded.",
              (Query(quantile(0.5, "rater_unit_commit_seconds"), "p50"),
               Query(quantile(0.99, "rater_unit_commit_seconds"), "p99")), unit="s", width=8),
        Panel("Unit commits and failures", "Units committed per second per worker, and failed units (a failed"
              " unit stops its worker, which restarts and retries from the last commit).",
              (Query(rate("rater_unit_commits_total", "instance"), "{{instance}} commits"),
               Query(f"sum by (instance) (increase(rater_unit_failures_total{{{W}}}[$__rate_interval]))",
                     "{{instance}} failures")), width=8),
    )),
    ("Restore and time", (
        Panel("Restore progress", "Share of the changelog each partition's current or last restore has read"
              " (1 = done; a restore with nothing to read shows 1). Computed as (read + 1) / (to read + 1).",
              (Query(f"(rater_restore_records{{{W}}} + 1) / (rater_restore_target_records{{{W}}} + 1)",
                     "{{instance}} p{{partition}}"),), unit="percentunit", width=8),
        Panel("Restore duration and state", "How long each partition's current or last restore took, and 1 while"
              " it restores.",
              (Query(f"rater_restore_seconds{{{W}}}", "{{instance}} p{{partition}} seconds"),
               Query(f"rater_restoring{{{W}}}", "{{instance}} p{{partition}} restoring")), width=8),
        Panel("Tick age per partition", "The broker's clock − each partition's last applied tick (or the moment"
              " it became ready, if it has not ticked since). Ticks carry time forward (recharge timeouts, month"
              " ends): more than a few seconds means ticks stalled, or are off (RATER_TICK_INTERVAL=0).",
              (Query(f"max by (partition) (rater_tick_age_seconds{{{W}}})", "p{{partition}}"),), unit="s", width=8),
        Panel("Broker clock offset", "The broker's clock − each worker host's, as measured by its ticks. The"
              " rater stamps records with the broker's clock; a large offset is a host clock to fix.",
              (Query(f"rater_broker_clock_offset_seconds{{{W}}}", "{{instance}}"),), unit="s", width=24),
    )),
    ("Notifier", (
        Panel("Notifiers up", "Notifier processes (rater notify) that answer Prometheus's scrape, of those it is"
              " told to scrape (job rater-notify). None up: no e-mail or webhook goes out (the events wait on"
              " their topics, nothing is lost).",
              (Query(f"sum(up{{{N}}})", "up"), Query(f"count(up{{{N}}})", "notifiers")), kind="stat", width=6),
        Panel("Notifier deliveries by kind, channel and outcome", "Delivery attempts per second: delivered,"
              " duplicate (remembered, not sent again), retry (a later attempt scheduled on a retry topic),"
              " failed (given up: notification-failures). Retries without deliveries on a channel: its server is"
              " down (RaterNotifyChannelDown).",
              (Query(rate("rater_notify_deliveries_total", "kind, channel, outcome", on=N),
                     "{{kind}} {{channel}} {{outcome}}"),), unit="ops", width=18),
        Panel("Notifier retries by level", "Retries scheduled per second, by channel and back-off level (retry"
              " topic notify-retry-N; RATER_NOTIFY_RETRY_DELAYS). Higher levels filling: an endpoint down for a"
              " long time.",
              (Query(rate("rater_notify_retries_total", "channel, level", on=N), "{{channel}} level {{level}}"),),
              unit="ops", width=8),
        Panel("Notifier failures", "Deliveries given up per interval, by channel and reason: permanent (SMTP 5xx,"
              " webhook 4xx), refused (a webhook URL the notifier will not call), exhausted (every attempt"
              " transient). notification-failures has each one with its last error.",
              (Query(f"sum by (channel, reason) (increase(rater_notify_failures_total{{{N}}}[$__rate_interval]))",
                     "{{channel}} {{reason}}"),), width=8),
        Panel("Notifier delivery latency (p50, p99)", "From an event's occurred_at to its delivery, by channel:"
              " the rater's own delay, the notifier's lag and any retries' back-off.",
              (Query(quantile(0.5, "rater_notify_delivery_latency_seconds", "channel", on=N), "p50 {{channel}}"),
               Query(quantile(0.99, "rater_notify_delivery_latency_seconds", "channel", on=N), "p99 {{channel}}")),
              unit="s", width=8),
        Panel("Notifier consumer lag", "Records of the notifier's partitions not committed yet, by topic. On"
              " notifications, low-balance and account-commands it comes back to 0 between bursts; stuck above 0,"
              " the notifier is stalled (RaterNotifyLagStuck). On notify-retry-N these are retries waiting for"
              " their due time.",
              (Query(f"sum by (topic) (rater_notify_consumer_lag{{{N}}})", "{{topic}}"),), width=8),
        Panel("Notifier skipped events and contacts", "Events not delivered, by reason (other_type: not an"
              " e-mailed kind; too_old; no_contacts; invalid), and tenant_upserted commands applied to the"
              " contacts table, per second.",
              (Query(rate("rater_notify_skipped_total", "reason", on=N), "skipped {{reason}}"),
               Query(rate("rater_notify_contacts_updates_total", "action", on=N), "contacts {{action}}")),
              unit="ops", width=8),
        Panel("Notifier deliveries in flight", "Delivery attempts under way, per notifier (at most"
              " RATER_NOTIFY_CONCURRENCY per agent; each lasts at most RATER_NOTIFY_TIMEOUT).",
              (Query(f"rater_notify_in_flight{{{N}}}", "{{instance}}"),), width=8),
    )),
)


def _target(query: Query, ref: str) -> dict[str, Any]:
    target: dict[str, Any] = {"datasource": DATASOURCE, "expr": query.expr, "legendFormat": query.legend,
                              "refId": ref}
    if query.instant:
        target.update(instant=True, range=False)
    target["format"] = "table" if query.table else "time_series"
    return target


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit, **panel.extra}
    options: dict[str, Any] = {}
    if panel.kind == "timeseries":
        options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
    elif panel.kind == "stat":
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "textMode": "value_and_name", "colorMode": "none", "graphMode": "none"}
    transformations = [{"id": "organize", "options": {"excludeByName": dict.fromkeys(panel.hide, True)}}] if (
        panel.hide) else []
    return {
        "id": panel_id, "type": panel.kind, "title": panel.title, "description": panel.description,
        "datasource": DATASOURCE, "gridPos": {"h": HEIGHT, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []}, "options": options, "transformations": transformations,
        "targets": [_target(q, chr(ord("A") + n)) for n, q in enumerate(panel.queries)],
    }


def _panels() -> Iterator[dict[str, Any]]:
    panel_id, y = 1, 0
    for title, panels in ROWS:
        yield {"id": panel_id, "type": "row", "title": title, "collapsed": False, "panels": [],
               "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y}}
        panel_id, y, x = panel_id + 1, y + 1, 0
        for panel in panels:
            if x + panel.width > WIDTH:
                x, y = 0, y + HEIGHT
            yield _panel(panel, panel_id, x, y)
            panel_id, x = panel_id + 1, x + panel.width
        y += HEIGHT


def _instances(name: str, job: str) -> dict[str, Any]:
    """A template variable ``name``: the instances of the scrape job ``job`` (all by default)."""
    return {
        "name": name, "label": name, "type": "query", "datasource": DATASOURCE,
        "definition": f"label_values(up{{{job}}}, instance)",
        "query": {"query": f"label_values(up{{{job}}}, instance)", "refId": name},
        "refresh": 2, "multi": True, "includeAll": True, "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def dashboard() -> dict[str, Any]:
    """The dashboard's JSON model."""
    worker = _instances("worker", JOB)
    notifier = _instances("notifier", NOTIFY_JOB)
    return {
        "uid": "rater", "title": "rater", "description": "The rater's workers: throughput, latency, lag, money,"
        " recharges, units, restores and ticks; and its notifier's deliveries (generated by"
        " tools/gen_dashboard.py; docs/operating.md, docs/notifications.md).",
        "tags": ["rater", "billing", "kafka"], "timezone": "utc", "editable": True, "graphTooltip": 1,
        "schemaVersion": 39, "version": 1, "refresh": "30s", "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": [worker, notifier]}, "annotations": {"list": []}, "links": [],
        "panels": list(_panels()),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(render())
    print(f"wrote {TARGET.relative_to(Path.cwd()) if TARGET.is_relative_to(Path.cwd()) else TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
