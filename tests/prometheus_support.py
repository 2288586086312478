"""Helpers for the tests of the monitoring material (issue 12): finding Prometheus's
tools, a real ``prometheus`` process on a free port, the Grafana dashboard's queries and
the alert rules' expressions.

CI installs Debian's ``prometheus`` package (``.ci/run``): there a missing ``promtool`` or
``prometheus`` FAILS the test that needs it; on a developer's machine it skips with the
reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from rater.localkafka import free_port, spawn, stop_process

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "rules.test.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "rater.json"
OPERATING = ROOT / "docs" / "operating.md"
JOB = "rater"
"""The scrape job of the workers (deploy/prometheus/prometheus.yml); the rules select it."""
NOTIFY_JOB = "rater-notify"
"""The scrape job of the notifiers (``rater notify``); the group ``rater-notify`` of the
rules and the dashboard's Notifier row select it."""
SCRAPE_S = 1
"""The tests' scrape interval."""
RANGE_S = 300
"""The dashboard's time range for ``$__range`` in the tests."""

Query = Callable[[str], list[dict[str, Any]]]
"""An instant query of a running Prometheus: its samples."""


def until(what: str, check: Callable[[], list[str]], alive: Callable[[], None], timeout_s: float = 30) -> None:
    """Poll ``check`` (the problems it finds) until it finds none, ``alive`` between
    rounds (raises when a process died); fail with the last problems."""
    deadline = time.monotonic() + timeout_s
    while problems := check():
        alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} after {timeout_s:.0f} s:\n" + "\n".join(problems))
        time.sleep(0.5)


def without_increase(query: Query, exprs: Sequence[str]) -> list[str]:
    """The expressions of which no series is above 0."""
    problems = []
    for expr in exprs:
        values = [float(sample["value"][1]) for sample in query(expr)]
        if not any(value > 0 for value in values):
            problems.append(f"{expr}: {values}")
    return problems


def rules_not_evaluated(seen: dict[str, dict[str, Any]], expected: list[dict[str, Any]]) -> list[str]:
    """The ``expected`` alert rules Prometheus has not loaded, and the loaded ones of
    ``seen`` (name → its /api/v1/rules entry) whose evaluation is not healthy."""
    problems = [f"{r['alert']}: not loaded" for r in expected if r["alert"] not in seen]
    problems += [f"{name}: {r['health']} {r.get('lastError', '')}" for name, r in seen.items() if r["health"] != "ok"]
    return problems


def alerts_reading_nothing(query: Query, rules: list[dict[str, Any]]) -> list[str]:
    """Each rule's selectors that have no series (an expression that does not parse raises)."""
    problems = []
    for rule in rules:
        query(rule["expr"])  # an error raises
        for selector in selectors(rule["expr"]):
            if not query(selector):
                problems.append(f"{rule['alert']}: {selector} has no series")
    return problems


def tool(name: str) -> str:
    """The path of Prometheus's ``name`` (prometheus, promtool): under CI its absence
    fails the test, elsewhere it skips it."""
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: .ci/run installs Debian's prometheus package")
        pytest.skip(f"{name} is not installed (apt-get install --no-install-recommends prometheus)")
    return found


# -- the dashboard's queries --------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that queries (not the rows), rows' collapsed children too."""
    for panel in model["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries(model: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title and refId, expression) of every target of every panel."""
    for panel in panels(model):
        for target in panel["targets"]:
            yield f'{panel["title"]} ({target["refId"]})', target["expr"]


def grafana_expr(expr: str, workers: list[str], scrape_s: int, range_s: int, notifiers: list[str] | None = None,
                 ) -> str:
    """``expr`` as Grafana sends it to Prometheus: ``$worker`` with every worker chosen
    (and ``$notifier`` with every notifier of ``notifiers``)
    (Grafana's multi-value form: the values regex-escaped, joined as ``(a|b)``);
    ``$__interval`` the step (here the scrape interval, the datasource's minimum);
    ``$__rate_interval`` = max(``$__interval`` + scrape interval, 4 × scrape interval), as
    Grafana defines it; ``$__range`` the time range."""
    def chosen(instances: list[str]) -> str:
        return "(" + "|".join(re.escape(i).replace("\\", "\\\\") for i in instances) + ")"
    rate_interval = max(scrape_s + scrape_s, 4 * scrape_s)
    out = (expr.replace("$__rate_interval", f"{rate_interval}s").replace("$__interval", f"{scrape_s}s")
           .replace("$__range", f"{range_s}s").replace("$worker", chosen(workers)))
    if notifiers is not None:
        out = out.replace("$notifier", chosen(notifiers))
    assert "$" not in out, f"a Grafana variable the test does not know in {expr}"
    return out


# -- the alert rules ----------------------------------------------------------------------


def alert_rules(group: str | None = None) -> list[dict[str, Any]]:
    """Every alerting rule of rules.yml (of its ``group``: ``rater``, ``rater-notify``)."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for g in groups if group in (None, g["name"]) for rule in g["rules"] if "alert" in rule]


def is_notifier_query(expr: str) -> bool:
    """Whether a dashboard query is of the Notifier row (job rater-notify, ``$notifier``)."""
    return "$notifier" in expr


SELECTOR = re.compile(r"\b((?:rater|process)_[a-z_]+|up)\b(\{[^}]*\})?")


def selectors(expr: str) -> list[str]:
    """The instant-vector selectors an expression reads (metric name and matchers)."""
    return sorted({name + (matchers or "") for name, matchers in SELECTOR.findall(expr)})


# -- a real Prometheus --------------------------------------------------------------------


class PrometheusError(AssertionError):
    """Prometheus refused a query (the message has its error)."""


@dataclass
class Prometheus:
    """A ``prometheus`` server in ``workdir`` scraping ``targets`` (host:port) every
    ``scrape_s`` seconds as job ``rater`` (and ``notify_targets`` as job ``rater-notify``),
    evaluating the repository's rules.yml."""

    workdir: Path
    targets: list[str]
    scrape_s: int = 1
    notify_targets: list[str] = field(default_factory=list)
    proc: Any = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "prometheus.log"

    def start(self) -> Prometheus:
        binary = tool("prometheus")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": f"{self.scrape_s}s", "evaluation_interval": f"{self.scrape_s}s",
                       "scrape_timeout": f"{self.scrape_s}s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                               for job, targets in ((JOB, self.targets), (NOTIFY_JOB, self.notify_targets))
                               if targets],
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.proc = spawn([binary, f"--config.file={self.workdir / 'prometheus.yml'}",
                           f"--storage.tsdb.path={self.workdir / 'data'}",
                           f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"], log=self.log)
        deadline = time.monotonic() + 30
        while not self._ready():
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus never became ready:\n{self.log.read_text()}")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.HTTPError):
            return False

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout_s=10)

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of an HTTP API answer; an error answer raises :class:`PrometheusError`."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (a vector; a scalar becomes one sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def targets_up(self) -> dict[str, str]:
        """scrape URL → health of every active target."""
        return {t["scrapeUrl"]: t["health"] for t in self.api("targets")["activeTargets"]}
