"""The three ports every service talks to. Adapters live in `weathertweets.backends`.

- Broker: durable append, then consumption by group with committed positions.
- Store: the archive of every tweet (idempotent on id).
- Counters: live counts, applied exactly once per broker record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import msgspec

from weathertweets.domain import Tweet


class BackendUnavailable(RuntimeError):
    """A backend cannot take the request now; the caller should retry later (503)."""


Headers = tuple[tuple[str, bytes], ...]


class SinkRejected(Exception):
    """A sink refuses some records for good (not a transient failure): the consumer sends
    them to the dead-letter destination and goes on. `indexes` are positions in the batch."""

    def __init__(self, message: str, indexes: Sequence[int]) -> None:
        super().__init__(message)
        self.indexes = list(indexes)


class Record(msgspec.Struct, frozen=True, gc=False):
    """One record to publish: the value, an optional key, headers that travel with it.
    (A Struct: made once per tweet, seven times cheaper than a frozen dataclass.)"""

    value: bytes
    key: bytes | None = None
    headers: Headers = ()


class Message(msgspec.Struct, frozen=True, gc=False):
    """One broker record as a consumer sees it; `timestamp_ms` is the broker's, when it has one."""

    partition: int
    offset: int
    value: bytes
    topic: str = ""
    timestamp_ms: int | None = None
    headers: Headers = ()

    @property
    def position(self) -> str:
        """Where the record sits in the log, unique and stable across replays."""
        return f"{self.topic}/{self.partition}/{self.offset}"


class CountedTweet(msgspec.Struct, frozen=True, gc=False):
    """A tweet with the broker position it came from, so counters can apply it exactly once.

    `id` is set for tweets sent with an Idempotency-Key: a retried request may have put the
    same tweet on the broker twice, so those are also counted at most once per id."""

    partition: int
    offset: int
    pais: str
    texto: str
    condition: str = "other"  # weathertweets.weather.classify(texto)
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """What an Idempotency-Key stands for: the request's fingerprint, when it was first seen,
    and (once finished) the answer it got."""

    fingerprint: str
    received_at_us: int
    status: int | None = None
    body: bytes | None = None


class ArchivedTweet(msgspec.Struct, frozen=True, gc=False):
    tweet: Tweet
    archived_at: datetime


@dataclass(slots=True)
class Stats:
    total: int
    countries: dict[str, int]
    top_texts: list[tuple[str, int]] = field(default_factory=list)
    conditions: dict[str, int] = field(default_factory=dict)


class Consumer(Protocol):
    async def poll(self, max_records: int, timeout: float) -> list[Message]:
        """Up to max_records after the group's position; [] when nothing came within timeout."""
        ...

    async def commit(self, messages: Sequence[Message]) -> None:
        """Record that every message given has reached its sink."""
        ...

    async def lag(self) -> int:
        """Records published but not yet committed by this group."""
        ...

    async def close(self) -> None: ...


class Broker(Protocol):
    async def start(self) -> None: ...

    async def publish(self, records: Sequence[Record]) -> None:
        """Return only once every record is durable; raise BackendUnavailable otherwise."""
        ...

    async def dead_letter(self, group: str, messages: Sequence[Message], reason: str) -> None:
        """Keep records a group could not process, with why, for an operator to look at."""
        ...

    def consumer(self, group: str) -> Consumer: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class Store(Protocol):
    async def start(self) -> None: ...

    async def archive(self, docs: Sequence[ArchivedTweet]) -> None:
        """Insert; a document whose id is already stored is left as it is."""
        ...

    async def recent(self, pais: str | None, limit: int) -> list[ArchivedTweet]:
        """Newest first."""
        ...

    async def count(self) -> int: ...

    async def expire(self, received_before: datetime) -> int:
        """Delete the tweets received before that moment (archive retention); how many went."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class Idempotency(Protocol):
    """Idempotency-Keys of write requests, per caller, kept for `ttl` seconds."""

    async def start(self) -> None: ...

    async def claim(self, scope: str, key: str, fingerprint: str, received_at_us: int) -> Claim:
        """The key's claim: a new one with these values, or the one already there."""
        ...

    async def complete(self, scope: str, key: str, status: int, body: bytes) -> None: ...

    async def close(self) -> None: ...


class Counters(Protocol):
    async def start(self) -> None: ...

    async def apply(self, group: str, tweets: Sequence[CountedTweet]) -> int:
        """Count each (partition, offset) at most once, atomically with its position.

        Returns how many tweets were newly counted (replays are skipped).
        """
        ...

    async def increment(
        self, pais: str, texto: str, condition: str, by: int = 1, id: str | None = None
    ) -> None:
        """A direct increment outside the broker (the seed's `POST /set`); with `id`, at most
        once per id."""
        ...

    async def stats(self, top: int = 10) -> Stats: ...

    async def country(self, pais: str) -> dict[str, int]: ...

    async def country_conditions(self) -> dict[str, dict[str, int]]:
        """{pais: {condition: n}} for every country."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
