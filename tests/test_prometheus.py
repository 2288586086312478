"""Issue 12: a real Prometheus scrapes two real workers (one consumer group, the real
broker) under traffic that makes every kind of metric move — rated calls, a prepaid
tenant that runs out of money (low balance, depleted, uncollected), an auto-recharge and
its succeeded result, a post-paid tenant's overage, dead letters — and ticks on (the
workers' own wall-clock ticker: tick age and the broker clock offset exist).

Then every query of the Grafana dashboard, with Grafana's variables substituted as
Grafana would, runs through Prometheus's HTTP API and must answer without error and with
at least one series. The alert rules are checked differently, because a healthy system
keeps an alert's expression *empty* (its threshold filters everything out): each
expression must be accepted by the API, each metric selector in it (name and label
matchers, e.g. ``rater_recharge_outcomes_total{outcome="failed"}``) must return series —
so no rule watches a metric or a label value that does not exist — and Prometheus's own
evaluation of every rule must be healthy. Finally every ``rater_*`` metric the workers
expose appears in the dashboard and in docs/operating.md.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.prometheus_support import (
    OPERATING,
    RANGE_S,
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
from tests.support import Out, Worker, cdr, collect, create_topics, event, produce, send_events

pytestmark = pytest.mark.kafka

NEW_YORK = "+12125550123"


def _text(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Monitored:
    workers: list[Worker]
    prometheus: Prometheus

    @property
    def instances(self) -> list[str]:
        return [f"127.0.0.1:{w.web_port}" for w in self.workers]


@pytest.fixture(scope="module")
def monitored(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    tool("prometheus")  # fails under CI, skips elsewhere, before anything starts
    workdir = tmp_path_factory.mktemp("prometheus")
    prefix = f"prom{uuid.uuid4().hex[:8]}."
    create_topics(kafka_bootstrap, prefix)
    ticking = {"RATER_TICK_INTERVAL": "1"}  # the wall clock: the traffic below is dated from now
    workers = [Worker(kafka_bootstrap, prefix, workdir / f"worker-{n}", extra_env=ticking).start() for n in (1, 2)]
    prometheus = None
    try:
        prometheus = Prometheus(workdir / "prometheus", [f"127.0.0.1:{w.web_port}" for w in workers],
                                scrape_s=SCRAPE_S).start()
        monitored = Monitored(workers, prometheus)
        _until("targets not scraped before the traffic", lambda: _not_scraped(monitored), monitored)
        _traffic(monitored)  # after a first scrape: increase() must see the first events
        yield monitored
    finally:
        if prometheus is not None:
            prometheus.stop()
        for worker in workers:
            worker.stop()


# -- the traffic ---------------------------------------------------------------------------------


def _traffic(m: Monitored) -> None:
    """Tenants on both workers' partitions: ``ar`` drops below its auto-recharge trigger
    (low balance, a recharge request, then a succeeded result), ``broke`` runs out
    (depleted, uncollected), ``post`` is post-paid (overage); two hostile records."""
    worker = m.workers[0]
    bootstrap, prefix = worker.bootstrap, worker.prefix
    now = datetime.now(UTC).replace(microsecond=0)
    day_ago = _text(now - timedelta(days=1))
    run = uuid.uuid4().hex[:6]
    tenants = {name: f"{name}-{run}" for name in ("ar", "broke", "post")}

    def opened(tenant: str, funds: str, billing: str = "prepaid_credits") -> list[tuple[str, dict[str, Any]]]:
        return [
            ("account-commands", event("tenant_upserted", tenant, f"{tenant}-e1", at=day_ago,
                                       command_id=f"{tenant}-c1", country="US", currency="USD",
                                       billing_model=billing)),
            ("account-commands", event("licenses_assigned", tenant, f"{tenant}-e2", at=day_ago,
                                       command_id=f"{tenant}-c2", user_id="alice", usage_location="US",
                                       capabilities=["PAYG"])),
            ("account-commands", event("funds_added", tenant, f"{tenant}-e3", at=day_ago, command_id=f"{tenant}-c3",
                                       amount=funds, currency="USD", purchased_at=day_ago)),
        ]

    ar, broke, post = tenants["ar"], tenants["broke"], tenants["post"]
    commands = [*opened(ar, "6.00"), *opened(broke, "0.20"), *opened(post, "1.00", "postpaid_overage"),
                ("account-commands", event("auto_recharge_configured", ar, f"{ar}-e4", at=day_ago,
                                           command_id=f"{ar}-c4", enabled=True, trigger_amount="5.00",
                                           recharge_amount="20.00"))]
    send_events(bootstrap, prefix, commands)
    last = {t: [c for _, c in commands if c["tenant_id"] == t][-1]["command_id"] for t in tenants.values()}
    _wait(m, lambda outs: all(_caused(outs, cause) for cause in last.values()))

    def call(tenant: str, name: str, seconds: int, ago_s: int) -> tuple[str, dict[str, Any]]:
        start = now - timedelta(seconds=ago_s)
        return "cdrs", cdr(tenant, f"{tenant}-{name}", seconds, destination=NEW_YORK, start=_text(start),
                           end=_text(start + timedelta(seconds=seconds)))

    calls = [call(ar, "long", 7200, 4 * 3600), call(broke, "a", 600, 3 * 3600), call(broke, "b", 1200, 2 * 3600),
             call(post, "big", 20_000, 7 * 3600)]
    send_events(bootstrap, prefix, calls)
    asyncio.run(produce(bootstrap, prefix, [("cdrs", broke.encode(), b"{broken"),
                                            ("account-commands", post.encode(), b"[]")]))
    outs = _wait(m, lambda outs: sum(o.topic == "rated-cdrs" for o in outs) >= len(calls)
                 and sum(o.topic == "dead-letters" for o in outs) >= 2
                 and any(o.event["type"] == "recharge_request" for o in outs))
    [request] = [o.event for o in outs if o.event["type"] == "recharge_request"]
    send_events(bootstrap, prefix, [("recharge-results", event(
        "recharge_result", ar, f"{ar}-e5", at=_text(now), request_id=request["request_id"], status="succeeded",
        amount="20.00", currency="USD", reason=None, processed_at=_text(now)))])
    wanted = {"recharge_succeeded", "low_balance", "balance_depleted", "dead_letter"}  # on four topics
    outs = _wait(m, lambda outs: wanted <= {o.event["type"] for o in outs})
    kinds = {o.event["type"] for o in outs}
    assert {"low_balance", "balance_depleted", "dead_letter"} <= kinds, kinds


def _caused(outs: list[Out], cause: str) -> bool:
    return any(o.topic == "balances" and o.event.get("caused_by") == cause for o in outs)


def _wait(m: Monitored, until: Callable[[list[Out]], bool]) -> list[Out]:
    m.prometheus.check_alive()
    return collect(m.workers[0].bootstrap, m.workers[0].prefix, until, m.workers[0], timeout_s=60)


# -- the checks --------------------------------------------------------------------------------------


def _until(what: str, check: Callable[[], list[str]], m: Monitored, timeout_s: float = 30) -> None:
    until(what, check, m.prometheus.check_alive, timeout_s)


def _not_scraped(m: Monitored) -> list[str]:
    health = m.prometheus.targets_up()
    problems = [f"{url}: {state}" for url, state in health.items() if state != "up"]
    scraped = {sample["metric"]["instance"] for sample in m.prometheus.query('rater_info{job="rater"}')}
    return problems + [f"{instance}: no rater_info yet" for instance in m.instances if instance not in scraped]


def test_prometheus_scrapes_both_workers(monitored: Monitored) -> None:
    _until("targets not up", lambda: _not_scraped(monitored), monitored)
    values = monitored.prometheus.api("label/instance/values", **{"match[]": 'up{job="rater"}'})
    assert sorted(values) == sorted(monitored.instances)  # the dashboard's worker variable


def test_every_dashboard_query_answers_with_series(monitored: Monitored) -> None:
    queries = [(where, grafana_expr(expr, monitored.instances, SCRAPE_S, RANGE_S))
               for where, expr in panel_queries(dashboard())
               if not is_notifier_query(expr)]  # the Notifier row: tests/test_prometheus_notifier.py
    assert len(queries) >= 30

    per_worker = [(where, expr) for where, expr in queries if "by (instance)" in expr or "{{instance}}" in expr]
    assert per_worker

    def empty() -> list[str]:  # an error raises at once: it never fixes itself
        problems = [f"{where}: {expr}" for where, expr in queries if not monitored.prometheus.query(expr)]
        for where, expr in per_worker:  # a failed scrape makes a worker's series stale for a moment
            seen = {sample["metric"].get("instance") for sample in monitored.prometheus.query(expr)}
            problems += [f"{where}: no series of {i}" for i in monitored.instances if i not in seen]
        return problems
    _until("dashboard queries with no series", empty, monitored)


MOVED = ("rater_cdrs_rated_total", "rater_dead_letters_total", "rater_charged_minor_units_total",
         "rater_debited_minor_units_total", "rater_overage_minor_units_total", "rater_uncollected_minor_units_total",
         "rater_recharge_requests_total", 'rater_recharge_outcomes_total{outcome="succeeded"}',
         "rater_low_balance_events_total", "rater_balance_depleted_events_total")


def test_the_traffic_shows_in_increase_from_its_first_event(monitored: Monitored) -> None:
    """Prometheus scraped the workers before the traffic: every counter it moved shows
    an increase over the dashboard's range — the "Money in the time range" panel too."""
    money = [grafana_expr(expr, monitored.instances, SCRAPE_S, RANGE_S)
             for where, expr in panel_queries(dashboard()) if where.startswith("Money in the time range")]
    assert len(money) == 4

    exprs = [f"sum(increase({counter}[{RANGE_S}s]))" for counter in MOVED] + money
    _until("counters the traffic moved show no increase",
           lambda: without_increase(monitored.prometheus.query, exprs), monitored)


