"""The worker's Prometheus metrics.

Everything is kept in plain Python numbers on the worker's event loop and turned into
metric families only when Prometheus scrapes (:meth:`Metrics.collect`, a custom
collector): a batch's counts are added once its unit committed — a few dozen dict
updates per unit, no lock and no metric object per call — and the latency histograms
are filled with one ``bisect`` per record. The gauges that describe the worker now
(lag, partitions, restores, tick age) are read from the driver at scrape time.

Names follow Prometheus's conventions (base units, ``_total`` counters, ``_seconds``);
money is counted in minor units of the tenant's currency, exact while a counter stays
below 2**53 (Prometheus keeps float64s). docs/operating.md lists every metric.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from rater import schemas
from rater.core.context import RatingContext
from rater.core.rating import CREDITS, OVERAGE
from rater.shell import tally
from rater.shell.task import TICKS

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                   21600.0, 86400.0)
"""Seconds from a call's end (or an input's Kafka timestamp) to its unit's commit: a
healthy worker commits within a second; a backlog or a late CDR takes hours or days."""
COMMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)

_MONEY = {
    tally.CHARGED: ("rater_charged_minor_units", "The charge of rated CDRs, in minor units of the tenant's currency"),
    tally.DEBITED: ("rater_debited_minor_units", "Money debited from credit lots, in minor units"),
    tally.OVERAGE: ("rater_overage_minor_units", "Postpaid overage charged, in minor units"),
    tally.UNCOLLECTED: ("rater_uncollected_minor_units",
                        "Charges a prepaid tenant's credits could not pay, in minor units"),
}


class Histogram:
    """Bucket counts of one histogram (non-cumulative; made cumulative when scraped)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value: le
        self.sum += value

    def observe_ages(self, now: int, times: list[int], per_second: int) -> None:
        """Observe ``now − t`` seconds (0 for a ``t`` past ``now``) for every ``t`` of
        ``times``, integers in 1/``per_second`` s: what one ``observe`` each would do, in
        a sort and one binary search per bucket (a unit's records commit together)."""
        if not times:
            return
        times = sorted(times)
        n = len(times)
        counts = self.counts
        below = 0
        for i, bound in enumerate(self.bounds):
            # an age <= bound is a time >= now − bound (the bounds are whole units: exact)
            within = n - bisect_left(times, now - round(bound * per_second))
            counts[i] += within - below
            below = within
        counts[-1] += n - below
        past = bisect_right(times, now)
        self.sum += (past * now - sum(times[:past])) / per_second

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, total = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            cumulative.append((bound, float(total)))
        return cumulative


@dataclass(slots=True)
class Restore:
    """One partition's restore from the changelog (the current one, or the last)."""

    started: float
    target: int = 0
    """Changelog offsets to read (its end − where the local store was)."""
    done: int = 0
    ended: float | None = None


@dataclass(frozen=True, slots=True)
class Now:
    """What the worker is doing right now, read from the driver at scrape time."""

    owned: int
    ready: int
    is_ready: bool
    lag: dict[tuple[str, int], int]
    """(logical input topic, partition) → records not yet fetched."""
    tick_age_s: dict[int, float]
    """Owned partition → seconds since its last tick or since it became ready, whichever
    is later (the broker's clock)."""
    clock_offset_s: float | None


