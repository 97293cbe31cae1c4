"""Our metric families expose what prometheus_client's own would for the same updates."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from weathertweets.metrics import BatchHistogram, LoopCounter, LoopHistogram

BUCKETS = (0.001, 0.01, 0.1, 1, 30)  # an int bound is written as the library writes it


def _lines(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return sorted(line for line in text.splitlines() if line and "_created" not in line)


def test_a_batch_lands_where_observing_each_value_would() -> None:
    values = [0.0005, 0.001, 0.0011, 0.05, 0.1, 0.5, 1.0, 7.0, 0.0]  # bounds themselves: ≤ counts
    reference, ours = CollectorRegistry(), CollectorRegistry()
    histogram = Histogram("e2e_seconds", "latency", ["group"], buckets=BUCKETS, registry=reference)
    batched = BatchHistogram("e2e_seconds", "latency", BUCKETS)
    ours.register(batched)
    assert _lines(ours) == _lines(reference)  # nothing observed yet: the same empty family
    for value in values:
        histogram.labels("archiver").observe(value)
    histogram.labels("counter").observe(0.2)
    batched.observe_many("archiver", values[:4])
    batched.observe_many("archiver", values[4:])
    batched.observe_many("counter", [0.2])
    assert _lines(ours) == _lines(reference)
    assert 'e2e_seconds_bucket{group="archiver",le="0.001"} 3.0' in _lines(ours)


def test_a_negative_or_undefined_latency_counts_as_zero() -> None:
    registry = CollectorRegistry()
    batched = BatchHistogram("e2e_seconds", "latency", BUCKETS)
    registry.register(batched)
    batched.observe_many("counter", [-0.5, 0.5, float("nan")])
    lines = _lines(registry)
    assert 'e2e_seconds_bucket{group="counter",le="0.001"} 2.0' in lines
    assert 'e2e_seconds_count{group="counter"} 3.0' in lines
    assert 'e2e_seconds_sum{group="counter"} 0.5' in lines


def test_loop_counters_read_as_the_library_counters() -> None:
    reference, ours = CollectorRegistry(), CollectorRegistry()
    plain = Counter("accepted", "tweets", registry=reference)
    labelled = Counter("requests", "served", ["route", "status"], registry=reference)
    our_plain, our_labelled = (
        LoopCounter("accepted", "tweets"),
        LoopCounter("requests", "served", ["route", "status"]),
    )
    ours.register(our_plain)
    ours.register(our_labelled)
    assert _lines(ours) == _lines(reference)  # an unlabelled counter shows its 0 at once
    for counter in (plain, our_plain):
        counter.inc()
        counter.inc(41)
    for family in (labelled, our_labelled):
        family.labels("/input", "202").inc()
        family.labels("/input", "202").inc()
        family.labels("/input", "422").inc(3)
    assert _lines(ours) == _lines(reference)
    assert 'requests_total{route="/input",status="202"} 2.0' in _lines(ours)
    assert "accepted_total 42.0" in _lines(ours)


def test_loop_histograms_read_as_the_library_histograms() -> None:
    values = [0.0004, 0.001, 0.0011, 0.05, 0.1, 0.5, 1.0, 7.0, 0.0]
    reference, ours = CollectorRegistry(), CollectorRegistry()
    histogram = Histogram("seconds", "time", ["route"], buckets=BUCKETS, registry=reference)
    loop = LoopHistogram("seconds", "time", ["route"], BUCKETS)
    ours.register(loop)
    for value in values:
        histogram.labels("/input").observe(value)
        loop.labels("/input").observe(value)
    histogram.labels("/set").observe(0.2)
    loop.labels("/set").observe(0.2)
    assert _lines(ours) == _lines(reference)
    assert 'seconds_bucket{le="0.001",route="/input"} 3.0' in _lines(ours)


def test_loop_families_refuse_the_wrong_labels() -> None:
    with pytest.raises(ValueError, match="takes labels"):
        LoopCounter("requests", "served", ["route", "status"]).labels("/input")
    with pytest.raises(ValueError, match="takes labels"):
        LoopHistogram("seconds", "time", ["route"], BUCKETS).labels("/input", "extra")
