"""The batch histogram exposes what prometheus_client's own Histogram would for the same values."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from weathertweets.metrics import BatchHistogram

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
