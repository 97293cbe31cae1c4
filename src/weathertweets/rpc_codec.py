"""Tweets on the gRPC wire: protobuf ⇄ Tweet, with what ingest trusts and what it checks.

Ids, times and the `keyed` mark are ours: only an authenticated internal caller (the gateway)
may set them, and even then they are checked (id shape, a time within a sane window, no
duplicate ids in one batch). Anyone else gets ids and times made by ingest. Sizes are checked
on the raw bytes before anything is decoded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from weathertweets.domain import MAX_TEXTO, InvalidTweet, Tweet, clean_country, clean_text
from weathertweets.ids import ALPHABET, new_id
from weathertweets.proto import ingest_pb2

FUTURE_US = 60 * 1_000_000  # clock skew between hosts
# A retried keyed write keeps its first time, for as long as its key lives (25 h): accept that
# and an hour more, so clock skew never turns a late retry into a lost tweet.
PAST_US = 26 * 3600 * 1_000_000
_ID_CHARS = frozenset(ALPHABET)


def to_pb(tweet: Tweet, headers: Mapping[str, str] | None = None) -> ingest_pb2.Tweet:
    micros = round(tweet.received_at.timestamp() * 1_000_000)
    return ingest_pb2.Tweet(
        texto=tweet.texto,
        pais=tweet.pais,
        id=tweet.id,
        received_at_us=micros,
        headers=headers,
        keyed=tweet.keyed,
    )


def from_pb(message: ingest_pb2.Tweet, *, trusted: bool, accept_unknown: bool = False) -> Tweet:
    """Validate a tweet that arrived over gRPC."""
    texto = clean_text(message.texto, "texto", MAX_TEXTO)
    pais = clean_country(message.pais, accept_unknown)
    if not trusted:
        if message.id or message.received_at_us or message.keyed:
            raise InvalidTweet("only the gateway sets id, received_at_us and keyed", "id")
        return Tweet(new_id(), texto, pais, datetime.now(UTC))
    received = _received(message.received_at_us)
    if not message.id:
        return Tweet(new_id(), texto, pais, received, keyed=message.keyed)
    if len(message.id) != 26 or not set(message.id) <= _ID_CHARS or message.id[0] > "7":
        raise InvalidTweet("'id' must be a 26-character time-ordered id", "id")
    return Tweet(message.id, texto, pais, received, keyed=message.keyed)


def _received(micros: int) -> datetime:
    now = time.time_ns() // 1000
    if not micros:
        return datetime.fromtimestamp(now / 1_000_000, UTC)
    if not now - PAST_US <= micros <= now + FUTURE_US:
        raise InvalidTweet("'received_at_us' is not a time of the last day", "received_at_us")
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


def unique_ids(tweets: Sequence[Tweet]) -> None:
    if len({t.id for t in tweets}) != len(tweets):
        raise InvalidTweet("the batch repeats an id", "id")


def count_field(data: bytes, number: int, stop_after: int | None = None) -> int:
    """How many times top-level field `number` occurs in an encoded message, read from its
    tags alone: the size of a batch before anything in it is decoded. Stops once the count
    passes `stop_after`, so its cost is bounded too. Raises ValueError on bytes that are not
    protobuf, or that carry any other top-level field."""
    count, at, end = 0, 0, len(data)
    while at < end:
        tag, at = _varint(data, at)
        kind = tag & 7
        if tag >> 3 != number:
            raise ValueError(f"unexpected field {tag >> 3}")
        count += 1
        if stop_after is not None and count > stop_after:
            return count
        if kind == 0:
            _, at = _varint(data, at)
        elif kind == 1:
            at += 8
        elif kind == 2:
            length, at = _varint(data, at)
            at += length
        elif kind == 5:
            at += 4
        else:
            raise ValueError(f"wire type {kind} at byte {at}")
    if at != end:
        raise ValueError("truncated message")
    return count


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
