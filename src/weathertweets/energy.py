"""Energy accounting where no power meter (Kepler, RAPL) is available: a CPU-time model.

    joules = cpu_seconds × (max_watts − min_watts) + wall_seconds × min_watts

per process, with watts per vCPU. The defaults are Cloud Carbon Footprint's coefficients for
Google Cloud (min 0.71 W, max 4.26 W per vCPU, from SPECpower results): each service is charged
one vCPU's idle power while it runs and the busy-idle difference for each CPU-second it uses.
Exported as `weathertweets_energy_joules_total{service}`; the Grafana dashboard prefers
Kepler's measurements when Kepler runs and falls back to this.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

KWH_PER_JOULE = 1 / 3_600_000


class EnergyModel(Collector):
    def __init__(self, service: str, min_watts: float, max_watts: float) -> None:
        self.service = service
        self.min_watts = min_watts
        self.max_watts = max_watts
        self._started = time.monotonic()
        self._cpu_at_start = time.process_time()

    def joules(self) -> float:
        cpu = time.process_time() - self._cpu_at_start
        wall = time.monotonic() - self._started
        return cpu * (self.max_watts - self.min_watts) + wall * self.min_watts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "weathertweets_energy_joules",
            "Estimated energy from CPU time: cpu_s × (max_W − min_W) + wall_s × min_W",
            labels=["service"],
        )
        family.add_metric([self.service], self.joules())
        yield family


_registered: EnergyModel | None = None


def register(service: str, min_watts: float, max_watts: float) -> EnergyModel:
    """Export this process's estimate (once per process; later calls return the first)."""
    global _registered
    if _registered is None:
        _registered = EnergyModel(service, min_watts, max_watts)
        REGISTRY.register(_registered)
    return _registered
