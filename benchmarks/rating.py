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

Then the cost of a big tenant (issue 11): through ``PartitionTask.process``, a
``licenses_assigned`` reassigning one of the tenant's users, alone in its batch (the
command and the tenant's state write), in batches of 2,000 (random users of the tenant,
and only 10 of them), and the state record's bytes, at ``--big-users`` users (10 and
1,000,000) — the users written into the store as the task writes them, not applied one
command each.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
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
from rater.core.state import TenantState, User
from rater.shell.task import ID_PREFIX, Batch, MemoryStore, PartitionTask, user_key, user_value
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


class _Store(MemoryStore):
    """A :class:`MemoryStore` that keeps the id and user records (keys from ``!``) in a
    dict of their own. ``MemoryStore.keys`` walks every key where RocksDB seeks to the
    prefix: every batch looks for months to purge, and that scan — over a million user
    records and every command id so far — would be timed instead of the task."""

    def __init__(self) -> None:
        super().__init__()
        self.marked: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return (self.marked if key[:1] == ID_PREFIX else self.records).get(key)

    def keys(self, prefix: bytes, limit: int, after: bytes = b"") -> list[bytes]:
        if prefix[:1] == ID_PREFIX:
            return sorted(k for k in self.marked if k.startswith(prefix) and k > after)[:limit]
        return super().keys(prefix, limit, after)

    def write(self, batch: Batch) -> None:
        for key, value in batch.changelog():
            records = self.marked if key[:1] == ID_PREFIX else self.records
            if value is None:
                records.pop(key, None)
            else:
                records[key] = value


class BigTenant:
    """A partition task over a store holding one tenant of ``size`` users, each with
    :data:`CAPS` in the US; commands reassign random users between two licence sets."""

    TENANT = "big"
    CAPS = ("MCOPSTN1", "MCOPSTNPP")
    OTHER = ("MCOPSTN2", "MCOPSTNPP", "MCOMEETADD")

    def __init__(self, ctx: RatingContext, size: int) -> None:
        self.ctx, self.size, self.offset = ctx, size, 0
        self.rng = random.Random(size)  # noqa: S311 - a reproducible benchmark, not secrets
        self.store = _Store()
        upsert = {"type": "tenant_upserted", "schema_version": 1, "event_id": "up", "tenant_id": self.TENANT,
                  "occurred_at": "2026-11-02T08:00:00Z", "command_id": "up", "country": "US", "currency": "USD",
                  "billing_model": "prepaid_credits"}
        self.store.write(PartitionTask(0, ctx, self.store).process([self._record(upsert)]))
        # the users as the task writes them (one record each), and the counts they make
        value = user_value(User("US", self.CAPS))
        self.store.marked.update((user_key(self.TENANT, self.user(n)), value) for n in range(size))
        state = TenantState.from_dict(orjson.loads(self.store.records[self.TENANT.encode()]))
        state.licences = {(cap, "US"): size for cap in self.CAPS}
        self.store.records[self.TENANT.encode()] = orjson.dumps(state.to_dict())
        self.task = PartitionTask(0, ctx, self.store)  # a worker that finds the tenant stored

    @staticmethod
    def user(n: int) -> str:
        return f"user-{n:07d}"

    def _record(self, event: dict[str, object]) -> edge.Record:
        """An account command at the topic's next offset."""
        self.offset += 1
        return edge.Record("account-commands", 0, self.offset - 1, self.TENANT.encode(), orjson.dumps(event), 0)

    def commands(self, count: int, among: int) -> list[edge.Record]:
        """``count`` licence commands, each reassigning a random user of the first
        ``among`` (new command ids)."""
        return [self._record({
            "type": "licenses_assigned", "schema_version": 1, "event_id": f"e{self.offset}", "tenant_id": self.TENANT,
            "occurred_at": "2026-11-02T09:00:00Z", "command_id": f"lic{self.offset}",
            "user_id": self.user(self.rng.randrange(among)), "usage_location": "US",
            "capabilities": list(self.rng.choice((self.CAPS, self.OTHER))),
        }) for _ in range(count)]

    def timed(self, batches: int, per_batch: int, among: int | None = None) -> float:
        """Seconds per command in the median of ``batches`` batches of ``per_batch``
        commands (over the first ``among`` users, or all), each batch processed (the
        commands, the state write) and written to the store. The median, not the mean:
        on a shared VM another process's burst lands in a few batches."""
        prepared = [self.commands(per_batch, among or self.size) for _ in range(batches)]
        gc.collect()
        spent: list[float] = []
        for records in prepared:
            began = time.perf_counter()
            batch = self.task.process(records)
            spent.append(time.perf_counter() - began)
            if not batch.states or len(batch.outputs) != 1:  # the balance snapshot, nothing else
                raise SystemExit(f"a licence command was not applied: {batch.outputs[:1]}")
            self.store.write(batch)
        return statistics.median(spent) / per_batch

    def state_bytes(self) -> int:
        return len(self.store.records[self.TENANT.encode()])


def big_tenants(ctx: RatingContext, sizes: list[int], rounds: int) -> None:
    """Print the cost of a licence command and the state record at each size, and the
    ratio of the largest to the smallest."""
    rows: dict[int, tuple[float, float, float, int]] = {}
    for size in sizes:
        began = time.perf_counter()
        tenant = BigTenant(ctx, size)
        ready = time.perf_counter() - began
        alone = min(tenant.timed(200, 1) for _ in range(rounds))
        bulk = min(tenant.timed(9, 2000) for _ in range(rounds))
        few = min(tenant.timed(9, 2000, among=10) for _ in range(rounds))
        rows[size] = (alone, bulk, few, tenant.state_bytes())
        print(f"  tenant of {size:,} users ready in {ready:.1f} s", flush=True)
        del tenant
        gc.collect()
    small, big = min(sizes), max(sizes)
    print(f"{'users in the tenant':52}" + "".join(f"{size:>12,}" for size in sizes) + f"{'ratio':>9}")
    for name, at, unit in (("licence command alone in its batch", 0, "µs"),
                           ("licence command, batches of 2,000", 1, "µs"),
                           ("licence command, batches of 2,000 over 10 users", 2, "µs"),
                           ("state record", 3, "bytes")):
        values = [rows[size][at] * (1e6 if unit == "µs" else 1) for size in sizes]
        ratio = rows[big][at] / rows[small][at]
        print(f"{name + f' ({unit})':52}" + "".join(f"{v:>12,.1f}" for v in values) + f"{ratio:>8.2f}×")
    print("(in batches of 2,000 a big tenant's commands touch up to 2,000 users, each read from the store"
          " and written; the 10-user tenant's touch 10)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--cdrs", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; the best one counts")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--full-cdrs", type=int, default=20_000, help="CDRs for the edge+core+out timing")
    parser.add_argument("--big-users", default="10,1000000",
                        help="users of the big tenant, comma-separated sizes (empty: skip that part)")
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
    sizes = [int(size) for size in args.big_users.split(",") if size]
    if sizes:
        print("a big tenant, through PartitionTask.process (median batch, best of --rounds):", flush=True)
        big_tenants(bench.ctx, sizes, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
