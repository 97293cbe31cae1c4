"""Group commit: coalesce concurrent submissions into batches for one slow, batch-friendly call.

While one flush is in flight, new submissions pile up and leave together in the next one, so a
busy system makes few large calls (one gRPC round trip, one fsync) and an idle one adds no delay.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from weathertweets.ports import BackendUnavailable

T = TypeVar("T")


class Batcher(Generic[T]):
    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[None]],
        *,
        max_batch: int = 2000,
        max_in_flight: int = 4,
        max_pending: int = 200_000,
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._slots = asyncio.Semaphore(max_in_flight)
        self._pending: deque[tuple[Sequence[T], asyncio.Future[None]]] = deque()
        self._pending_items = 0
        self._wakeup = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        return self._pending_items

    async def submit(self, items: Sequence[T]) -> None:
        """Return once `items` were flushed; raise what the flush raised."""
        if self._pending_items + len(items) > self._max_pending:
            raise BackendUnavailable("too many tweets waiting for the broker")
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="batcher")
        done = asyncio.get_running_loop().create_future()
        self._pending.append((items, done))
        self._pending_items += len(items)
        self._idle.clear()
        self._wakeup.set()
        try:
            await done
        finally:
            del done  # a failure's traceback holds this frame: it must not hold the failure

    async def drain(self) -> None:
        """Wait until everything submitted so far has been flushed (or failed)."""
        await self._idle.wait()

    async def close(self) -> None:
        await self.drain()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self._slots.acquire()
                task = asyncio.create_task(self._flush_entries(self._take()))
                self._in_flight.add(task)
                task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not self._pending and not self._in_flight:
            self._idle.set()

    def _take(self) -> list[tuple[Sequence[T], asyncio.Future[None]]]:
        taken: list[tuple[Sequence[T], asyncio.Future[None]]] = []
        size = 0
        while self._pending and (not taken or size + len(self._pending[0][0]) <= self._max_batch):
            entry = self._pending.popleft()
            taken.append(entry)
            size += len(entry[0])
        self._pending_items -= size
        return taken

    async def _flush_entries(self, entries: list[tuple[Sequence[T], asyncio.Future[None]]]) -> None:
        items = [item for chunk, _ in entries for item in chunk]
        failure: Exception | None = None
        try:
            await self._flush(items)
        except asyncio.CancelledError:
            failure = BackendUnavailable("shutting down")
        except Exception as error:
            # The waiters get the error with the frames it came through, but not this one: it
            # holds `entries`, and so the waiters' futures, which will hold the error.
            failure = error.with_traceback(error.__traceback__ and error.__traceback__.tb_next)
        finally:
            self._slots.release()
        for _, done in entries:
            if done.done():
                continue
            if failure is None:
                done.set_result(None)
            else:
                done.set_exception(failure)
