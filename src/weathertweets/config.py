"""Settings: every one has a `WT_*` environment variable; command-line flags override them."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise ValueError(f"{name}={raw!r}: use 1 or 0 (true/false, yes/no, on/off)")


@dataclass
class Settings:
    data_dir: Path = field(default_factory=lambda: Path(_env("WT_DATA_DIR", "data")))
    broker_url: str = field(default_factory=lambda: _env("WT_BROKER_URL", ""))
    store_url: str = field(default_factory=lambda: _env("WT_STORE_URL", ""))
    counter_url: str = field(default_factory=lambda: _env("WT_COUNTER_URL", ""))
    host: str = field(default_factory=lambda: _env("WT_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: int(_env("WT_PORT", "8080")))
    ingest_port: int = field(default_factory=lambda: int(_env("WT_INGEST_PORT", "50051")))
    ingest_target: str = field(default_factory=lambda: _env("WT_INGEST_TARGET", ""))
    counter_port: int = field(default_factory=lambda: int(_env("WT_COUNTER_PORT", "8000")))
    archiver_port: int = field(default_factory=lambda: int(_env("WT_ARCHIVER_PORT", "8001")))
    ingest_metrics_port: int = field(
        default_factory=lambda: int(_env("WT_INGEST_METRICS_PORT", "8002"))
    )
    topic: str = field(default_factory=lambda: _env("WT_TOPIC", "messages"))
    partitions: int = field(default_factory=lambda: int(_env("WT_PARTITIONS", "3")))
    store_collection: str = field(default_factory=lambda: _env("WT_STORE_COLLECTION", "register"))
    counter_prefix: str = field(default_factory=lambda: _env("WT_COUNTER_PREFIX", "wt:"))
    seed_keys: bool = field(default_factory=lambda: _flag("WT_SEED_KEYS", True))
    max_batch: int = field(default_factory=lambda: int(_env("WT_MAX_BATCH", "10000")))
    log_level: str = field(default_factory=lambda: _env("WT_LOG_LEVEL", "info"))
    energy_min_watts: float = field(
        default_factory=lambda: float(_env("WT_ENERGY_MIN_WATTS", "0.71"))
    )
    energy_max_watts: float = field(
        default_factory=lambda: float(_env("WT_ENERGY_MAX_WATTS", "4.26"))
    )
    grid_gco2_per_kwh: float = field(
        default_factory=lambda: float(_env("WT_GRID_GCO2_PER_KWH", "475"))
    )
    prometheus_targets_file: str = field(
        default_factory=lambda: _env("WT_PROMETHEUS_TARGETS_FILE", "")
    )

    def resolve(self) -> Settings:
        """Fill what was left empty: the embedded backends under data_dir, ingest on loopback."""
        base = self.data_dir.resolve()
        self.broker_url = self.broker_url or f"sqlite:///{base}/broker.db"
        self.store_url = self.store_url or f"sqlite:///{base}/store.db"
        self.counter_url = self.counter_url or f"sqlite:///{base}/counters.db"
        self.ingest_target = self.ingest_target or f"127.0.0.1:{self.ingest_port}"
        return self

    def environment(self) -> dict[str, str]:
        """These settings as the `WT_*` variables that reproduce them in another process."""

        def text(value: object) -> str:
            return ("1" if value else "0") if isinstance(value, bool) else str(value)

        return {f"WT_{name.upper()}": text(value) for name, value in asdict(self).items()}


ENVIRONMENT = {
    "WT_DATA_DIR": "folder of the embedded SQLite files (default: data)",
    "WT_BROKER_URL": "sqlite:///path or kafka://host:port (default: <data-dir>/broker.db)",
    "WT_STORE_URL": "sqlite:///path or mongodb://host:port/db (default: <data-dir>/store.db)",
    "WT_COUNTER_URL": "sqlite:///path or redis://host:port/0 (default: <data-dir>/counters.db)",
    "WT_HOST": "address the HTTP services bind (default: 127.0.0.1)",
    "WT_PORT": "gateway HTTP port (default: 8080)",
    "WT_INGEST_PORT": "ingest gRPC port (default: 50051)",
    "WT_INGEST_TARGET": "where the gateway finds ingest (default: 127.0.0.1:<ingest-port>)",
    "WT_COUNTER_PORT": "counter HTTP port: POST /set and /metrics (default: 8000)",
    "WT_ARCHIVER_PORT": "archiver HTTP port: /metrics and probes (default: 8001)",
    "WT_INGEST_METRICS_PORT": "ingest HTTP port: /metrics and probes (default: 8002)",
    "WT_TOPIC": "broker topic (default: messages)",
    "WT_PARTITIONS": "partitions when the topic is created (default: 3)",
    "WT_STORE_COLLECTION": "MongoDB collection of the archive (default: register)",
    "WT_COUNTER_PREFIX": "prefix of the Redis keys (default: wt:)",
    "WT_SEED_KEYS": "1: also keep the original's bare HINCRBY <pais> <texto> hashes (default: 1)",
    "WT_MAX_BATCH": "most tweets in one POST /api/v1/tweets (default: 10000)",
    "WT_LOG_LEVEL": "debug, info, warning or error (default: info)",
    "WT_ENERGY_MIN_WATTS": "energy model: watts of an idle vCPU (default: 0.71)",
    "WT_ENERGY_MAX_WATTS": "energy model: watts of a busy vCPU (default: 4.26)",
    "WT_GRID_GCO2_PER_KWH": "grid carbon intensity, gCO2e per kWh (default: 475)",
    "WT_PROMETHEUS_TARGETS_FILE": "`stack` writes its services' /metrics addresses here (file_sd)",
}