class Metrics(Collector):
    """The worker's metrics (register it with a ``CollectorRegistry``)."""

    def __init__(self, version: str, core_build: str, now: Callable[[], Now] | None = None) -> None:
        self.version = version
        self.core_build = core_build.split(" ", 1)[0]
        """``compiled`` or ``pure`` (why, and where the build is, are in the start-up log:
        a host path in a label would split a fleet's series)."""
        self.now = now
        """Reads the driver's state (set by the driver)."""
        self.counts: tally.Counts = {}
        self.inputs: dict[str, int] = {}
        self.call_latency = Histogram(LATENCY_BUCKETS)
        self.record_latency: dict[str, Histogram] = {}
        self.batch_records = Histogram(BATCH_BUCKETS)
        self.commit_seconds = Histogram(COMMIT_BUCKETS)
        self.commits = 0
        self.failures = 0
        self.restores: dict[int, Restore] = {}

    # -- what the driver tells ------------------------------------------------------------
    def committed(self, counts: tally.Counts, call_ends_us: list[int], records: Iterable[tuple[str, int]],
                  commit_s: float, committed_ms: int) -> None:
        """A unit committed: its batch's ``counts``, the ends of the calls it rated,
        its input ``records`` as (logical topic, Kafka timestamp in ms), how long its
        transaction took and when it committed (the broker's clock, ms)."""
        total = self.counts
        for key, value in counts.items():
            total[key] = total.get(key, 0) + value
        self.call_latency.observe_ages(committed_ms * 1000, call_ends_us, 1_000_000)
        stamps: dict[str, list[int]] = {}
        for topic, timestamp_ms in records:
            found = stamps.get(topic)
            if found is None:
                found = stamps[topic] = []
            found.append(timestamp_ms)
        size = 0
        for topic, found in stamps.items():
            size += len(found)
            self.inputs[topic] = self.inputs.get(topic, 0) + len(found)
            histogram = self.record_latency.get(topic)
            if histogram is None:
                histogram = self.record_latency[topic] = Histogram(LATENCY_BUCKETS)
            histogram.observe_ages(committed_ms, found, 1000)
        self.batch_records.observe(size)
        self.commit_seconds.observe(commit_s)
        self.commits += 1

    def expect(self, keys: Iterable[tuple[str, ...]], input_topics: Iterable[str]) -> None:
        """Show these counts (:func:`tally.expected`) and these input topics' counters
        and latency histograms at 0 until they count something."""
        for key in keys:
            self.counts.setdefault(key, 0)
        for topic in input_topics:
            self.inputs.setdefault(topic, 0)
            self.record_latency.setdefault(topic, Histogram(LATENCY_BUCKETS))

    def failed(self) -> None:
        """A unit failed (the worker stops)."""
        self.failures += 1

    def restoring(self, partition: int) -> Restore:
        """A restore of ``partition`` starts: the record the driver updates as it goes."""
        restore = self.restores[partition] = Restore(started=time.monotonic())
        return restore

    # -- the scrape -------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("rater_info", "The worker's version and rating core", labels=["version", "core_build"])
        info.add_metric([self.version, self.core_build], 1)
        yield info
        yield from self._counters()
        yield from self._histograms()
        yield from self._gauges()

    def _counters(self) -> Iterator[Metric]:
        rated = CounterMetricFamily("rater_cdrs_rated", "Rated CDRs committed, by status and the capability that"
                                    " paid the most seconds", labels=["status", "capability"])
        dead = CounterMetricFamily("rater_dead_letters", "Dead letters committed, by reason and source topic",
                                   labels=["reason", "topic"])
        outputs = CounterMetricFamily("rater_output_records", "Records produced in committed units, by logical"
                                      " topic and event type", labels=["topic", "type"])
        money = {kind: CounterMetricFamily(name, text, labels=["currency"]) for kind, (name, text) in _MONEY.items()}
        requests = CounterMetricFamily("rater_recharge_requests", "Recharge requests emitted", labels=["currency"])
        outcomes = CounterMetricFamily("rater_recharge_outcomes", "Recharges the payment service answered",
                                       labels=["outcome"])
        low, depleted = 0, 0
        succeeded, failed = 0, 0
        for key, value in sorted(self.counts.items()):
            kind = key[0]
            if kind == tally.RATED:
                rated.add_metric(list(key[1:]), value)
            elif kind == tally.DEAD_LETTER:
                dead.add_metric(list(key[1:]), value)
            elif kind == tally.OUTPUT:
                outputs.add_metric(list(key[1:]), value)
                event = key[2]
                low += value if event == "low_balance" else 0
                depleted += value if event == "balance_depleted" else 0
                succeeded += value if event == "recharge_succeeded" else 0
                failed += value if event == "recharge_failed" else 0
            elif kind == tally.RECHARGE_REQUESTED:
                requests.add_metric(list(key[1:]), value)
            elif kind in money:
                money[kind].add_metric(list(key[1:]), value)
        outcomes.add_metric(["succeeded"], succeeded)
        outcomes.add_metric(["failed"], failed)
        inputs = CounterMetricFamily("rater_input_records", "Input records in committed units", labels=["topic"])
        for topic, value in sorted(self.inputs.items()):
            inputs.add_metric([topic], value)
        yield from (rated, dead, outputs, *money.values(), requests, outcomes, inputs)
        yield CounterMetricFamily("rater_low_balance_events", "low_balance events", value=low)
        yield CounterMetricFamily("rater_balance_depleted_events", "balance_depleted notifications", value=depleted)
        yield CounterMetricFamily("rater_unit_commits", "Units (one transaction per partition batch) committed",
                                  value=self.commits)
        yield CounterMetricFamily("rater_unit_failures", "Units that failed to commit (the worker stops)",
                                  value=self.failures)

    def _histograms(self) -> Iterator[Metric]:
        family = HistogramMetricFamily("rater_cdr_end_to_commit_seconds",
                                       "From a rated CDR's end_time to its unit's commit")
        family.add_metric([], self.call_latency.buckets(), self.call_latency.sum)
        yield family
        family = HistogramMetricFamily("rater_record_to_commit_seconds", "From an input record's Kafka timestamp"
                                       " to its unit's commit", labels=["topic"])
        for topic, histogram in sorted(self.record_latency.items()):
            family.add_metric([topic], histogram.buckets(), histogram.sum)
        yield family
        family = HistogramMetricFamily("rater_batch_records", "Input records per unit")
        family.add_metric([], self.batch_records.buckets(), self.batch_records.sum)
        yield family
        family = HistogramMetricFamily("rater_unit_commit_seconds", "A unit's transaction, begin to commit")
        family.add_metric([], self.commit_seconds.buckets(), self.commit_seconds.sum)
        yield family

    def _gauges(self) -> Iterator[Metric]:
        records = GaugeMetricFamily("rater_restore_records", "Changelog offsets the partition's current or last"
                                    " restore has read", labels=["partition"])
        target = GaugeMetricFamily("rater_restore_target_records", "Changelog offsets the partition's current or"
                                   " last restore must read", labels=["partition"])
        seconds = GaugeMetricFamily("rater_restore_seconds", "How long the partition's current or last restore"
                                    " has taken", labels=["partition"])
        restoring = GaugeMetricFamily("rater_restoring", "1 while the partition restores from the changelog",
                                      labels=["partition"])
        now = time.monotonic()
        for p, restore in sorted(self.restores.items()):
            label = [str(p)]
            records.add_metric(label, restore.done)
            target.add_metric(label, restore.target)
            seconds.add_metric(label, (restore.ended or now) - restore.started)
            restoring.add_metric(label, 1 if restore.ended is None else 0)
        yield from (records, target, seconds, restoring)
        if self.now is None:
            return
        state = self.now()
        yield GaugeMetricFamily("rater_partitions_owned", "Partitions assigned to this worker (ready or restoring)",
                                value=state.owned)
        yield GaugeMetricFamily("rater_partitions_ready", "Partitions restored and consuming", value=state.ready)
        yield GaugeMetricFamily("rater_ready", "1 when the worker is ready (/readyz)", value=1 if state.is_ready else 0)
        lag = GaugeMetricFamily("rater_consumer_lag_records", "Records of an owned input partition not yet fetched"
                                " (its last stable offset − the consumer's position)", labels=["topic", "partition"])
        for (topic, p), behind in sorted(state.lag.items()):
            lag.add_metric([topic, str(p)], behind)
        yield lag
        age = GaugeMetricFamily("rater_tick_age_seconds", "The broker's clock − the partition's last applied"
                                " tick, or when it became ready if later (ticks off: it grows)",
                                labels=["partition"])
        for p, seconds_ago in sorted(state.tick_age_s.items()):
            age.add_metric([str(p)], seconds_ago)
        yield age
        if state.clock_offset_s is not None:
            yield GaugeMetricFamily("rater_broker_clock_offset_seconds", "The broker's clock − this host's, as"
                                    " measured", value=state.clock_offset_s)


