"""Redis counters via redis-py asyncio (hiredis parser), keyed for Grafana's Redis datasource.

Keys (prefix default `wt:`): `total` (string), `countries` (hash pais→n), `texts` (hash texto→n),
`country:<pais>` (hash texto→n, the seed's `HINCRBY pais texto 1`), `rank:countries` and
`rank:texts` (sorted sets, for top-N), `conditions` (hash condition→n), `conditions:<pais>`
(hash condition→n), `recent` (stream, capped), and `offsets:<group>` (hash partition→next
offset). One Lua script per batch checks the offsets, applies the increments
and moves the offsets, atomically: a replayed record is skipped, never counted twice.

With `seed_keys` (on by default) the same script also keeps the original system's hashes,
`HINCRBY <pais> <texto> n` on the bare country key, so its Grafana panels (`HGETALL <pais>`)
work unchanged. A country whose bare key would fall under our prefix, or that names a key of
another type, gets no seed hash: the script checks before it writes anything, because Redis
does not roll back a script that fails half-way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from weathertweets.ports import BackendUnavailable, CountedTweet, Stats

RECENT_MAX = 1000  # entries kept in the `recent` stream (approximately)
RECENT_PER_BATCH = 200  # the newest tweets of a batch that go to the stream
TEXT_CAP = 5000  # texts kept per country (and overall), the most counted
SEEN_TTL = 2 * 86_400  # seconds an idempotent tweet's id is remembered (keys live 25 h)

# ARGV: prefix, group ('' = direct increments, no offsets), recent_max, recent_per_batch,
# seed_keys ('1' or '0'), seen_ttl, text_cap, then partition, offset, pais, texto, condition, id
# ('' for none) for each record. A record with an id is counted only if `seen:<id>` was not set
# yet. The per-text hashes keep the text_cap most counted texts: past 1.2 × text_cap entries the
# least counted are dropped (the country totals stay exact).
APPLY = """
local prefix, group = ARGV[1], ARGV[2]
local recent_max, recent_per_batch = tonumber(ARGV[3]), tonumber(ARGV[4])
local seed_keys, seen_ttl, text_cap = ARGV[5] == '1', ARGV[6], tonumber(ARGV[7])
local offsets_key = prefix .. 'offsets:' .. group
local next_offset, countries, texts, by_country, fresh = {}, {}, {}, {}, {}
local conditions, country_conditions = {}, {}
local function prune(key)
  if redis.call('HLEN', key) <= text_cap + text_cap / 5 then return end
  local flat, ranked = redis.call('HGETALL', key), {}
  for k = 1, #flat, 2 do ranked[#ranked + 1] = {flat[k], tonumber(flat[k + 1])} end
  table.sort(ranked, function(a, b) return a[2] > b[2] end)
  for k = text_cap + 1, #ranked do redis.call('HDEL', key, ranked[k][1]) end
