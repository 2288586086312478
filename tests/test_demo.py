"""The README's run command: ``rater demo`` shows rated CDRs and balances, and Ctrl-C
stops it leaving no broker or worker process behind."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.kafka


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if text.encode() in (proc / "cmdline").read_bytes() or text.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _rated(url: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "rater_cdrs_rated_total")


def test_demo_shows_rated_cdrs_and_balances_and_ctrl_c_leaves_nothing_running() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "RATER_TOPIC_PREFIX")}
    demo = subprocess.Popen([sys.executable, "-m", "rater", "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in demo.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()
    seen: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while sum(line.startswith("rated-cdrs") for line in seen) < 4:
            assert time.monotonic() < deadline, "demo showed no rated CDRs within 2 minutes:\n" + "".join(seen)
            assert demo.poll() is None, "demo exited early:\n" + "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        # the worker's metrics, at the URL the demo printed, count what it showed
        url = re.search(r"worker metrics: (http://\S+/metrics)", "".join(seen))
        assert url, "".join(seen)
        while (rated := _rated(url.group(1))) < 4:  # counted once the unit committed
            assert time.monotonic() < deadline, f"the metrics counted {rated} rated CDRs"
            time.sleep(0.2)
        assert rated == 4
    finally:
        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
        rc = demo.wait(timeout=90)
    reader.join(timeout=30)  # the pipe closes when the demo has exited
    while not lines.empty():
        seen.append(lines.get())
    output = "".join(seen)
    workdir = re.search(r"log (/\S+)/worker\.log", output)
    assert workdir, output
    assert rc == 0, output
    assert "stopped: worker and broker are down" in output
    assert any(line.startswith("balances") and "balance=" in line for line in seen)
    charged = [line for line in seen if line.startswith("rated-cdrs") and "user_out" in line]
    assert charged
    assert all("charge=0.00" not in line for line in charged), output
    assert _processes_mentioning(workdir.group(1)) == [], "a broker or worker outlived the demo"