SOURCE_TOPICS = ("cdrs", "account-commands", "recharge-results")
"""The input topics whose records may be dead letters."""
INPUT_TOPICS = (*SOURCE_TOPICS, TICKS)
"""The input topics whose records are counted (ticks too: they are units' inputs)."""


def expected_series(ctx: RatingContext) -> list[tuple[str, ...]]:
    """The counts shown at 0 from the start (:func:`tally.expected`): every rated status
    by every capability of the catalog (and credits, overage, none), every dead-letter
    reason by input topic, every output event, money in every currency of the tariff."""
    capabilities = [cap.id for cap in ctx.catalog.capabilities] + [CREDITS, OVERAGE, "none"]
    currencies = sorted({currency for tariff in ctx.tariffs.versions for currency, _ in tariff.rates})
    return tally.expected(schemas.enum("rated_cdr", "status"), capabilities, schemas.enum("dead_letter", "reason"),
                          SOURCE_TOPICS, currencies)


def registry(metrics: Metrics) -> CollectorRegistry:
    """A registry with the worker's metrics and the process's (CPU, memory, files)."""
    found = CollectorRegistry(auto_describe=False)
    found.register(metrics)
    ProcessCollector(registry=found)
    PlatformCollector(registry=found)
    GCCollector(registry=found)
    return found
