"""Rating throughput of the pure core on one core, against ``orjson.loads`` of the same
CDRs in the same run (issue 3's benchmark; not a test).

    make bench        # or: .venv/bin/python benchmarks/rating.py [--help]

A realistic mixed workload (``rater.workload``: 17 countries, every call type, licence
mixes, 5 % travelling users, emergency calls) on the shipped catalog and tariff. Over the
same CDR bytes it times:

* ``orjson.loads``     — the baseline: parsing the JSON and nothing else;
* ``core.apply``       — rating decoded CDRs: every decision, ledger update and output
                         event (its wire fields formatted later, when encoded);
* ``core+wire dicts``  — the same, plus formatting every output's wire fields;
* ``edge+core+out``    — decode and validate each record at the edge, rate, and encode
                         every output to JSON bytes (a shorter run: it is much slower).

Each timing is the best of ``--rounds`` runs on fresh tenant states.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

import rater
from rater import edge
from rater.catalog import rating_context
from rater.core.context import RatingContext
from rater.core.engine import apply
from rater.core.inputs import Cdr, Input
from rater.core.state import TenantState
from rater.workload import Workload

TARGET = 100_000


def _records(items: list[tuple[str, dict[str, object]]]) -> list[edge.Record]:
    return [
        edge.Record(topic, 0, offset, str(event["tenant_id"]).encode(), orjson.dumps(event), 0)
        for offset, (topic, event) in enumerate(items)
    ]


def _timed(work: Callable[[], object]) -> float:
    gc.collect()
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


class Bench:
    """The workload, decoded once, and the ways of running it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.ctx: RatingContext = rating_context()
        self.workload = Workload(args.tenants, args.users, seed=args.seed)
        self.setup = _records(list(self.workload.setup()))
        self.records = _records([("cdrs", event) for event in self.workload.cdrs(args.cdrs)])
        self.payloads = [record.value or b"" for record in self.records]
        self.setup_inputs = [self._decode(record) for record in self.setup]
        self.cdrs = [cdr for cdr in map(self._decode, self.records) if isinstance(cdr, Cdr)]
        self.positions = [record.position for record in self.records]

    @staticmethod
    def _decode(record: edge.Record) -> Input:
        decoded = edge.decode(record)
        if isinstance(decoded, edge.Refusal):
            raise SystemExit(f"the workload made a bad event: {decoded}")
        return decoded

    def fresh_states(self) -> dict[str, TenantState]:
        states: dict[str, TenantState] = {}
        start = self.workload.start_us
        for record, inp in zip(self.setup, self.setup_inputs, strict=True):
            step = apply(states.get(inp.tenant_id), inp, self.ctx, start, record.position)
            if step.rejection is not None or step.state is None:
                raise SystemExit(f"setup command refused: {step.rejection}")
            states[inp.tenant_id] = step.state
        return states

    def rate(self, states: dict[str, TenantState]) -> None:
        """What the shell's loop does with decoded CDRs: rate each at the partition's now."""
        ctx, now = self.ctx, self.workload.start_us
        for cdr, position in zip(self.cdrs, self.positions, strict=True):
            step = apply(states[cdr.tenant_id], cdr, ctx, now, position)
            if step.rejection is None and cdr.end_us > now:
                now = cdr.end_us

    def rate_to_wire_dicts(self, states: dict[str, TenantState]) -> None:
        ctx, now = self.ctx, self.workload.start_us
        for cdr, position in zip(self.cdrs, self.positions, strict=True):
            step = apply(states[cdr.tenant_id], cdr, ctx, now, position)
            if step.rejection is None and cdr.end_us > now:
                now = cdr.end_us
            for out in step.outputs:
                _ = out.payload

    def outcomes(self) -> Counter[str]:
        states, counts = self.fresh_states(), Counter[str]()
        ctx, now = self.ctx, self.workload.start_us
        for cdr, position in zip(self.cdrs, self.positions, strict=True):
            step = apply(states[cdr.tenant_id], cdr, ctx, now, position)
            if step.rejection is None:
                now = max(now, cdr.end_us)
            counts[step.rejection.reason if step.rejection else step.outputs[0].payload["status"]] += 1
        return counts

    def full(self, states: dict[str, TenantState], count: int) -> None:
        ctx, now, encode = self.ctx, self.workload.start_us, edge.encode
        for record in self.records[:count]:
            inp = edge.decode(record)
            assert isinstance(inp, Cdr)
            step = apply(states[inp.tenant_id], inp, ctx, now, record.position)
            if step.rejection is None:
                now = max(now, inp.end_us)
            for out in step.outputs:
                encode(out.payload)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--cdrs", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; the best one counts")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--full-cdrs", type=int, default=20_000, help="CDRs for the edge+core+out timing")
    args = parser.parse_args()

    print(f"rater rating benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()},"
          f" {platform.machine()}, {os.cpu_count()} CPUs (one used)", flush=True)
    print(f"core: {rater.CORE_BUILD}", flush=True)
    bench = Bench(args)
    n = len(bench.payloads)
    print(f"workload: {args.tenants} tenants, {args.users} users, {len(bench.setup)} setup commands,"
          f" {n} CDRs ({sum(map(len, bench.payloads)) / n:.0f} bytes each)", flush=True)
    outcomes = bench.outcomes()
    print("outcomes: " + ", ".join(f"{k} {v / n:.1%}" for k, v in outcomes.most_common()), flush=True)

    loads = orjson.loads
    t_loads = min(_timed(lambda: [loads(p) for p in bench.payloads]) for _ in range(args.rounds))
    t_rate = t_wire = float("inf")
    for _ in range(args.rounds):
        states = bench.fresh_states()
        t_rate = min(t_rate, _timed(lambda s=states: bench.rate(s)))  # type: ignore[misc]
        states = bench.fresh_states()
        t_wire = min(t_wire, _timed(lambda s=states: bench.rate_to_wire_dicts(s)))  # type: ignore[misc]
    n_full = min(n, args.full_cdrs)
    states = bench.fresh_states()
    t_full = _timed(lambda: bench.full(states, n_full))

    baseline = n / t_loads
    print(f"{'':18}{'CDRs/s':>12}{'× orjson.loads':>16}")
    for name, per_s in (("orjson.loads", baseline), ("core.apply", n / t_rate), ("core+wire dicts", n / t_wire),
                        ("edge+core+out", n_full / t_full)):
        print(f"{name:18}{per_s:12,.0f}{per_s / baseline:16.3f}")
    verdict = "meets" if n / t_rate >= TARGET else "MISSES"
    print(f"core.apply {verdict} the issue-3 target of {TARGET:,} CDRs/s on one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
