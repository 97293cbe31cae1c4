"""Where the real engines started by `make services` listen, read from `.services.env`.

Without that file the real-engine tests are skipped — unless WT_REQUIRE_ENGINES=1 (set by
`make test`, so by CI), when a missing engine is a failure, never a silent skip.
WT_REQUIRE_ENGINES=0 (`make test ENGINES=0`) skips them even when the file is there.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError
from redis import Redis
from redis.exceptions import RedisError

ENV_FILE = Path(__file__).resolve().parent.parent / ".services.env"


def engine_env() -> dict[str, str] | None:
    if os.environ.get("WT_REQUIRE_ENGINES") == "0" or not ENV_FILE.exists():
        return None
    values = {}
    for line in ENV_FILE.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip()
    return values


def require_engines() -> dict[str, str]:
    env = engine_env()
    if env is None:
        if os.environ.get("WT_REQUIRE_ENGINES") == "1":
            pytest.fail(f"{ENV_FILE.name} is missing: run `make services` first")
        pytest.skip("real engines not running (`make services` starts them)")
    return env


def engines_expected() -> bool:
    return engine_env() is not None or os.environ.get("WT_REQUIRE_ENGINES") == "1"


@dataclass(frozen=True)
class RealNamespace:
    """Fresh names on the shared engines, and the WT_* variables that select them."""

    env: dict[str, str]
    tag: str

    @classmethod
    def fresh(cls) -> RealNamespace:
        engines = require_engines()
        tag = uuid.uuid4().hex[:10]
        store = urlsplit(engines["WT_STORE_URL"])
        env = {
            "WT_BROKER_URL": engines["WT_BROKER_URL"],
            "WT_STORE_URL": urlunsplit(store._replace(path=f"/wt_e2e_{tag}")),
            "WT_COUNTER_URL": engines["WT_COUNTER_URL"],
            "WT_TOPIC": f"wt-e2e-{tag}",
            "WT_COUNTER_PREFIX": f"wt-e2e-{tag}:",
            "WT_PROMETHEUS_TARGETS_FILE": engines["WT_PROMETHEUS_TARGETS_FILE"],
        }
        return cls(env, tag)

    def archived(self) -> int:
        url = self.env["WT_STORE_URL"]
        client: MongoClient[dict[str, object]]
        with MongoClient(url, serverSelectionTimeoutMS=5000) as client:
            return int(client[f"wt_e2e_{self.tag}"]["register"].count_documents({}))

    def counted(self) -> tuple[int, int, dict[str, int]]:
        """(`wt:total`, the sum of `wt:countries`, `wt:countries`)."""
        prefix = self.env["WT_COUNTER_PREFIX"]
        with Redis.from_url(self.env["WT_COUNTER_URL"], decode_responses=True) as redis:
            total = int(redis.get(f"{prefix}total") or 0)
            countries = {k: int(v) for k, v in redis.hgetall(f"{prefix}countries").items()}
        return total, sum(countries.values()), countries

    def wait_exact(self, expected: int, timeout: float = 120) -> dict[str, int]:
        """Wait until archived = total = sum(countries) = expected; return the countries."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                archived = self.archived()
                total, summed, countries = self.counted()
            except (RedisError, PyMongoError):  # an engine (re)starting: not yet
                assert time.monotonic() < deadline, "the engines did not come back"
                time.sleep(0.5)
                continue
            if archived == total == summed == expected:
                return countries
            if time.monotonic() > deadline or archived > expected or total > expected:
                raise AssertionError(
                    f"expected {expected}: archived {archived}, total {total}, sum {summed}"
                )
            time.sleep(0.5)
