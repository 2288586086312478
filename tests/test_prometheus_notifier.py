"""Issue 14: a real Prometheus scrapes a real ``rater notify`` (job ``rater-notify``, the
real broker) while it delivers to a real SMTP server and a real webhook receiver, under
traffic that moves every notifier metric: e-mails and webhooks of the four kinds
delivered, a webhook answering 500 (retried, then given up: ``exhausted``), a webhook to
a private address (``refused``), events skipped (another type, a tenant without
contacts), contacts set and cleared.

Then, as tests/test_prometheus.py does for the workers: every query of the dashboard's
Notifier row, with Grafana's variables substituted as Grafana would, answers without
error and with series; the counters the traffic moved show an increase over the
dashboard's range (they exist at 0 before it: the first events count); the delivery
latency quantiles are numbers; every selector of the ``rater-notify`` alert group returns
series and Prometheus evaluates the group cleanly; every ``rater_notify_*`` metric the
notifier exposes is on the dashboard and in docs/notifications.md.
"""

from __future__ import annotations

import math
import re
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.notify_support import MailServer, NotifierProc, Receiver, notification, upsert, wait_for
from tests.prometheus_support import (
    NOTIFY_JOB,
    RANGE_S,
    ROOT,
    SCRAPE_S,
    Prometheus,
    alert_rules,
    alerts_reading_nothing,
    dashboard,
    grafana_expr,
    is_notifier_query,
    panel_queries,
    rules_not_evaluated,
    tool,
    until,
    without_increase,
)
from tests.support import create_topics, send_events

pytestmark = pytest.mark.kafka

RATE_WINDOW = f"[{max(2 * SCRAPE_S, 4 * SCRAPE_S)}s]"  # $__rate_interval, as grafana_expr makes it
NOTIFICATIONS_GUIDE = ROOT / "docs" / "notifications.md"


@dataclass
class Monitored:
    notifier: NotifierProc
    prometheus: Prometheus
    mail: MailServer
    hooks: Receiver

    @property
    def instances(self) -> list[str]:
        return [f"127.0.0.1:{self.notifier.web_port}"]

    def query(self, expr: str) -> list[dict[str, object]]:
        return self.prometheus.query(expr)