def test_every_alert_expression_parses_and_reads_metrics_that_exist(monitored: Monitored) -> None:
    rules = alert_rules("rater")  # group rater-notify: tests/test_prometheus_notifier.py

    _until("alert expressions reading nothing", lambda: alerts_reading_nothing(monitored.prometheus.query, rules),
           monitored)

    def unhealthy() -> list[str]:
        groups = monitored.prometheus.api("rules")["groups"]
        seen = {r["name"]: r for g in groups for r in g["rules"] if r["type"] == "alerting"}
        return rules_not_evaluated(seen, alert_rules())
    _until("alert rules not evaluated cleanly", unhealthy, monitored)


def _exposed(worker: Worker) -> set[str]:
    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return {family.name + ("_total" if family.type == "counter" else "")
            for family in text_string_to_metric_families(text) if family.name.startswith("rater_")}


def test_every_metric_the_workers_expose_is_on_the_dashboard_and_in_the_operating_guide(
        monitored: Monitored) -> None:
    exposed = set().union(*(_exposed(w) for w in monitored.workers))
    assert len(exposed) >= 25, exposed
    exprs = "\n".join(expr for _, expr in panel_queries(dashboard()))
    guide = OPERATING.read_text()
    for name in sorted(exposed):
        pattern = re.compile(rf"\b{name}(_bucket|_sum|_count)?\b")
        assert pattern.search(exprs), f"{name} is not on the dashboard"
        assert f"`{name}`" in guide, f"{name} is not in docs/operating.md"

