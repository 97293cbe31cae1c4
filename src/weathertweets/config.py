"""Settings, each declared once: its type, default and meaning live on one field.

From that declaration come the `WT_*` environment variable, the command-line flag (for the
fields marked `flag=True`), the `--help` text, and the variables a parent hands to its children.
A value that does not parse is a `SettingError` naming the variable or flag.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

# Not a setting: what a parent process tells the gateway workers it starts (`workers.py`,
# `stack.py`), so that a worker started after its parent's death still knows to stop.
PARENT_PID = "WT_PARENT_PID"


class SettingError(ValueError):
    """A setting's value cannot be used; the message names where it came from."""


def setting(default: Any, meaning: str, *, flag: bool = False) -> Any:
    return field(default=default, metadata={"meaning": meaning, "flag": flag})


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _parse(kind: type, raw: str, source: str) -> object:
    text = raw.strip()
    try:
        if kind is bool:
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise ValueError("use 1 or 0 (true/false, yes/no, on/off)")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is Path:
            return Path(text)
        return raw
    except ValueError as error:
        what = {int: "an integer", float: "a number"}.get(kind, "")
        reason = f"expected {what}" if what else str(error)
        raise SettingError(f"{source}={raw!r}: {reason}") from None


@dataclass
class Settings:
    data_dir: Path = setting(Path("data"), "folder of the embedded SQLite files", flag=True)
    broker_url: str = setting(
        "", "sqlite:///path or kafka://host:port (default: <data-dir>/broker.db)", flag=True
    )
    store_url: str = setting(
        "", "sqlite:///path or mongodb://host:port/db (default: <data-dir>/store.db)", flag=True
    )
    counter_url: str = setting(
        "", "sqlite:///path or redis://host:port/0 (default: <data-dir>/counters.db)", flag=True
    )
    host: str = setting("127.0.0.1", "address the services bind", flag=True)
    port: int = setting(8080, "gateway HTTP port", flag=True)
    workers: int = setting(
        1,
        "gateway processes sharing the HTTP port (SO_REUSEPORT); the other services run once",
        flag=True,
    )
    reuse_port: bool = setting(
        False, "1: share the HTTP port with other processes (what --workers sets in each)"
    )
    ingest_port: int = setting(50051, "ingest gRPC port", flag=True)
    ingest_target: str = setting(
        "",
        "where the gateway finds ingest: host:port, dns:///name:port, ipv4:a:p,b:p"
        " (default: 127.0.0.1:<ingest-port>)",
        flag=True,
    )
    gateway_publish: str = setting(
        "ingest",
        "how a lone gateway publishes: ingest (gRPC) or broker (straight to the broker;"
        " a gateway that shares its process with ingest always does)",
    )
    sink_idle: bool = setting(
        True,
        "`stack` on Kafka: the archiver and counter in Linux's idle scheduling class (SCHED_IDLE),"
        " so that taking tweets in goes first on a shared machine and the sinks run on what it"
        " leaves free, catching up after a burst; off (or where there is no such class):"
        " WT_SINK_NICE alone",
    )
    sink_nice: int = setting(
        10,
        "`stack` on Kafka: niceness of the archiver and counter processes (0-19; 0: same as the"
        " rest)",
    )
    sink_defer: float = setting(
        0.5,
        "`stack` on Kafka: while its gateways and ingest use at least this share of the"
        " machine's cores, the archiver and counter take no new batch (at most 5 s in a row;"
        " 0: never)",
    )
    counter_port: int = setting(8000, "counter HTTP port: POST /set and /metrics")
    archiver_port: int = setting(8001, "archiver HTTP port: /metrics and probes")
    ingest_metrics_port: int = setting(8002, "ingest HTTP port: /metrics and probes")
    broker_partition: int = setting(
        0,
        "embedded broker: the partition (log file) this process appends to; `--workers` gives"
        " each worker its own, so their commits do not queue behind each other",
    )
    broker_retention_hours: float = setting(
        24.0,
        "embedded broker: records older than this go once every group committed them (0: kept)",
    )
    broker_retention_bytes: int = setting(
        1 << 30,
        "embedded broker: each partition file trimmed oldest-first past this size (0: no limit)",
    )
    broker_retention_force: bool = setting(
        False, "1: retention trims records a consumer group has not committed yet"
    )
    archive_retention_days: float = setting(
        0.0, "the archive keeps tweets this many days, then the archiver deletes them (0: forever)"
    )
    topic: str = setting("messages", "broker topic")
    partitions: int = setting(3, "partitions when the topic is created")
    store_collection: str = setting("register", "MongoDB collection of the archive")
    counter_prefix: str = setting("wt:", "prefix of the Redis keys")
    seed_keys: bool = setting(
        True, "1: also keep the original's bare HINCRBY <pais> <texto> hashes"
    )
    max_batch: int = setting(10_000, "most tweets in one POST /api/v1/tweets")
    unknown_countries: str = setting(
        "refuse", "refuse (422 naming pais) or accept a country name we do not know"
    )
    log_level: str = setting("info", "debug, info, warning or error")
    log_format: str = setting("text", "text, or json: one JSON object per line")
    access_log: bool = setting(
        False, "1: one log line per HTTP request (method, path, status, ms; ~15% of peak)"
    )
    energy_min_watts: float = setting(0.71, "energy model: watts of an idle vCPU")
    energy_max_watts: float = setting(4.26, "energy model: watts of a busy vCPU")
    grid_gco2_per_kwh: float = setting(475.0, "grid carbon intensity, gCO2e per kWh")
    prometheus_targets_file: str = setting(
        "", "`stack` writes its services' /metrics addresses here (file_sd)"
    )
    api_keys: str = setting("", "bearer keys that may write, comma-separated (none: anyone)")
    api_keys_file: str = setting("", "a file of write keys, one per line (# comments)")
    read_keys: str = setting("", "bearer keys that may read the API (none: reads are public)")
    allow_anonymous: bool = setting(
        False, "1: listen beyond loopback with no write keys (a classroom demo)", flag=True
    )
    internal_token: str = setting(
        "", "shared secret of gateway → ingest calls (up and stack make one when unset)"
    )
    rate_limit: float = setting(0.0, "tweets a second per caller (key, or address); 0: no limit")
    max_concurrent: int = setting(
        1000, "requests a gateway process works on at once; more get 503 + Retry-After"
    )
    otlp_endpoint: str = setting(
        "", "OpenTelemetry: send traces to this OTLP/HTTP endpoint (needs the `tracing` extra)"
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in declared():
            raw = environ.get(variable(item))
            if raw is not None and (raw.strip() or kind(item) is str):
                values[item.name] = _parse(kind(item), raw, variable(item))
        return cls(**values).checked()

    def override(self, name: str, raw: object, source: str) -> None:
        """Set from a command-line flag (already parsed, or text to parse)."""
        value = _parse(_kinds()[name], raw, source) if isinstance(raw, str) else raw
        setattr(self, name, value)

    def checked(self) -> Settings:
        for name in ("port", "ingest_port", "counter_port", "archiver_port", "ingest_metrics_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise SettingError(f"WT_{name.upper()}={getattr(self, name)}: not a TCP port")
        if not 0 <= self.broker_partition <= 65535:
            raise SettingError(f"WT_BROKER_PARTITION={self.broker_partition}: 0 to 65535")
        if min(self.broker_retention_hours, self.broker_retention_bytes) < 0:
            raise SettingError("WT_BROKER_RETENTION_HOURS and _BYTES: 0 (no limit) or more")
        if self.archive_retention_days < 0:
            raise SettingError("WT_ARCHIVE_RETENTION_DAYS: 0 (keep everything) or more")
        for name in ("partitions", "max_batch", "max_concurrent", "workers"):
            if getattr(self, name) < 1:
                raise SettingError(f"WT_{name.upper()}={getattr(self, name)}: must be at least 1")
        if not 0 <= self.sink_defer <= 1:
            raise SettingError(f"WT_SINK_DEFER={self.sink_defer}: a share from 0 to 1")
        if not 0 <= self.sink_nice <= 19:
            raise SettingError(f"WT_SINK_NICE={self.sink_nice}: 0 to 19")
        if self.unknown_countries not in ("refuse", "accept"):
            raise SettingError(
                f"WT_UNKNOWN_COUNTRIES={self.unknown_countries!r}: use refuse or accept"
            )
        if self.workers > 1 and self.port == 0:
            raise SettingError("WT_WORKERS needs a fixed WT_PORT (0 picks one port per worker)")
        if self.gateway_publish not in ("ingest", "broker"):
            raise SettingError(f"WT_GATEWAY_PUBLISH={self.gateway_publish!r}: use ingest or broker")
        if self.log_format not in ("text", "json"):
            raise SettingError(f"WT_LOG_FORMAT={self.log_format!r}: use text or json")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise SettingError(
                f"WT_LOG_LEVEL={self.log_level!r}: use debug, info, warning or error"
            )
        return self

    def resolve(self) -> Settings:
        """Fill what was left empty: the embedded backends under data_dir, ingest on loopback."""
        base = self.data_dir.resolve()
        self.broker_url = self.broker_url or f"sqlite:///{base}/broker.db"
        self.store_url = self.store_url or f"sqlite:///{base}/store.db"
        self.counter_url = self.counter_url or f"sqlite:///{base}/counters.db"
        self.ingest_target = self.ingest_target or f"127.0.0.1:{self.ingest_port}"
        return self.checked()

    @property
    def accept_unknown_countries(self) -> bool:
        return self.unknown_countries == "accept"

    def environment(self) -> dict[str, str]:
        """These settings as the `WT_*` variables that reproduce them in another process."""

        def text(value: object) -> str:
            return ("1" if value else "0") if isinstance(value, bool) else str(value)

        return {variable(f): text(getattr(self, f.name)) for f in declared()}


def declared() -> tuple[Field[Any], ...]:
    return fields(Settings)


def variable(item: Field[Any]) -> str:
    return f"WT_{item.name.upper()}"


def _kinds() -> dict[str, type]:
    return get_type_hints(Settings)  # the annotations are strings (PEP 563)


def kind(item: Field[Any]) -> type:
    return _kinds()[item.name]


def default_text(item: Field[Any]) -> str:
    default = item.default if item.default is not MISSING else ""
    if isinstance(default, bool):
        return "1" if default else "0"
    return str(default) if default != "" else ""


def help_lines() -> list[str]:
    """One line per variable, for `--help`: name, meaning, default."""
    lines = []
    for item in declared():
        default = default_text(item)
        suffix = f" (default: {default})" if default and "(default" not in meaning(item) else ""
        lines.append(f"  {variable(item):<26} {meaning(item)}{suffix}")
    return lines


def meaning(item: Field[Any]) -> str:
    return str(item.metadata["meaning"])


ENVIRONMENT = {variable(item): meaning(item) for item in declared()}
