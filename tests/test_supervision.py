"""Failure policy of the consumer loop and of the process's background tasks (unit tests with a
scripted consumer; the real adapters' dead-letter destinations are in the contract suite)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from weathertweets.domain import encode_record, make_tweet
from weathertweets.metrics import DEAD_LETTERS
from weathertweets.ports import BackendUnavailable, Message, SinkRejected
from weathertweets.runtime import Supervisor
from weathertweets.services.consuming import consume


class ScriptedConsumer:
    """Hands out its records once, then nothing; remembers what was committed."""

    def __init__(self, values: list[bytes]) -> None:
        self.pending = [Message(0, i, v, "messages") for i, v in enumerate(values)]
        self.committed: list[int] = []

    async def poll(self, max_records: int, timeout: float) -> list[Message]:
        batch, self.pending = self.pending[:max_records], self.pending[max_records:]
        if not batch:
            await asyncio.sleep(0.01)
        return batch

    async def commit(self, messages: Sequence[Message]) -> None:
        self.committed += [m.offset for m in messages]

    async def lag(self) -> int:
        return len(self.pending)

    async def close(self) -> None:
        pass


class Letters:
    def __init__(self) -> None:
        self.kept: list[tuple[str, int, str]] = []

    async def __call__(self, group: str, messages: Sequence[Message], reason: str) -> None:
        self.kept += [(group, m.offset, reason) for m in messages]


def _values(n: int) -> list[bytes]:
    return [encode_record(make_tweet(f"Sol {i}", "Chile")) for i in range(n)]


async def _run_until_committed(consumer: ScriptedConsumer, sink, letters: Letters, n: int) -> None:
    stopping = asyncio.Event()
    task = asyncio.create_task(consume("test", consumer, sink, stopping, letters))
    for _ in range(500):
        if len(consumer.committed) >= n or task.done():
            break
        await asyncio.sleep(0.01)
    stopping.set()
    await task


async def test_an_unavailable_backend_is_retried_until_it_is_back() -> None:
    consumer, letters, attempts = ScriptedConsumer(_values(3)), Letters(), []

    async def flaky(batch: list) -> None:  # type: ignore[type-arg]
        attempts.append(len(batch))
        if len(attempts) < 3:
            raise BackendUnavailable("store restarting")

    await _run_until_committed(consumer, flaky, letters, 3)
    assert attempts == [3, 3, 3] and consumer.committed == [0, 1, 2] and not letters.kept


async def test_records_that_are_not_tweets_go_to_the_dead_letters_and_the_rest_on() -> None:
    values = _values(2)
    consumer, letters = ScriptedConsumer([values[0], b"{not json", values[1]]), Letters()
    sunk: list[int] = []

    async def sink(batch: list) -> None:  # type: ignore[type-arg]
        sunk.extend(m.offset for m, _ in batch)

    before = DEAD_LETTERS.labels("test")._value.get()
    await _run_until_committed(consumer, sink, letters, 3)
    assert sunk == [0, 2] and consumer.committed == [0, 1, 2]
    assert [(g, o) for g, o, _ in letters.kept] == [("test", 1)]
    assert letters.kept[0][2].startswith("not a tweet")
    assert DEAD_LETTERS.labels("test")._value.get() == before + 1


async def test_records_a_sink_refuses_for_good_are_dead_lettered_the_rest_stored() -> None:
    consumer, letters = ScriptedConsumer(_values(4)), Letters()
    stored: list[int] = []

    async def picky(batch: list) -> None:  # type: ignore[type-arg]
        refused = [i for i, (m, _) in enumerate(batch) if m.offset == 2]
        if refused:
            raise SinkRejected("document too large", refused)
        stored.extend(m.offset for m, _ in batch)

    await _run_until_committed(consumer, picky, letters, 4)
    assert stored == [0, 1, 3] and consumer.committed == [0, 1, 2, 3]
    assert [(o, r) for _, o, r in letters.kept] == [(2, "refused by the sink: document too large")]


async def test_a_bug_in_a_sink_is_fatal_not_retried_forever() -> None:
    consumer, letters = ScriptedConsumer(_values(2)), Letters()

    async def broken(batch: list) -> None:  # type: ignore[type-arg]
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        await _run_until_committed(consumer, broken, letters, 2)
    assert consumer.committed == []  # nothing acknowledged: the records come back on restart


async def test_a_dead_task_stops_the_process_and_fails_readiness() -> None:
    stopping = asyncio.Event()
    supervisor = Supervisor(stopping)
    await supervisor.check()  # healthy

    async def dies() -> None:
        raise RuntimeError("boom")

    async def lives() -> None:
        await asyncio.sleep(3600)

    supervisor.spawn("worker", dies())
    survivor = supervisor.spawn("other", lives())
    await asyncio.wait_for(stopping.wait(), 5)
    assert supervisor.failures == ["worker"]
    with pytest.raises(BackendUnavailable, match="worker"):
        await supervisor.check()
    await supervisor.stop()
    assert survivor.cancelled()
