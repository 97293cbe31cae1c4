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
_RANDOM_MAX = (1 << 80) - 1
_lock = threading.Lock()
_last_ms = -1
_last_random = 0


_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # every 10-bit value as two characters
_SHIFTS = range(120, -10, -10)


def _encode(value: int) -> str:
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def new_id(now_ms: int | None = None) -> str:
    """Return a 26-character id greater than every id this process returned before."""
    global _last_ms, _last_random
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            _last_random += 1
            if _last_random > _RANDOM_MAX:  # 2**80 ids in one millisecond: borrow the next one
                ms += 1
                _last_random = int.from_bytes(os.urandom(10), "big") >> 1
        else:
            _last_random = int.from_bytes(os.urandom(10), "big") >> 1  # headroom to increment
        _last_ms = ms
        return _encode((ms << 80) | _last_random)


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
