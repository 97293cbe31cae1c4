"""Backend sets for the contract suite: the embedded one always, real engines when configured."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from weathertweets.backends import open_broker, open_counters, open_store
from weathertweets.ports import Broker, Counters, Store


@dataclass(frozen=True)
class Urls:
    broker: str
    store: str
    counters: str


@dataclass(frozen=True)
class Opened:
    urls: Urls
    broker: Broker
    store: Store
    counters: Counters


@asynccontextmanager
async def opened(urls: Urls) -> AsyncIterator[Opened]:
    backends = Opened(
        urls, open_broker(urls.broker), open_store(urls.store), open_counters(urls.counters)
    )
    async with AsyncExitStack() as stack:
        for backend in (backends.broker, backends.store, backends.counters):
            await backend.start()
            stack.push_async_callback(backend.close)
        yield backends


@dataclass(frozen=True)
class BackendSet:
    """A kind of backend, and how to make URLs for a fresh, empty namespace of it."""

    name: str
    new_urls: Callable[[], Urls]


def _sqlite_urls() -> Urls:
    folder = Path(tempfile.mkdtemp(prefix="wt-contract-"))
    return Urls(
        f"sqlite:///{folder}/broker.db",
        f"sqlite:///{folder}/store.db",
        f"sqlite:///{folder}/counters.db",
    )


def backend_sets() -> list[BackendSet]:
    return [BackendSet("sqlite", _sqlite_urls)]
