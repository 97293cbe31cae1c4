"""Adapters for the three ports, chosen by URL scheme (see docs/architecture.md).

| port     | embedded (default) | real engine                      |
|----------|--------------------|----------------------------------|
| broker   | `sqlite:///…`      | `kafka://host:9092[,host:port]`  |
| store    | `sqlite:///…`      | `mongodb://host:27017/database`  |
| counters | `sqlite:///…`      | `redis://host:6379/0`            |

Engine clients are imported only when their scheme is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from weathertweets.ports import Broker, Counters, Idempotency, Store

if TYPE_CHECKING:
    from weathertweets.backends.sqlite_retention import Retention


class UnsupportedBackend(ValueError):
    pass


def _scheme(url: str, kind: str, known: tuple[str, ...]) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in known:
        raise UnsupportedBackend(
            f"{kind} URL {url!r}: unknown scheme {scheme!r}; use one of {', '.join(known)}"
        )
    return scheme


def open_broker(
    url: str,
    *,
    topic: str = "messages",
    partitions: int = 3,
    retention: Retention | None = None,
    partition: int = 0,
) -> Broker:
    """`partitions`: Kafka's, for a topic it creates. `retention` and `partition` (where this
    process appends): the embedded broker's (Kafka keeps its topic's own `retention.*`)."""
    if _scheme(url, "broker", ("sqlite", "kafka")) == "kafka":
        from weathertweets.backends.kafka import KafkaBroker

        return KafkaBroker(url, topic, partitions)
    from weathertweets.backends.sqlite import path_from_url
    from weathertweets.backends.sqlite_broker import SqliteBroker

    return SqliteBroker(path_from_url(url), topic, retention, partition)


def open_store(url: str, *, collection: str = "register") -> Store:
    if _scheme(url, "store", ("sqlite", "mongodb")) == "mongodb":
        from weathertweets.backends.mongo import MongoStore

        return MongoStore(url, collection)
    from weathertweets.backends.sqlite import path_from_url
    from weathertweets.backends.sqlite_store import SqliteStore

    return SqliteStore(path_from_url(url))


def open_counters(url: str, *, prefix: str = "wt:", seed_keys: bool = True) -> Counters:
    """`seed_keys`: also keep the original's bare `HINCRBY <pais> <texto>` hashes (Redis only)."""
    if _scheme(url, "counters", ("sqlite", "redis")) == "redis":
        from weathertweets.backends.redis_counters import RedisCounters

        return RedisCounters(url, prefix, seed_keys=seed_keys)
    from weathertweets.backends.sqlite import path_from_url
    from weathertweets.backends.sqlite_counters import SqliteCounters

    return SqliteCounters(path_from_url(url))


def open_idempotency(url: str, *, prefix: str = "wt:", ttl: int = 90_000) -> Idempotency:
    """Idempotency-Keys live where the counters do (the counters' URL)."""
    if _scheme(url, "counters", ("sqlite", "redis")) == "redis":
        from weathertweets.backends.redis_idempotency import RedisIdempotency

        return RedisIdempotency(url, prefix, ttl)
    from weathertweets.backends.sqlite import path_from_url
    from weathertweets.backends.sqlite_idempotency import SqliteIdempotency

    return SqliteIdempotency(path_from_url(url), ttl)
