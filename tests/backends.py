"""Backend sets for the contract suite: the embedded one always, the real engines when running.

Each test gets a fresh, empty namespace: a new folder of SQLite files, or a new Kafka topic,
MongoDB database and Redis key prefix.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.engines import engines_expected, require_engines
from weathertweets.backends import open_broker, open_counters, open_store
from weathertweets.ports import Broker, Counters, Store


@dataclass(frozen=True)
class Namespace:
    broker_url: str
    store_url: str
    counter_url: str
    topic: str = "messages"
    prefix: str = "wt:"


@dataclass(frozen=True)
class Opened:
    namespace: Namespace
    broker: Broker
    store: Store
    counters: Counters


@asynccontextmanager
async def opened(ns: Namespace) -> AsyncIterator[Opened]:
    backends = Opened(
        ns,
        open_broker(ns.broker_url, topic=ns.topic, partitions=3),
        open_store(ns.store_url),
        open_counters(ns.counter_url, prefix=ns.prefix),
    )
    async with AsyncExitStack() as stack:
        for backend in (backends.broker, backends.store, backends.counters):
            await backend.start()
            stack.push_async_callback(backend.close)
        yield backends


@dataclass(frozen=True)
class BackendSet:
    """A kind of backend, and how to make a fresh, empty namespace of it."""

    name: str
    new_namespace: Callable[[], Namespace]


def sqlite_namespace() -> Namespace:
    folder = Path(tempfile.mkdtemp(prefix="wt-contract-"))
    return Namespace(
        f"sqlite:///{folder}/broker.db",
        f"sqlite:///{folder}/store.db",
        f"sqlite:///{folder}/counters.db",
    )


def real_namespace() -> Namespace:
    env = require_engines()
    tag = uuid.uuid4().hex[:10]
    store = urlsplit(env["WT_STORE_URL"])
    return Namespace(
        env["WT_BROKER_URL"],
        urlunsplit(store._replace(path=f"/wt_test_{tag}")),
        env["WT_COUNTER_URL"],
        topic=f"wt-test-{tag}",
        prefix=f"wt-test-{tag}:",
    )


def backend_sets() -> list[BackendSet]:
    sets = [BackendSet("sqlite", sqlite_namespace)]
    if engines_expected():
        sets.append(BackendSet("kafka-mongo-redis", real_namespace))
    return sets
