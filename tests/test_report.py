"""``rater balance``, ``rater report pools`` and ``rater report usage`` (rater/report.py) against a real worker's
tenant API with a token file, and real tenants: what they print and their exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rater.localkafka import free_port
from rater.report import RETRIES, show_balance, show_pools, show_usage
from tests.support import Worker, create_topics
from tests.test_api import stored, us_pool_used, wait_ready
from tests.test_scenarios import NEW_YORK, Tenant, pool_seconds, tenant_id

ADMIN = "report-admin-0123456789abcdef"
ACME = "report-acme-0123456789abcdef"


def rater(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``rater ARGS`` piped (not a terminal): plain text or --json."""
    return subprocess.run([sys.executable, "-m", "rater", *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **(env or {})), check=False)


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    workdir = tmp_path_factory.mktemp("report")
    prefix = f"report{uuid.uuid4().hex[:8]}."
    create_topics(kafka_bootstrap, prefix)
    tokens = workdir / "tokens.json"
    tokens.write_text(json.dumps({"tokens": {ADMIN: "*", ACME: ["acme-0"]}}))
    started = Worker(kafka_bootstrap, prefix, workdir, extra_env={"RATER_API_TOKENS": str(tokens)}).start()
    wait_ready(started)
    yield started
    started.stop()


@pytest.mark.kafka
def test_balance_and_pools_of_a_real_tenant(worker: Worker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = Tenant(worker, tenant_id("rep", (0, 1, 2, 3)))
    t.open(funds="10.00", users={"alice": ("US", ["MCOPSTN1"])})
    t.send(t.call("a", 600, destination=NEW_YORK))
    t.wait(t.all_rated("a"), t.has("balance", caused_by=t.uid("a")))
    stored(worker, t.id, lambda body: us_pool_used(body) == 600, {"Authorization": f"Bearer {ADMIN}"})
    env = {"RATER_API_URL": worker.url, "RATER_API_TOKEN": ADMIN}

    got = rater("balance", "--tenant", t.id, "--json", env=env)
    assert got.returncode == 0, got.stderr
    body = json.loads(got.stdout)
    assert body["tenant_id"] == t.id
    assert body["currency"] == "USD"

    got = rater("balance", "--tenant", t.id, env=env)
    assert got.returncode == 0, got.stderr
    lines = got.stdout.splitlines()
    assert f"balance\t{body['balance']} USD" in lines
    assert "status\tactive" in lines
    assert any(line.startswith("as_of\tpartition ") for line in lines)
    assert [line for line in lines if line.startswith("lot\t")] == [
        f"lot\t{lot['lot_id']}\t{lot['remaining']}\t{lot['expires_at']}" for lot in body["lots"]]

    token_file = tmp_path / "token"
    token_file.write_text(ADMIN + "\n")
    got = rater("report", "pools", "--tenant", t.id, "--url", worker.url, "--token-file", str(token_file))
    assert got.returncode == 0, got.stderr
    size = pool_seconds("MCOPSTN1", "US")
    assert f"MCOPSTN1\tUS\tdomestic\t{size}\t600\t{size - 600}" in got.stdout.splitlines()
    assert "month\t2026-11" in got.stdout

    got = rater("report", "pools", "--tenant", t.id, "--month", "2026-12", "--json", env=env)
    assert got.returncode == 0, got.stderr
    pools = json.loads(got.stdout)
    [us] = [p for p in pools["pools"] if p["location"] == "US"]
    assert (us["used_seconds"], us["available_seconds"]) == (0, size)

    got = rater("report", "usage", "--tenant", t.id, "--month", "2026-11", env=env)
    assert got.returncode == 0, got.stderr
    rated = t.rated(t.wait(t.all_rated("a")), "a")
    lines = got.stdout.splitlines()
    assert f"MCOPSTN1\tdomestic\tUS\t1\t600\t600\t0\t0\t{rated['charge']}\t{rated['uncollected']}" in lines
    assert f"total\t-\t-\t1\t600\t600\t0\t0\t{rated['charge']}\t{rated['uncollected']}" in lines
    usage = json.loads(rater("report", "usage", "--tenant", t.id, "--json", env=env).stdout)
    assert (usage["month"], usage["totals"]["calls"]) == ("2026-11", 1)
    for month in ("11-2026", "2026-1²", "２０２６-１１", "2026-00"):
        got = rater("report", "usage", "--tenant", t.id, "--month", month, env=env)
        assert (got.returncode, got.stderr.count("\n")) == (2, 1), (month, got.stderr)

    # on a terminal: the rich tables of the same answers
    show_balance(body, tty=True)
    show_pools(pools, tty=True)
    show_usage(usage, tty=True)
    shown = capsys.readouterr().out
    assert body["balance"] in shown
    for lot in body["lots"]:
        assert lot["lot_id"] in shown
    assert "MCOPSTN1" in shown
    assert str(size) in shown
    assert "usage of 2026-11 (USD)" in shown


@pytest.mark.kafka
def test_exit_codes(worker: Worker) -> None:
    env = {"RATER_API_URL": worker.url}
    assert rater("balance", "--tenant", "acme-0", "--token", ADMIN, env=env).returncode == 4  # unknown tenant
    got = rater("balance", "--tenant", "acme-0", env=env)  # no token: 401
    assert got.returncode == 4
    assert "401" in got.stderr
    got = rater("balance", "--tenant", "someone-else", "--token", ACME, env=env)  # not allowed: 403
    assert (got.returncode, "403" in got.stderr) == (4, True)
    got = rater("balance", "--tenant", "acme-0", "--url", worker.url + "/not-the-api", "--token", ADMIN)
    assert (got.returncode, "404" in got.stderr) == (1, True)  # no such route: not "unknown tenant"
    got = rater("report", "pools", "--tenant", "acme-0", "--month", "2026-13", "--token", ADMIN, env=env)
    assert got.returncode == 2
    assert "--month" in got.stderr


@pytest.mark.kafka
def test_a_503_is_retried_after_retry_after_then_exits_1(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A real worker whose topics do not exist yet answers every tenant 503 with
    ``Retry-After``: the command waits it out RETRIES times, then gives up (exit 1)."""
    waiting = Worker(kafka_bootstrap, f"notopics{uuid.uuid4().hex[:8]}.", tmp_path).start()
    try:
        deadline = time.monotonic() + 60
        while True:  # the web server is up (it serves while the worker waits for the topics)
            waiting.check_alive()
            got = rater("balance", "--tenant", "acme", "--url", waiting.url)
            if "cannot reach" not in got.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        started = time.monotonic()
        got = rater("balance", "--tenant", "acme", "--url", waiting.url)
        took = time.monotonic() - started
    finally:
        waiting.stop()
    assert got.returncode == 1, got.stderr
    assert " 503 " in got.stderr
    assert took >= RETRIES * 1.5  # Retry-After: 2, waited each time


def test_an_unreachable_api_exits_1_in_one_line() -> None:
    got = rater("balance", "--tenant", "acme", "--url", f"http://127.0.0.1:{free_port()}")
    assert got.returncode == 1
    assert got.stderr.count("\n") == 1
    assert "cannot reach the API" in got.stderr
    assert "Traceback" not in got.stderr


def test_a_bad_url_is_a_bad_option() -> None:
    got = rater("balance", "--tenant", "acme", "--url", "ftp://x")
    assert got.returncode == 2
    assert "--url" in got.stderr
    assert rater("balance").returncode == 2  # --tenant is required
    help_text = rater("report", "pools", "--help").stdout
    assert "Exit codes" in help_text
