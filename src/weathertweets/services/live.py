"""The live view behind the dashboard page: one snapshot a second, shared by every viewer.

A snapshot holds the counts, the weather per country, the map's ISO codes, recent tweets,
tweets/s over the last ten minutes, end-to-end latency of the newest archived tweets, and the
energy estimate. It is built only while someone watches (`subscribe`) or asks (`snapshot`);
the history behind tweets/s is sampled all the time (`keep_history`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator

import msgspec
from prometheus_client import REGISTRY

from weathertweets import schemas
from weathertweets.countries import iso_codes
from weathertweets.energy import KWH_PER_JOULE, EnergyModel
from weathertweets.ports import BackendUnavailable, Counters, Store

log = logging.getLogger("weathertweets.live")
HISTORY_SECONDS = 600
MAX_VIEWERS = 200  # open live streams per process; more get 503
PERIOD = 1.0
SAMPLE_EVERY = 5.0  # the tweets/s history is kept even while no one watches


MAX_COUNTRIES = 250  # the most a snapshot lists; the rest are summed under OTHERS
OTHERS = "(otros)"


def _bounded(countries: dict[str, int]) -> dict[str, int]:
    """The top MAX_COUNTRIES (counts come sorted, largest first), the rest as one entry, so a
    snapshot stays small even when unknown countries are accepted."""
    if len(countries) <= MAX_COUNTRIES:
        return countries
    ranked = list(countries.items())
    kept = dict(ranked[:MAX_COUNTRIES])
    kept[OTHERS] = sum(n for _, n in ranked[MAX_COUNTRIES:])
    return kept


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class LiveFeed:
    def __init__(
        self,
        store: Store,
        counters: Counters,
        energy: EnergyModel | None,
        grid_gco2_per_kwh: float,
        energy_scope: str,
    ) -> None:
        self._store, self._counters, self._energy = store, counters, energy
        self._grid = grid_gco2_per_kwh
        self._scope = energy_scope
        self._history: deque[tuple[float, int]] = deque()
        self._latest: bytes | None = None
        self._changed = asyncio.Condition()
        self._viewers = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def snapshot(self) -> bytes:
        """The newest snapshot, built now if no one is watching."""
        if self._task is None or self._latest is None:
            self._latest = msgspec.json.encode(await self._build())
        return self._latest

    @property
    def full(self) -> bool:
        return self._viewers >= MAX_VIEWERS

    async def subscribe(self) -> AsyncIterator[bytes]:
        """Server-sent events: one `data:` line per snapshot, until the viewer leaves."""
        self._viewers += 1
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="live-feed")
        try:
            yield b"data: " + await self.snapshot() + b"\n\n"
            while not self._closed:
                async with self._changed:
                    await self._changed.wait()
                if self._closed or self._latest is None:
                    return
                yield b"data: " + self._latest + b"\n\n"
        finally:
            self._viewers -= 1
            if self._viewers == 0 and self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None

    async def close(self) -> None:
        """End every viewer's stream (so a shutdown does not wait for browsers)."""
        self._closed = True
        async with self._changed:
            self._changed.notify_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def keep_history(self) -> None:
        """Sample the total every few seconds, forever, so a page opened now charts the last
        ten minutes. A backend hiccup skips a sample; it never ends the task."""
        while not self._closed:
            try:
                self._remember((await self._counters.stats(top=1)).total)
            except BackendUnavailable as error:
                log.debug("history sample skipped: %s", error)
            await asyncio.sleep(SAMPLE_EVERY)

    def _remember(self, total: int) -> None:
        now = time.time()
        if not self._history or now - self._history[-1][0] >= 0.5:
            self._history.append((now, total))
        while self._history and self._history[0][0] < now - HISTORY_SECONDS:
            self._history.popleft()

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self._latest = msgspec.json.encode(await self._build())
                async with self._changed:
                    self._changed.notify_all()
            except Exception as error:  # a backend hiccup: keep the last snapshot, try again
                log.warning("live snapshot failed: %s", error)
            await asyncio.sleep(max(0.05, PERIOD - (time.monotonic() - started)))

    async def _build(self) -> schemas.Dashboard:
        stats, archived, per_country, recent = await asyncio.gather(
            self._counters.stats(top=10),
            self._store.count(),
            self._counters.country_conditions(),
            self._store.recent(None, 100),
        )
        now = time.time()
        self._remember(stats.total)
        rates = [
            schemas.Rate(t=round(t1, 1), rate=round((n1 - n0) / (t1 - t0), 2))
            for (t0, n0), (t1, n1) in zip(self._history, list(self._history)[1:], strict=False)
            if t1 > t0
        ]
        latencies = [
            (d.archived_at - d.tweet.received_at).total_seconds() for d in recent if d.archived_at
        ]
        countries = _bounded(stats.countries)
        per_country = {p: per_country[p] for p in countries if p in per_country}
        known, unknown = iso_codes(countries)
        return schemas.Dashboard(
            at=now,
            total=stats.total,
            archived=archived,
            countries=countries,
            top_texts=schemas.text_counts(stats.top_texts),
            map=schemas.MapCounts(iso=known, unknown=unknown),
            conditions=stats.conditions,
            weather=schemas.weather_by_country(per_country),
            recent=[schemas.recent_tweet(d) for d in recent[:15]],
            rates=rates,
            latency=schemas.Latency(
                p50=_percentile(latencies, 0.5),
                p95=_percentile(latencies, 0.95),
                sample=len(latencies),
            ),
            energy=self._energy_view(),
        )

    def _energy_view(self) -> schemas.Energy | None:
        if self._energy is None:
            return None
        joules = self._energy.joules()
        kwh = joules * KWH_PER_JOULE
        accepted = REGISTRY.get_sample_value("weathertweets_tweets_accepted_total") or 0.0
        return schemas.Energy(
            joules=joules,
            kwh=kwh,
            gco2=kwh * self._grid,
            tweets=int(accepted),
            joules_per_1000_tweets=joules / accepted * 1000 if accepted else None,
            scope=self._scope,
            model=(
                f"CPU-time estimate: cpu_s × ({self._energy.max_watts} − "
                f"{self._energy.min_watts}) W + wall_s × {self._energy.min_watts} W per process "
                "(Cloud Carbon Footprint's Google Cloud vCPU coefficients); CO2 at "
                f"{self._grid:g} gCO2e/kWh (IEA world average, 2019)"
            ),
        )
