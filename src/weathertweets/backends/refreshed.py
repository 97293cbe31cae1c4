"""A read that costs its engine a scan, served from its last result and refreshed behind it.

The first call waits for a result; later calls answer at once, and one that finds the result
older than `max_age` (or than ten times the last refresh took, whichever is longer) starts one
refresh in the background. So readers never wait on the scan, however large the data grows,
and the engine spends at most about a tenth of its time on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("weathertweets.store")
FETCH_TIMEOUT = 120.0  # a scan that takes longer is abandoned; the next reader starts another


class Refreshed(Generic[T]):
    def __init__(self, fetch: Callable[[], Awaitable[T]], max_age: float = 1.0) -> None:
        self._fetch = fetch
        self._max_age = max_age
        self._value: T | None = None
        self._at = 0.0
        self._took = 0.0
        self._running: asyncio.Task[T] | None = None

    async def get(self) -> T:
        if self._value is None:
            return await asyncio.shield(self._refresh())
        if time.monotonic() - self._at > max(self._max_age, 10 * self._took):
            self._refresh()
        return self._value

    def _refresh(self) -> asyncio.Task[T]:
        if self._running is None:
            self._running = asyncio.create_task(self._run())
            self._running.add_done_callback(_report)
        return self._running

    async def _run(self) -> T:
        started = time.monotonic()
        try:
            async with asyncio.timeout(FETCH_TIMEOUT):
                value = await self._fetch()
        finally:
            self._running = None
        self._value, self._at, self._took = value, time.monotonic(), time.monotonic() - started
        return value


def _report(task: asyncio.Task[object]) -> None:
    """A refresh behind the readers failed: they keep the last value; say so once per failure."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("refreshing a store figure failed: %s", task.exception())
