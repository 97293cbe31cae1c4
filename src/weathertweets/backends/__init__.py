"""Adapters for the three ports, chosen by URL scheme (see DESIGN §3 and docs/architecture.md)."""

from __future__ import annotations

from urllib.parse import urlsplit

from weathertweets.ports import Broker, Counters, Store


class UnsupportedBackend(ValueError):
    pass


def _scheme(url: str, kind: str, known: tuple[str, ...]) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in known:
        raise UnsupportedBackend(
            f"{kind} URL {url!r}: unknown scheme {scheme!r}; use one of {', '.join(known)}"
        )
    return scheme


def open_broker(url: str) -> Broker:
    _scheme(url, "broker", ("sqlite",))
    from weathertweets.backends.sqlite import path_from_url
    from weathertweets.backends.sqlite_broker import SqliteBroker

    return SqliteBroker(path_from_url(url))


def open_store(url: str) -> Store:
    _scheme(url, "store", ("sqlite",))
    from weathertweets.backends.sqlite import path_from_url
    from weathertweets.backends.sqlite_store import SqliteStore

    return SqliteStore(path_from_url(url))


def open_counters(url: str) -> Counters:
    _scheme(url, "counters", ("sqlite",))
    from weathertweets.backends.sqlite import path_from_url
    from weathertweets.backends.sqlite_counters import SqliteCounters

    return SqliteCounters(path_from_url(url))
