"""Who may write and read, and how fast: bearer keys and a token bucket per caller.

Keys come from `WT_API_KEYS` (comma-separated) and `WT_API_KEYS_FILE` (one per line, `#`
comments). With no write key configured, writes are anonymous (the loopback default; the CLI
refuses to listen elsewhere that way unless told `--allow-anonymous`). Reads are public unless
`WT_READ_KEYS` names keys (a write key may read too). Keys are compared in constant time and
never logged: a caller is known by a short hash of its key.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from weathertweets.web import HTTPError, Request

ANONYMOUS = "anonymous"


def load_keys(inline: str, file: str = "") -> frozenset[str]:
    keys = {k.strip() for k in inline.split(",") if k.strip()}
    if file:
        for line in Path(file).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                keys.add(line)
    return frozenset(keys)


def caller_id(key: str) -> str:
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _bearer(request: Request) -> str | None:
    raw = request.header(b"authorization")
    if raw is None:
        return None
    scheme, _, token = raw.decode("latin-1").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else ""


def _matches(token: str, keys: Iterable[str]) -> bool:
    found = False
    for key in keys:  # every key compared, in constant time each: no early exit to time
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


@dataclass(frozen=True)
class Access:
    write_keys: frozenset[str] = frozenset()
    read_keys: frozenset[str] = frozenset()

    @property
    def open_writes(self) -> bool:
        return not self.write_keys

    def writer(self, request: Request) -> str:
        """The caller's id for a write; 401 without a key, 403 with a wrong one."""
        return self._check(request, self.write_keys)

    def reader(self, request: Request) -> str:
        if not self.read_keys:
            return ANONYMOUS
        return self._check(request, self.read_keys | self.write_keys)

    @staticmethod
    def _check(request: Request, keys: frozenset[str]) -> str:
        if not keys:
            return ANONYMOUS
        token = _bearer(request)
        if token is None:
            raise HTTPError(
                401,
                "unauthenticated",
                "send Authorization: Bearer <key>",
                "authorization",
                headers=[(b"www-authenticate", b'Bearer realm="weathertweets"')],
            )
        if not _matches(token, keys):
            raise HTTPError(403, "forbidden", "this key may not do that", "authorization")
        return caller_id(token)


class RateLimiter:
    """A token bucket per caller: `rate` tweets a second, bursts up to `burst`. Remembers at
    most `callers` buckets (the least recently used go first), so memory stays bounded."""

    def __init__(self, rate: float, burst: float | None = None, callers: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self._callers = callers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, caller: str, cost: int = 1) -> None:
        """Spend `cost` tokens, or raise 429 with the seconds until they are there."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        tokens, at = self._buckets.pop(caller, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if cost > self.burst:
            raise HTTPError(
                429, "rate_limited", f"at most {self.burst:g} tweets at once for this caller"
            )
        if tokens < cost:
            wait = max(1, int((cost - tokens) / self.rate + 0.999))
            self._buckets[caller] = (tokens, now)
            raise HTTPError(
                429,
                "rate_limited",
                f"more than {self.rate:g} tweets a second; retry in {wait} s",
                headers=[(b"retry-after", str(wait).encode())],
            )
        self._buckets[caller] = (tokens - cost, now)
        while len(self._buckets) > self._callers:
            self._buckets.popitem(last=False)