end
for i = 8, #ARGV, 6 do
  local partition, offset = ARGV[i], tonumber(ARGV[i + 1])
  local start = 0
  if group ~= '' then
    start = next_offset[partition]
    if start == nil then
      start = tonumber(redis.call('HGET', offsets_key, partition) or 0)
    end
  end
  local first = offset >= start
  if first and ARGV[i + 5] ~= '' then
    first = redis.call('SET', prefix .. 'seen:' .. ARGV[i + 5], '1', 'NX', 'EX', seen_ttl) ~= false
    if not first then start = offset + 1 end
  end
  if first then
    local pais, texto = ARGV[i + 2], ARGV[i + 3]
    countries[pais] = (countries[pais] or 0) + 1
    texts[texto] = (texts[texto] or 0) + 1
    local per = by_country[pais] or {}
    per[texto] = (per[texto] or 0) + 1
    by_country[pais] = per
    local condition = ARGV[i + 4]
    conditions[condition] = (conditions[condition] or 0) + 1
    local cc = country_conditions[pais] or {}
    cc[condition] = (cc[condition] or 0) + 1
    country_conditions[pais] = cc
    fresh[#fresh + 1] = i
    start = offset + 1
  end
  if group ~= '' then next_offset[partition] = start end
end
if #fresh > 0 then
  redis.call('INCRBY', prefix .. 'total', #fresh)
end
for pais, n in pairs(countries) do
  redis.call('HINCRBY', prefix .. 'countries', pais, n)
  redis.call('ZINCRBY', prefix .. 'rank:countries', n, pais)
end
for texto, n in pairs(texts) do
  redis.call('HINCRBY', prefix .. 'texts', texto, n)
  redis.call('ZINCRBY', prefix .. 'rank:texts', n, texto)
end
local seed_ok = {}
if seed_keys then
  for pais in pairs(by_country) do
    local kind = redis.call('TYPE', pais)['ok']
    local ours = prefix ~= '' and string.sub(pais, 1, #prefix) == prefix
    seed_ok[pais] = (not ours) and (kind == 'none' or kind == 'hash')
  end
end
for pais, per in pairs(by_country) do
  for texto, n in pairs(per) do
    redis.call('HINCRBY', prefix .. 'country:' .. pais, texto, n)
    if seed_ok[pais] then redis.call('HINCRBY', pais, texto, n) end
  end
end
for condition, n in pairs(conditions) do
  redis.call('HINCRBY', prefix .. 'conditions', condition, n)
end
for pais, per in pairs(country_conditions) do
  for condition, n in pairs(per) do
    redis.call('HINCRBY', prefix .. 'conditions:' .. pais, condition, n)
  end
end
for k = math.max(1, #fresh - recent_per_batch + 1), #fresh do
  local i = fresh[k]
  redis.call('XADD', prefix .. 'recent', 'MAXLEN', '~', recent_max, '*',
             'pais', ARGV[i + 2], 'texto', ARGV[i + 3], 'condition', ARGV[i + 4])
end
for partition, offset in pairs(next_offset) do
  redis.call('HSET', offsets_key, partition, offset)
end
prune(prefix .. 'texts')
for pais in pairs(by_country) do prune(prefix .. 'country:' .. pais) end
if redis.call('ZCARD', prefix .. 'rank:texts') > text_cap + text_cap / 5 then
  redis.call('ZREMRANGEBYRANK', prefix .. 'rank:texts', 0, -(text_cap + 1))
end
return #fresh
"""


def _by_count(pairs: Iterable[tuple[Any, Any]]) -> list[tuple[str, int]]:
    """Most counted first, then by name, as the embedded counters order them."""
    return sorted(((str(k), int(n)) for k, n in pairs), key=lambda kn: (-kn[1], kn[0]))


class RedisCounters:
    def __init__(
        self, url: str, prefix: str = "wt:", *, seed_keys: bool = True, text_cap: int = TEXT_CAP
    ) -> None:
        self.prefix = prefix
        self.seed_keys = seed_keys
        self.text_cap = text_cap
        self._redis = Redis.from_url(
            url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5
        )
        self._apply = self._redis.register_script(APPLY)

    async def start(self) -> None:
        await self.ping()

    async def _run(self, group: str, tweets: Sequence[CountedTweet]) -> int:
        seed = "1" if self.seed_keys else "0"
        args: list[str | int] = [self.prefix, group, RECENT_MAX, RECENT_PER_BATCH, seed, SEEN_TTL]
        args.append(self.text_cap)
        for t in tweets:
            args += [t.partition, t.offset, t.pais, t.texto, t.condition, t.id or ""]
        try:
            return int(await self._apply(args=args))
        except RedisError as error:
            raise BackendUnavailable(f"Redis: {error}") from error

    async def apply(self, group: str, tweets: Sequence[CountedTweet]) -> int:
        if not group:
            raise ValueError("a consumer group name is required")
        return await self._run(group, tweets) if tweets else 0

    async def increment(
        self, pais: str, texto: str, condition: str, by: int = 1, id: str | None = None
    ) -> None:
        if id is not None and by != 1:
            raise ValueError("an increment with an id counts one tweet")
        await self._run("", [CountedTweet(0, 0, pais, texto, condition, id)] * by)

    async def stats(self, top: int = 10) -> Stats:
        p = self.prefix
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(f"{p}total")
                pipe.hgetall(f"{p}countries")
                pipe.zrevrange(f"{p}rank:texts", 0, top - 1, withscores=True)
                pipe.hgetall(f"{p}conditions")
                total, countries, texts, conditions = await pipe.execute()
        except RedisError as error:
            raise BackendUnavailable(f"Redis: {error}") from error
        return Stats(
            int(total or 0),
            dict(_by_count(countries.items())),
            _by_count(texts),
            dict(_by_count(conditions.items())),
        )

    async def country(self, pais: str) -> dict[str, int]:
        try:
            texts = await self._redis.hgetall(f"{self.prefix}country:{pais}")
        except RedisError as error:
            raise BackendUnavailable(f"Redis: {error}") from error
        return dict(_by_count(texts.items()))

    async def country_conditions(self) -> dict[str, dict[str, int]]:
        try:
            countries = [str(p) for p in await self._redis.hkeys(f"{self.prefix}countries")]
            async with self._redis.pipeline(transaction=False) as pipe:
                for pais in countries:
                    pipe.hgetall(f"{self.prefix}conditions:{pais}")
                found = await pipe.execute()
        except RedisError as error:
            raise BackendUnavailable(f"Redis: {error}") from error
        return {
            pais: dict(_by_count(counts.items()))
            for pais, counts in zip(countries, found, strict=True)
        }

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as error:
            raise BackendUnavailable(f"Redis: {error}") from error

    async def close(self) -> None:
        await self._redis.aclose()
