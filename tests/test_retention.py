"""Retention on real SQLite files: the embedded broker's old and committed records go, the file
shrinks, nothing a group still needs is lost, offsets never go back; and the opt-in archive
retention deletes what is older than it keeps."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from weathertweets.backends.sqlite_broker import NEWEST, OLDEST, SqliteBroker
from weathertweets.backends.sqlite_retention import Retention
from weathertweets.backends.sqlite_store import SqliteStore
from weathertweets.domain import make_tweet
from weathertweets.ports import ArchivedTweet, BackendUnavailable, Record
from weathertweets.services.archiver import expire_forever

AGED = Retention(max_age_s=0.05, max_bytes=0, interval_s=3600, chunk=500)


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[SqliteBroker]:
    broker = SqliteBroker(tmp_path / "broker.db", retention=AGED)
    await broker.start()
    yield broker
    await broker.close()


async def _publish(broker: SqliteBroker, count: int, size: int = 200) -> None:
    for start in range(0, count, 1000):
        batch = min(1000, count - start)
        await broker.publish([Record(b"%08d" % (start + i) + b"x" * size) for i in range(batch)])


async def _consume_all(broker: SqliteBroker, group: str) -> list[int]:
    consumer = broker.consumer(group)
    offsets: list[int] = []
    while messages := await consumer.poll(5000, 0.2):
        offsets += [m.offset for m in messages]
        await consumer.commit(messages)
    await consumer.close()
    return offsets


def _rows(path: Path) -> tuple[int, int, int]:
    with sqlite3.connect(path) as conn:
        count, low, high = conn.execute(
            "SELECT count(*), min(offset), max(offset) FROM log"
        ).fetchone()
    return int(count), int(low or 0), int(high or 0)


async def test_committed_old_records_go_and_the_file_shrinks(
    opened: SqliteBroker, tmp_path: Path
) -> None:
    await _publish(opened, 6000, size=1000)
    assert len(await _consume_all(opened, "archiver")) == 6000
    assert len(await _consume_all(opened, "counter")) == 6000
    size_before = (tmp_path / "broker.db").stat().st_size
    await asyncio.sleep(0.1)
    trimmed = await opened.trimmer.trim()
    assert trimmed.records == 5999 and trimmed.held_by is None
    assert trimmed.pages_freed > 1000
    with sqlite3.connect(tmp_path / "broker.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert (tmp_path / "broker.db").stat().st_size < size_before / 4
    assert _rows(tmp_path / "broker.db") == (1, 6000, 6000)  # the newest stays: offsets go on
    await _publish(opened, 10)
    assert _rows(tmp_path / "broker.db") == (11, 6000, 6010)
    later = opened.consumer("archiver")
    assert [m.offset for m in await later.poll(100, 1)] == list(range(6001, 6011))
    await later.close()


async def test_a_group_that_has_not_committed_holds_its_records(
    opened: SqliteBroker, tmp_path: Path
) -> None:
    await _publish(opened, 3000)
    await _consume_all(opened, "archiver")
    slow = opened.consumer("counter")
    first = await slow.poll(1200, 1)
    await slow.commit(first)  # committed up to offset 1200
    await asyncio.sleep(0.1)
    trimmed = await opened.trimmer.trim()
    assert trimmed.held_by == "counter" and trimmed.records == 1200
    assert _rows(tmp_path / "broker.db")[1] == 1201
    rest = await slow.poll(5000, 1)
    assert [m.offset for m in rest] == list(range(1201, 3001))  # nothing it needs is gone
    await slow.close()


async def test_no_group_yet_means_nothing_is_trimmed_unless_forced(tmp_path: Path) -> None:
    broker = SqliteBroker(tmp_path / "broker.db", retention=AGED)
    await broker.start()
    await _publish(broker, 100)
    await asyncio.sleep(0.1)
    assert (await broker.trimmer.trim()).records == 0
    await broker.close()
    forced = Retention(max_age_s=0.05, max_bytes=0, force=True, interval_s=3600)
    broker = SqliteBroker(tmp_path / "broker.db", retention=forced)
    await broker.start()
    assert (await broker.trimmer.trim()).records == 99
    await broker.close()


async def test_size_retention_trims_oldest_first(tmp_path: Path) -> None:
    bounded = Retention(max_age_s=0, max_bytes=2 << 20, interval_s=3600, chunk=500)
    broker = SqliteBroker(tmp_path / "broker.db", retention=bounded)
    await broker.start()
    await _publish(broker, 8000, size=1000)  # ~8 MB of records
    await _consume_all(broker, "archiver")
    trimmed = await broker.trimmer.trim()
    count, low, high = _rows(tmp_path / "broker.db")
    assert high == 8000 and low == 8001 - count and count < 8000
    assert 1000 < count * 1050 < 2.5 * (1 << 20) and trimmed.records == 8000 - count
    await broker.close()


async def test_the_trimmer_runs_by_itself_while_consuming(tmp_path: Path) -> None:
    often = Retention(max_age_s=0.05, max_bytes=0, interval_s=0.2)
    broker = SqliteBroker(tmp_path / "broker.db", retention=often)
    await broker.start()
    await _publish(broker, 500)
    await _consume_all(broker, "archiver")
    for _ in range(50):
        await asyncio.sleep(0.1)
        if _rows(tmp_path / "broker.db")[0] == 1:
            break
    assert _rows(tmp_path / "broker.db") == (1, 500, 500)
    await broker.close()


async def test_the_archive_retention_pass_deletes_what_is_older_and_carries_on(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "store.db")
    await store.start()
    now = datetime.now(UTC)
    ages = [timedelta(days=40), timedelta(days=31), timedelta(days=2), timedelta(0)]
    await store.archive(
        [ArchivedTweet(make_tweet(f"t{i}", "Chile", now - age), now) for i, age in enumerate(ages)]
    )
    task = asyncio.create_task(expire_forever(store, timedelta(days=30), interval=0.05))
    for _ in range(40):
        await asyncio.sleep(0.05)
        if await store.count() == 2:
            break
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await store.count() == 2
    assert [d.tweet.texto for d in await store.recent(None, 10)] == ["t3", "t2"]
    await store.close()


async def test_an_open_group_that_has_not_committed_yet_holds_the_log(
    opened: SqliteBroker, tmp_path: Path
) -> None:
    await _publish(opened, 100)
    counter = opened.consumer("counter")  # open; its first sink call is still retrying
    await _consume_all(opened, "archiver")
    await asyncio.sleep(0.1)
    trimmed = await opened.trimmer.trim()
    assert (trimmed.records, trimmed.held_by) == (0, "counter")
    assert [m.offset for m in await counter.poll(1000, 1)] == list(range(1, 101))
    await counter.close()


async def test_a_failed_read_while_lingering_loses_nothing(
    opened: SqliteBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _publish(opened, 3)
    consumer = opened.consumer("archiver")
    await consumer.lag()  # opens its partition's reader
    reader = consumer._readers[0].db
    real, calls = reader.run, []

    async def flaky(job: Any) -> Any:
        calls.append(job)
        if len(calls) == 2:  # the read after the linger
            raise BackendUnavailable("sqlite broker.db: database is locked")
        return await real(job)

    monkeypatch.setattr(reader, "run", flaky)
    assert [m.offset for m in await consumer.poll(100, 1)] == [1, 2, 3]
    await consumer.close()


async def test_the_log_s_ends_are_read_from_the_index_not_a_scan(
    opened: SqliteBroker, tmp_path: Path
) -> None:
    await _publish(opened, 10)
    with sqlite3.connect(tmp_path / "broker.db") as conn:
        for query in (NEWEST, OLDEST):  # lag() runs them every second in every consumer
            plan = " ".join(str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + query))
            assert "SCAN" not in plan, (query, plan)
