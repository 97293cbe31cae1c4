"""Prometheus metrics shared by every service (one registry per process)."""

from __future__ import annotations

import math
import os
import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Generic, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Metric,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

CollectorT = TypeVar("CollectorT", bound=Collector)
CellT = TypeVar("CellT")


class _LoopFamily(Collector, Generic[CellT]):
    """A metric family updated only from the event loop's thread: its series (cells) are
    plain objects, no lock. `labels` makes a series on first use, as prometheus_client's."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self._name, self._documentation, self._labelnames = name, documentation, labelnames
        self._cells: dict[tuple[str, ...], CellT] = {}

    def _new_cell(self) -> CellT:
        raise NotImplementedError

    def labels(self, *values: str) -> CellT:
        cell = self._cells.get(values)
        if cell is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name} takes labels {list(self._labelnames)}")
            cell = self._cells[values] = self._new_cell()
        return cell


class CounterCell:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class LoopCounter(_LoopFamily[CounterCell]):
    """A counter family without a lock (measured: 370 ns → 70 ns an increment; the request
    path makes several)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        if not labelnames:
            self._cells[()] = CounterCell()

    def _new_cell(self) -> CounterCell:
        return CounterCell()

    def inc(self, amount: float = 1.0) -> None:
        self._cells[()].value += amount

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, cell in list(self._cells.items()):
            family.add_metric(values, cell.value)
        yield family


class LoopHistogram(_LoopFamily["HistogramCell"]):
    """A histogram family without a lock: a bisect and two additions (measured: 770 ns →
    150 ns an observation)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self._bounds = [*map(float, buckets), math.inf]

    def _new_cell(self) -> HistogramCell:
        return HistogramCell(self._bounds)

    def collect(self) -> Iterator[Metric]:
        snapshot = [(values, list(c.counts), c.sum) for values, c in list(self._cells.items())]
        yield _histogram(self._name, self._documentation, self._labelnames, self._bounds, snapshot)


class HistogramCell:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds, self.counts, self.sum = bounds, [0] * len(bounds), 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


def _histogram(
    name: str,
    documentation: str,
    labelnames: Sequence[str],
    bounds: Sequence[float],
    snapshot: Sequence[tuple[Sequence[str], Sequence[int], float]],
) -> Metric:
    """A histogram family from each series' per-bucket counts (not cumulative) and sum."""
    family = HistogramMetricFamily(name, documentation, labels=labelnames)
    for values, counts, total in snapshot:
        buckets = [
            (floatToGoString(bound), count)  # type: ignore[no-untyped-call]
            for bound, count in zip(bounds, accumulate(counts), strict=True)
        ]
        family.add_metric(values, buckets, total)
    return family


def _registered(collector: CollectorT) -> CollectorT:
    REGISTRY.register(collector)
    return collector


# Families updated on the request paths, from the event loop's thread only.
HTTP_REQUESTS = _registered(
    LoopCounter(
        "weathertweets_http_requests", "HTTP requests served", ["service", "route", "status"]
    )
)
HTTP_DURATION = _registered(
    LoopHistogram(
        "weathertweets_http_request_duration_seconds",
        "Time to answer an HTTP request, by route",
        ["service", "route"],
        (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    )
)
GRPC_HANDLED = _registered(
    LoopCounter(
        "weathertweets_grpc_server_handled",
        "gRPC calls answered, by method and code",
        ["method", "code"],
    )
)
GRPC_DURATION = _registered(
    LoopHistogram(
        "weathertweets_grpc_server_handling_seconds",
        "Time to answer a gRPC call, by method",
        ["method"],
        (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    )
)
ACCEPTED = _registered(
    LoopCounter("weathertweets_tweets_accepted", "Tweets acknowledged (durable on the broker)")
)
REJECTED = _registered(
    LoopCounter("weathertweets_tweets_rejected", "Requests refused, by reason", ["reason"])
)
BATCH_SIZE = _registered(
    LoopHistogram(
        "weathertweets_batch_size",
        "Tweets per batch",
        ["stage"],
        (1, 5, 10, 50, 100, 500, 1000, 5000, 10000, 20000),
    )
)
PUBLISHED = _registered(
    LoopCounter("weathertweets_tweets_published", "Tweets written to the broker by ingest")
)

# Families that other threads may update too: prometheus_client's, with their locks.
DEAD_LETTERS = Counter(
    "weathertweets_records_dead_lettered",
    "Broker records a sink refused for good, sent to the dead-letter destination",
    ["group"],
)
TASK_FAILURES = Counter(
    "weathertweets_task_failures", "Background tasks that died (the process then exits)", ["task"]
)
PROCESSED = Counter(
    "weathertweets_records_processed", "Broker records a consumer group has handled", ["group"]
)
POISON = Counter(
    "weathertweets_records_skipped", "Broker records that are not tweets, skipped", ["group"]
)
DEFERRED = Counter(
    "weathertweets_consumer_deferred_seconds",
    "Seconds a consumer group waited while the stack's intake was busy",
    ["group"],
)
LAG = Gauge(
    "weathertweets_consumer_lag", "Broker records not yet committed by this consumer", ["group"]
)
ARCHIVE_EXPIRED = Counter(
    "weathertweets_archive_expired", "Archived tweets deleted by the archive retention"
)
BROKER_TRIMMED = Counter(
    "weathertweets_broker_trimmed_records", "Records the embedded broker's retention deleted"
)


class BatchHistogram(Collector):
    """A histogram by `group` that takes a whole batch of observations at once: one lock and
    a bisect a value, where prometheus_client's `observe` takes two locks and scans the
    buckets (measured: 2.8 µs → 0.7 µs a value; the sinks observe every tweet)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self._name, self._documentation = name, documentation
        self._bounds = [*map(float, buckets), math.inf]
        self._series: dict[str, tuple[list[int], list[float]]] = {}  # group: (counts, [sum])
        self._lock = threading.Lock()

    def observe_many(self, group: str, values: Sequence[float]) -> None:
        """Negative values (clocks apart) and NaN count as zero."""
        bounds = self._bounds
        with self._lock:
            counts, total = self._series.get(group) or self._series.setdefault(
                group, ([0] * len(bounds), [0.0])
            )
            added = 0.0
            for value in values:
                if value > 0:
                    counts[bisect_left(bounds, value)] += 1
                    added += value
                else:
                    counts[0] += 1
            total[0] += added

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = [
                ((group,), list(counts), total[0])
                for group, (counts, total) in self._series.items()
            ]
        yield _histogram(self._name, self._documentation, ["group"], self._bounds, snapshot)


E2E_LATENCY = BatchHistogram(
    "weathertweets_end_to_end_seconds",
    "From received_at to archived or counted",
    (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REGISTRY.register(E2E_LATENCY)


class DataDirSize(Collector):
    """`weathertweets_data_dir_bytes{file}`: each file of the embedded data directory, read
    when scraped (the broker log, archive, counters and their WAL files)."""

    def __init__(self) -> None:
        self.path: Path | None = None

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "weathertweets_data_dir_bytes",
            "Size of each file in the data directory",
            labels=["file"],
        )
        if self.path is not None:
            try:
                entries = list(os.scandir(self.path))
            except OSError:
                entries = []
            for entry in entries:
                try:
                    if entry.is_file():
                        family.add_metric([entry.name], entry.stat().st_size)
                except OSError:
                    continue  # gone between the listing and the stat
        yield family


DATA_DIR = DataDirSize()
REGISTRY.register(DATA_DIR)


def watch_data_dir(path: Path) -> None:
    DATA_DIR.path = path


def exposition() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
