"""Issue 12: the Grafana dashboard is code (tools/gen_dashboard.py); the committed JSON
is what the script makes, and its structure is what Grafana and the provisioning need:
every panel queries the provisioned Prometheus datasource, every query filters on the
``worker`` variable, ids are unique, panels fit the grid and do not overlap.

The queries themselves run against a real Prometheus in tests/test_prometheus.py."""

from __future__ import annotations

import importlib.util
import re
import sys
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.prometheus_support import DASHBOARD, ROOT, dashboard, panel_queries, panels

TOOL = ROOT / "tools" / "gen_dashboard.py"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
WORKER = 'instance=~"$worker"'


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_dashboard", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_dashboard"] = module
    spec.loader.exec_module(module)
    return module


def test_the_committed_dashboard_is_what_the_generator_makes() -> None:
    assert DASHBOARD.read_text() == _generator().render(), (
        "deploy/grafana/dashboards/rater.json is stale: run .venv/bin/python tools/gen_dashboard.py")


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    return dashboard()


def test_every_panel_queries_the_provisioned_prometheus(model: dict[str, Any]) -> None:
    found = list(panels(model))
    assert len(found) >= 20
    for panel in found:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), f"{panel['title']} {target['refId']} has no expr"
        assert panel["title"], panel
        assert panel["description"], panel["title"]
    titles = [p["title"] for p in found]
    assert len(titles) == len(set(titles))


def test_ids_are_unique_and_panels_fit_the_grid_without_overlapping(model: dict[str, Any]) -> None:
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in model["panels"]:
        box = panel["gridPos"]
        assert box["x"] >= 0
        assert box["x"] + box["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(box["x"], box["x"] + box["w"]) for y in range(box["y"], box["y"] + box["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


METRIC = re.compile(r"\b((?:rater|process)_[a-z_]+|up)\b(\{[^}]*\})?")
JOB = 'job="rater"'
NOTIFY_JOB = 'job="rater-notify"'
NOTIFIER = 'instance=~"$notifier"'


def test_every_query_filters_every_selector_on_the_worker_or_the_notifier_variable(model: dict[str, Any]) -> None:
    """The workers' panels select job rater and $worker; the notifier's (rater_notify_*)
    job rater-notify and $notifier — never a mix in one query."""
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert set(variables) == {"worker", "notifier"}
    for name, job in (("worker", JOB), ("notifier", NOTIFY_JOB)):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        # up: a process that died stays in the list (its own metrics go stale after 5 minutes)
        assert variable["query"]["query"] == f"label_values(up{{{job}}}, instance)"
        assert variable["multi"]
        assert variable["includeAll"]
    notifier_queries = 0
    for where, expr in panel_queries(model):
        found = METRIC.findall(expr)
        assert found, f"{where}: no rater or process metric in {expr}"
        notifier = "rater_notify_" in expr or NOTIFY_JOB in expr
        notifier_queries += notifier
        job, variable = (NOTIFY_JOB, NOTIFIER) if notifier else (JOB, WORKER)
        for name, matchers in found:
            assert variable in matchers, f"{where}: {name} is not filtered on {variable} in {expr}"
            assert job in matchers, f"{where}: {name} is not filtered on the job in {expr}"
            assert notifier or not name.startswith("rater_notify_"), f"{where}: {name} in {expr}"
    assert notifier_queries >= 8


def test_the_panels_the_operators_asked_for_are_there(model: dict[str, Any]) -> None:
    exprs = "\n".join(expr for _, expr in panel_queries(model))
    for wanted in ("rater_cdrs_rated_total", "rater_cdr_end_to_commit_seconds_bucket",
                   "rater_record_to_commit_seconds_bucket", "rater_consumer_lag_records", "rater_dead_letters_total",
                   "rater_charged_minor_units_total", "rater_debited_minor_units_total",
                   "rater_overage_minor_units_total", "rater_uncollected_minor_units_total",
                   "rater_recharge_requests_total", "rater_recharge_outcomes_total",
                   "rater_balance_depleted_events_total", "rater_low_balance_events_total", "rater_restore_records",
                   "rater_ready", "rater_batch_records_bucket", "rater_unit_commit_seconds_bucket",
                   "rater_unit_failures_total", "rater_tick_age_seconds", "rater_broker_clock_offset_seconds"):
        assert wanted in exprs, wanted
    assert "histogram_quantile(0.5" in exprs
    assert "histogram_quantile(0.99" in exprs
    for wanted in ("rater_notify_deliveries_total", "rater_notify_retries_total", "rater_notify_failures_total",
                   "rater_notify_delivery_latency_seconds_bucket", "rater_notify_consumer_lag"):
        assert wanted in exprs, wanted
    assert "histogram_quantile(0.99, sum by (le, channel) (rate(rater_notify_delivery_latency_seconds_bucket" in exprs


def test_the_provisioning_points_grafana_at_prometheus_and_the_dashboard() -> None:
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    [source] = sources["datasources"]
    assert (source["uid"], source["type"], source["url"]) == ("prometheus", "prometheus", "http://prometheus:9090")
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "rater.yml").read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert dashboard()["uid"] == "rater"


def test_workers_ready_counts_the_targets_not_the_workers_still_exporting(model: dict[str, Any]) -> None:
    """count(rater_info) dropped a dead worker after 5 minutes of staleness ("2 of 2"
    became "1 of 1"): the targets (up) stay counted, a dead one at 0."""
    [panel] = [p for p in panels(model) if p["title"] == "Workers ready"]
    exprs = [t["expr"] for t in panel["targets"]]
    assert f"count(up{{{JOB},{WORKER}}})" in exprs
    assert f"sum(up{{{JOB},{WORKER}}})" in exprs
    assert f"sum(rater_ready{{{JOB},{WORKER}}})" in exprs
    assert not [e for e in exprs if "rater_info" in e]


def test_restore_progress_is_done_when_there_was_nothing_to_restore(model: dict[str, Any]) -> None:
    """1 = done, also for a restore whose target was 0 (records 0 of 0)."""
    [panel] = [p for p in panels(model) if p["title"] == "Restore progress"]
    [target] = panel["targets"]
    progress = re.sub(r"rater_restore_target_records\{[^}]*\}", "{target}",
                      re.sub(r"rater_restore_records\{[^}]*\}", "{records}", target["expr"]))
    for records, goal, expected in ((0, 0, 1.0), (500, 500, 1.0), (0, 999, 0.001)):
        assert eval(progress.format(records=records, target=goal)) == pytest.approx(expected)