@pytest.fixture(scope="module")
def monitored(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    tool("prometheus")  # fails under CI, skips elsewhere, before anything starts
    workdir = tmp_path_factory.mktemp("prometheus-notifier")
    prefix = f"promn{uuid.uuid4().hex[:8]}."
    create_topics(kafka_bootstrap, prefix)
    mail, hooks = MailServer().start(), Receiver().start()
    hooks.answers["/broken"] = (0.0, 500)
    notifier = prometheus = None
    try:
        notifier = NotifierProc(kafka_bootstrap, prefix, workdir / "notifier", mail.port,
                                extra_env={"RATER_NOTIFY_MAX_ATTEMPTS": "2"}).start()
        prometheus = Prometheus(workdir / "prometheus", [], scrape_s=SCRAPE_S,
                                notify_targets=[f"127.0.0.1:{notifier.web_port}"]).start()
        m = Monitored(notifier, prometheus, mail, hooks)
        _until("the notifier not scraped before the traffic", lambda: _not_scraped(m), m)
        _traffic(m)  # after a first scrape: increase() must see the first deliveries
        yield m
    finally:
        if prometheus is not None:
            prometheus.stop()
        if notifier is not None:
            notifier.stop()
        mail.stop()
        hooks.stop()


def _traffic(m: Monitored) -> None:
    """``ok``: two addresses and a webhook, every kind delivered; ``broken``: its webhook
    answers 500 (a retry, then given up); ``private``: a webhook to 10.x (refused);
    ``gone``: contacts set then cleared (skipped: no contacts); a ``pool_exhausted``
    (skipped: another type)."""
    n = m.notifier
    run = uuid.uuid4().hex[:6]
    ok, broken, private, gone = (f"{name}-{run}" for name in ("ok", "broken", "private", "gone"))
    send_events(n.bootstrap, n.prefix, [
        ("account-commands", upsert(ok, {"emails": ["o1@ok.test", "o2@ok.test"], "webhook_url": m.hooks.url("/ok"),
                                         "locale": "it"})),
        ("account-commands", upsert(broken, {"emails": ["b@broken.test"], "webhook_url": m.hooks.url("/broken")})),
        ("account-commands", upsert(private, {"webhook_url": "https://10.1.2.3/hook"})),
        ("account-commands", upsert(gone, {"emails": ["g@gone.test"]})),
        ("account-commands", upsert(gone, None, 2)),
    ])
    wait_for(lambda: n.metric("rater_notify_contacts_updates_total") >= 5, 60, "contacts applied", n.check_alive)
    kinds = ("recharge_succeeded", "recharge_failed", "balance_depleted", "low_balance")
    events = [notification(kind, tenant, 1) for kind in kinds for tenant in (ok, broken)]
    events += [notification("balance_depleted", private, 1), notification("low_balance", gone, 1),
               notification("pool_exhausted", ok, 1)]
    send_events(n.bootstrap, n.prefix, [("low-balance" if e["type"] == "low_balance" else "notifications", e)
                                        for e in events])
    wait_for(lambda: n.metric("rater_notify_failures_total", reason="exhausted") >= 4
             and n.metric("rater_notify_failures_total", reason="refused") >= 1
             and n.metric("rater_notify_deliveries_total", outcome="delivered") >= 4 * 3 + 4, 60,
             "deliveries, retries and failures", n.check_alive)


# -- the checks --------------------------------------------------------------------------------------


def _until(what: str, check: Callable[[], list[str]], m: Monitored, timeout_s: float = 30) -> None:
    def alive() -> None:
        m.prometheus.check_alive()
        m.notifier.check_alive()
    until(what, check, alive, timeout_s)


def _not_scraped(m: Monitored) -> list[str]:
    problems = [f"{url}: {state}" for url, state in m.prometheus.targets_up().items() if state != "up"]
    seen = {s["metric"]["instance"] for s in m.query(f'rater_notify_in_flight{{job="{NOTIFY_JOB}"}}')}  # type: ignore[index]
    lag = m.query(f'rater_notify_consumer_lag{{job="{NOTIFY_JOB}"}}')
    return problems + [f"{i}: not scraped yet" for i in m.instances if i not in seen] + (
        [] if lag else ["no consumer lag measured yet"])


def _notifier_queries(m: Monitored) -> list[tuple[str, str]]:
    found = [(where, grafana_expr(expr, [], SCRAPE_S, RANGE_S, notifiers=m.instances))
             for where, expr in panel_queries(dashboard()) if is_notifier_query(expr)]
    assert len(found) >= 10, found
    return found


def test_prometheus_scrapes_the_notifier_under_its_own_job(monitored: Monitored) -> None:
    _until("the notifier not up", lambda: _not_scraped(monitored), monitored)
    values = monitored.prometheus.api("label/instance/values", **{"match[]": f'up{{job="{NOTIFY_JOB}"}}'})
    assert values == monitored.instances  # the dashboard's notifier variable
    assert monitored.query('up{job="rater"}') == []  # no worker here: the notifier is never job rater


def test_every_notifier_panel_query_answers_with_series(monitored: Monitored) -> None:
    queries = _notifier_queries(monitored)

    def empty() -> list[str]:  # an error raises at once: it never fixes itself
        return [f"{where}: {expr}" for where, expr in queries if not monitored.query(expr)]
    _until("notifier panel queries with no series", empty, monitored)


MOVED = ('rater_notify_deliveries_total{outcome="delivered",channel="email"}',
         'rater_notify_deliveries_total{outcome="delivered",channel="webhook"}',
         'rater_notify_deliveries_total{outcome="retry"}', 'rater_notify_deliveries_total{outcome="failed"}',
         'rater_notify_retries_total{level="1"}', 'rater_notify_failures_total{reason="exhausted"}',
         'rater_notify_failures_total{reason="refused"}', 'rater_notify_skipped_total{reason="no_contacts"}',
         'rater_notify_skipped_total{reason="other_type"}', 'rater_notify_contacts_updates_total{action="set"}',
         'rater_notify_contacts_updates_total{action="cleared"}',
         'rater_notify_delivery_latency_seconds_count{channel="email"}')


def test_the_traffic_shows_in_increase_from_the_first_delivery(monitored: Monitored) -> None:
    """Prometheus scraped the notifier before the traffic, and every labelled series was
    there at 0: each counter the traffic moved shows an increase over the range."""
    job = f'{{job="{NOTIFY_JOB}",'
    exprs = [f"sum(increase({counter.replace('{', job, 1)}[{RANGE_S}s]))" for counter in MOVED]
    _until("counters the traffic moved show no increase", lambda: without_increase(monitored.query, exprs),
           monitored)


def test_the_latency_panel_gives_numbers_per_channel(monitored: Monitored) -> None:
    """The latency panel's quantiles over the dashboard's range (not the last few
    seconds, where nothing was delivered any more): a number of seconds per channel."""
    [(_, p50), (_, p99)] = [(where, expr) for where, expr in _notifier_queries(monitored) if "latency" in where]
    for expr in (p50, p99):
        assert RATE_WINDOW in expr
        over_range = expr.replace(RATE_WINDOW, f"[{RANGE_S}s]")

        def missing(over_range: str = over_range) -> list[str]:
            got = {s["metric"].get("channel"): float(s["value"][1])  # type: ignore[union-attr,index]
                   for s in monitored.query(over_range)}
            return [f"{over_range}: {got}"] if set(got) != {"email", "webhook"} or not all(
                math.isfinite(v) and 0 < v < 3600 for v in got.values()) else []
        _until("latency quantiles that are not numbers", missing, monitored)


def test_every_notifier_alert_expression_parses_and_reads_metrics_that_exist(monitored: Monitored) -> None:
    rules = alert_rules("rater-notify")
    assert len(rules) >= 4

    _until("alert expressions reading nothing", lambda: alerts_reading_nothing(monitored.query, rules), monitored)

    def unhealthy() -> list[str]:
        groups = {g["name"]: g for g in monitored.prometheus.api("rules")["groups"]}
        if "rater-notify" not in groups:
            return ["group rater-notify not loaded"]
        return rules_not_evaluated({r["name"]: r for r in groups["rater-notify"]["rules"]}, rules)
    _until("alert rules not evaluated cleanly", unhealthy, monitored)


def _exposed(notifier: NotifierProc) -> set[str]:
    with urllib.request.urlopen(notifier.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    families = list(text_string_to_metric_families(text))
    # prometheus_client's *_created gauges: each counter's and histogram's start time, not a metric of its own
    created = {f"{f.name}_created" for f in families if f.type in ("counter", "histogram")}
    return {family.name + ("_total" if family.type == "counter" else "")
            for family in families if family.name.startswith("rater_notify_") and family.name not in created}


def test_every_metric_the_notifier_exposes_is_on_the_dashboard_and_in_the_notifications_guide(
        monitored: Monitored) -> None:
    exposed = _exposed(monitored.notifier)
    assert len(exposed) >= 8, exposed
    exprs = "\n".join(expr for _, expr in _notifier_queries(monitored))
    guide = NOTIFICATIONS_GUIDE.read_text()
    for name in sorted(exposed):
        pattern = re.compile(rf"\b{name}(_bucket|_sum|_count)?\b")
        assert pattern.search(exprs), f"{name} is not on the dashboard"
        assert f"`{name}`" in guide, f"{name} is not in docs/notifications.md"


def test_the_notifier_ran_without_an_error_line(monitored: Monitored) -> None:
    assert monitored.notifier.error_lines() == []
