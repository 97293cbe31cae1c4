"""The CPU-time energy model."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from weathertweets.energy import EnergyModel


def test_busy_time_costs_the_busy_idle_difference() -> None:
    model = EnergyModel("test", min_watts=1.0, max_watts=11.0)
    idle_before = model.joules()
    time.sleep(0.2)
    idle = model.joules() - idle_before
    assert idle == pytest.approx(0.2, abs=0.05)  # about 1 W × 0.2 s, next to no CPU
    start = time.process_time()
    while time.process_time() - start < 0.2:
        pass
    busy = model.joules() - idle_before - idle
    assert busy > 0.2 * 10 * 0.9  # 10 W extra for each CPU-second


def test_it_is_exported_as_a_counter() -> None:
    registry = CollectorRegistry()
    registry.register(EnergyModel("gateway", 0.71, 4.26))
    text = generate_latest(registry).decode()
    assert 'weathertweets_energy_joules_total{service="gateway"}' in text
