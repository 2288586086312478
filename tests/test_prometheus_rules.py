"""Issue 12: the alert rules and the Prometheus configuration pass Prometheus's own
checks (``promtool check rules``, ``promtool check config``), every alert's unit tests
pass (``promtool test rules``: deploy/prometheus/rules.test.yml), every alert has one test
that fires it and one that shows it quiet, and every alert is explained in
docs/operating.md.

Under CI (``CI=true``) a missing promtool fails; elsewhere these tests skip."""

from __future__ import annotations

import subprocess
from collections import defaultdict

import yaml

from tests.prometheus_support import (
    JOB,
    NOTIFY_JOB,
    OPERATING,
    PROMETHEUS_CONFIG,
    RULES,
    RULES_TEST,
    alert_rules,
    selectors,
    tool,
)


def _promtool(*args: str) -> str:
    done = subprocess.run([tool("promtool"), *args], capture_output=True, text=True, check=False, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_promtool_check_rules_is_clean() -> None:
    output = _promtool("check", "rules", str(RULES))
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_promtool_test_rules_passes() -> None:
    output = _promtool("test", "rules", str(RULES_TEST))
    assert "SUCCESS" in output


def test_promtool_check_config_is_clean() -> None:
    output = _promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert "is valid prometheus config file syntax" in output
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == ["rules.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"rater", "rater-notify"}  # the notifier apart: job="rater" is the workers only
    assert jobs["rater"]["static_configs"][0]["targets"] == ["rater-worker-1:6066", "rater-worker-2:6066"]
    assert jobs["rater-notify"]["static_configs"][0]["targets"] == ["notifier:6068"]


def test_every_alert_has_a_test_that_fires_it_and_one_that_keeps_it_quiet() -> None:
    fired: dict[str, int] = defaultdict(int)
    quiet: dict[str, int] = defaultdict(int)
    for test in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            (fired if case["exp_alerts"] else quiet)[case["alertname"]] += 1
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for name in names:
        assert fired[name], f"no test fires {name}"
        assert quiet[name], f"no test shows {name} quiet"
    assert set(fired) | set(quiet) <= set(names)


def test_every_alert_has_a_severity_a_summary_and_a_runbook_in_the_operating_guide() -> None:
    guide = OPERATING.read_text()
    headings = {line.lstrip("#").strip().lower() for line in guide.splitlines() if line.startswith("#")}
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["runbook"] == f"docs/operating.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in headings, f"docs/operating.md has no section {rule['alert']}"


def test_every_rule_selects_its_group_s_job() -> None:
    """Every metric a rule of group ``rater`` reads carries ``job="rater"``, and of group
    ``rater-notify`` ``job="rater-notify"``: ``up`` and ``process_*`` exist for every
    target Prometheus scrapes, and the workers scraped under a second job too would double
    every sum. A notifier rule reads only ``rater_notify_*`` (and ``up``)."""
    groups = {group["name"]: group["rules"] for group in yaml.safe_load(RULES.read_text())["groups"]}
    assert set(groups) == {JOB, NOTIFY_JOB}
    for job, rules in groups.items():
        for rule in rules:
            found = selectors(rule["expr"])
            assert found, rule["alert"]
            for selector in found:
                assert f'job="{job}"' in selector, f"{rule['alert']}: {selector}"
                assert (job == NOTIFY_JOB) == selector.startswith("rater_notify_") or selector.startswith("up{"), (
                    f"{rule['alert']}: {selector}")
