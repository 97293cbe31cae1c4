"""Idempotency-Keys in Redis, beside the counters: one hash per (caller, key), expiring.

`<prefix>idem:<caller>:<sha256 of key>` holds the request's fingerprint, when it was first
seen, and, once answered, the status and body. Claiming is one script: create if absent,
return what is there either way.
"""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis
from redis.exceptions import RedisError

from weathertweets.ports import BackendUnavailable, Claim

COMPLETE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'status', ARGV[1], 'body', ARGV[2])
end
"""
CLAIM = """
if not redis.call('HGET', KEYS[1], 'fp') then
  redis.call('HDEL', KEYS[1], 'status', 'body')
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'at', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return redis.call('HMGET', KEYS[1], 'fp', 'at', 'status', 'body')
"""


class RedisIdempotency:
    def __init__(self, url: str, prefix: str = "wt:", ttl: int = 90_000) -> None:
        self._prefix, self._ttl = prefix, ttl
        self._redis = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._claim = self._redis.register_script(CLAIM)
        self._complete = self._redis.register_script(COMPLETE)

    def _key(self, scope: str, key: str) -> str:
        return f"{self._prefix}idem:{scope}:{hashlib.sha256(key.encode()).hexdigest()}"

    async def start(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as error:
            raise BackendUnavailable(f"Redis: {error}") from error

    async def claim(self, scope: str, key: str, fingerprint: str, received_at_us: int) -> Claim:
        try:
            found = await self._claim(
                keys=[self._key(scope, key)], args=[fingerprint, received_at_us, self._ttl]
            )
        except RedisError as error:
            raise BackendUnavailable(f"Redis: {error}") from error
        fp, at, status, body = found
        return Claim(fp.decode(), int(at), int(status) if status else None, body)

    async def complete(self, scope: str, key: str, status: int, body: bytes) -> None:
        try:
            await self._complete(keys=[self._key(scope, key)], args=[status, body])
        except RedisError as error:
            raise BackendUnavailable(f"Redis: {error}") from error

    async def close(self) -> None:
        await self._redis.aclose()
