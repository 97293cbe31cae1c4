"""Group commit: concurrent submissions leave together; failures reach every submitter."""

from __future__ import annotations

import asyncio
import gc

import pytest

from weathertweets.batching import Batcher
from weathertweets.ports import BackendUnavailable


async def test_concurrent_submissions_are_coalesced() -> None:
    calls: list[list[int]] = []

    async def flush(items: list[int]) -> None:
        calls.append(items)
        await asyncio.sleep(0.01)

    batcher = Batcher(flush, max_batch=1000, max_in_flight=1)
    await asyncio.gather(*(batcher.submit([i]) for i in range(500)))
    assert sorted(i for call in calls for i in call) == list(range(500))
    assert len(calls) < 10  # one flush in flight at a time, the rest pile up behind it
    await batcher.close()


async def test_a_failed_flush_fails_each_of_its_submitters() -> None:
    async def flush(items: list[int]) -> None:
        raise BackendUnavailable("down")

    batcher = Batcher(flush)
    results = await asyncio.gather(*(batcher.submit([i]) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, BackendUnavailable) for r in results)
    await batcher.close()


async def test_a_failure_and_its_submitters_make_no_reference_cycle() -> None:
    """Each submitter raises the flush's error, whose traceback holds the frames it crossed;
    were one of them to hold the error (a future, a local), the pair would wait for the
    cyclic collector, which the services run rarely (`collector.quiet`)."""

    async def flush(items: list[int]) -> None:
        raise BackendUnavailable("down")

    batcher = Batcher(flush, max_in_flight=1)
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            outcomes = await asyncio.gather(
                *(batcher.submit([i]) for i in range(50)), return_exceptions=True
            )
            assert all(isinstance(o, BackendUnavailable) for o in outcomes)
        del outcomes
        assert gc.collect() == 0
    finally:
        gc.enable()
    await batcher.close()


async def test_max_batch_splits_but_keeps_submissions_whole() -> None:
    sizes: list[int] = []

    async def flush(items: list[int]) -> None:
        sizes.append(len(items))

    batcher = Batcher(flush, max_batch=10, max_in_flight=1)
    await asyncio.gather(batcher.submit(list(range(25))), *(batcher.submit([i]) for i in range(8)))
    assert 25 in sizes  # an oversized submission goes alone, never split
    assert sum(sizes) == 33
    await batcher.close()


async def test_full_queue_is_refused_at_once() -> None:
    gate = asyncio.Event()

    async def flush(items: list[int]) -> None:
        await gate.wait()

    batcher = Batcher(flush, max_in_flight=1, max_pending=10)
    first = asyncio.create_task(batcher.submit(list(range(10))))
    await asyncio.sleep(0.01)
    with pytest.raises(BackendUnavailable):
        await batcher.submit(list(range(11)))
    gate.set()
    await first
    await batcher.close()
