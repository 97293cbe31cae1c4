"""Time-ordered unique ids (ULID layout: 48-bit milliseconds, 80 random bits, Crockford base32).

Ids from one process are strictly increasing, even within one millisecond, so sorting by id
sorts by arrival; ids from different processes are ordered to the millisecond.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last = -1  # the last id handed out, as its 128-bit value: milliseconds << 80 | random


_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # every 10-bit value as two characters
_SHIFTS = range(120, -10, -10)


def _encode(value: int) -> str:
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


_prefix = (-1, "")  # the last (value >> 10, its first 24 characters) encoded


def _encode_run(first: int, count: int) -> list[str]:
    """Ids for `count` consecutive values: the first 24 characters change only every 1 024
    values, so most ids, in a batch or one after another, cost one lookup."""
    global _prefix
    made = []
    high, prefix = _prefix
    for value in range(first, first + count):
        if value >> 10 != high:
            high, prefix = value >> 10, _encode(value)[:24]
        made.append(prefix + _PAIRS[value & 1023])
    _prefix = (high, prefix)
    return made


def _reserve(count: int, now_ms: int | None) -> int:
    """The first of `count` values greater than every one reserved before. A new millisecond
    starts at a random point with room to count up; more ids than that room in one millisecond
    carry into the next one."""
    global _last
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    with _lock:
        if ms > _last >> 80:
            first = ms << 80 | int.from_bytes(os.urandom(10), "big") >> 1
        else:
            first = _last + 1
        _last = first + count - 1
        return first


def new_id(now_ms: int | None = None) -> str:
    """Return a 26-character id greater than every id this process returned before."""
    return _encode_run(_reserve(1, now_ms), 1)[0]


def new_ids(count: int, now_ms: int | None = None) -> list[str]:
    """`count` increasing ids, all greater than every id this process returned before."""
    return _encode_run(_reserve(count, now_ms), count) if count > 0 else []


def id_time_ms(tweet_id: str) -> int:
    """The millisecond timestamp an id was made at."""
    value = 0
    for char in tweet_id[:10]:
        value = value * 32 + ALPHABET.index(char)
    return value


def derived_id(source: str, ms: int) -> str:
    """A deterministic id for a record that arrived without one (`source` names its position).

    The same position always gives the same id, so a replayed record is recognised downstream;
    the time part keeps it ordered with the ids made by `new_id`.
    """
    digest = hashlib.blake2b(source.encode(), digest_size=10).digest()
    return _encode((max(0, ms) << 80) | int.from_bytes(digest, "big"))
