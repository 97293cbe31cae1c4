"""The contract every adapter of the three ports keeps, run against each available backend."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer as RdConsumer
from confluent_kafka import Producer

from tests.backends import BackendSet, Opened, backend_sets, opened
from weathertweets.backends import sqlite as sqlite_module
from weathertweets.backends.kafka import (
    KafkaBroker,
    consumer_settings,
    parse_url,
    producer_settings,
)
from weathertweets.backends.sqlite import SqliteThread, transaction, vacuum
from weathertweets.domain import encode_record, make_tweet
from weathertweets.ports import ArchivedTweet, BackendUnavailable, Broker, CountedTweet, Record
from weathertweets.weather import classify


@pytest.fixture(params=backend_sets(), ids=lambda b: b.name)
async def backends(request: pytest.FixtureRequest) -> AsyncIterator[Opened]:
    backend_set: BackendSet = request.param
    async with opened(backend_set.new_namespace()) as fresh:
        yield fresh


async def _drain(broker: Broker, group: str, expected: int) -> list[bytes]:
    consumer = broker.consumer(group)
    values: list[bytes] = []
    try:
        for _ in range(100):
            messages = await consumer.poll(1000, timeout=0.5)
            values += [m.value for m in messages]
            await consumer.commit(messages)
            if len(values) >= expected:
                break
    finally:
        await consumer.close()
    return values


async def test_broker_delivers_everything_to_each_group(backends: Opened) -> None:
    broker = backends.broker
    values = [f"tweet-{i}".encode() for i in range(300)]
    await asyncio.gather(
        *(broker.publish([Record(v) for v in values[i : i + 30]]) for i in range(0, 300, 30))
    )
    archived = await _drain(broker, "archiver", 300)
    counted = await _drain(broker, "counter", 300)
    assert sorted(archived) == sorted(values)
    assert sorted(counted) == sorted(values)


async def test_broker_resumes_after_the_last_commit(backends: Opened) -> None:
    broker = backends.broker
    await broker.publish([Record(b"a"), Record(b"b"), Record(b"c")])
    consumer = broker.consumer("g")
    seen: list[bytes] = []
    committed: bytes | None = None
    while len(seen) < 3:
        messages = await consumer.poll(1, timeout=1)
        if messages and committed is None:
            await consumer.commit(messages)  # commit only the first record received
            committed = messages[0].value
        seen += [m.value for m in messages]
    await consumer.close()
    rest = await _drain(broker, "g", 2)
    # uncommitted records come back to the group (order is per partition only)
    assert sorted(rest) == sorted(v for v in (b"a", b"b", b"c") if v != committed)


async def test_broker_reports_lag(backends: Opened) -> None:
    broker = backends.broker
    await broker.publish([Record(b"x")] * 5)
    consumer = broker.consumer("lagging")
    got = []
    for _ in range(40):
        got += await consumer.poll(100, timeout=0.5)
        if len(got) >= 5:
            break
    assert await consumer.lag() == 5
    await consumer.commit(got)
    assert await consumer.lag() == 0
    await consumer.close()


def _archived(n: int, pais: str = "Chile", start: datetime | None = None) -> list[ArchivedTweet]:
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    return [
        ArchivedTweet(make_tweet(f"t{i}", pais, start + timedelta(seconds=i)), datetime.now(UTC))
        for i in range(n)
    ]


async def test_store_archive_is_idempotent(backends: Opened) -> None:
    store = backends.store
    docs = _archived(50)
    await store.archive(docs)
    await store.archive(docs[10:30])  # a replay after a crash
    await store.archive(docs)
    assert await store.count() == 50


async def test_store_recent_is_newest_first_and_filters(backends: Opened) -> None:
    store = backends.store
    await store.archive(_archived(10, "Chile") + _archived(5, "Perú"))
    recent = await store.recent(None, 3)
    assert [d.tweet.texto for d in recent] == ["t9", "t8", "t7"]
    peru = await store.recent("Perú", 100)
    assert [d.tweet.texto for d in peru] == ["t4", "t3", "t2", "t1", "t0"]
    assert all(d.tweet.pais == "Perú" for d in peru)
    assert recent[0].tweet.received_at == datetime(2026, 1, 1, 0, 0, 9, tzinfo=UTC)


async def test_store_takes_a_time_without_a_zone_as_utc(backends: Opened) -> None:
    """A broker record may carry `received_at` without a zone (not one of ours): it is UTC."""
    tweet = make_tweet("Niebla", "Chile", datetime(2026, 1, 1, 12, 30))
    await backends.store.archive([ArchivedTweet(tweet, datetime(2026, 1, 1, 12, 31))])
    [found] = await backends.store.recent(None, 1)
    assert found.tweet.received_at == datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
    assert found.archived_at == datetime(2026, 1, 1, 12, 31, tzinfo=UTC)


def _counted(start: int, pairs: list[tuple[str, str]], partition: int = 0) -> list[CountedTweet]:
    return [CountedTweet(partition, start + i, p, t, classify(t)) for i, (p, t) in enumerate(pairs)]


async def test_counters_count_each_offset_once(backends: Opened) -> None:
    counters = backends.counters
    batch = _counted(0, [("Chile", "Sol"), ("Chile", "Sol"), ("Perú", "Lluvia")])
    assert await counters.apply("counter", batch) == 3
    assert await counters.apply("counter", batch) == 0  # replay of the whole batch
    more = _counted(2, [("Perú", "Lluvia"), ("Perú", "Niebla")])  # overlaps offset 2
    assert await counters.apply("counter", more) == 1
    stats = await counters.stats()
    assert stats.total == 4
    assert stats.countries == {"Chile": 2, "Perú": 2}
    assert dict(stats.top_texts) == {"Sol": 2, "Lluvia": 1, "Niebla": 1}
    assert await counters.country("Perú") == {"Lluvia": 1, "Niebla": 1}
    assert stats.conditions == {"clear": 2, "fog": 1, "rain": 1}
    assert await counters.country_conditions() == {
        "Chile": {"clear": 2},
        "Perú": {"fog": 1, "rain": 1},
    }


async def test_counters_track_partitions_apart(backends: Opened) -> None:
    counters = backends.counters
    await counters.apply("counter", _counted(0, [("Chile", "Sol")] * 3, partition=0))
    await counters.apply("counter", _counted(0, [("Chile", "Sol")] * 2, partition=1))
    assert (await counters.stats()).total == 5


async def test_counters_direct_increment(backends: Opened) -> None:
    counters = backends.counters
    await counters.increment("Guatemala", "Lluvia", "rain")
    await counters.increment("Guatemala", "Lluvia", "rain")
    stats = await counters.stats()
    assert (stats.total, stats.countries) == (2, {"Guatemala": 2})
    assert await counters.country("Guatemala") == {"Lluvia": 2}
    assert await counters.country("Narnia") == {}
    assert stats.conditions == {"rain": 2}


async def test_records_survive_a_restart(backends: Opened) -> None:
    tweet = make_tweet("Nieve", "Noruega")
    await backends.broker.publish([Record(encode_record(tweet))])
    async with opened(backends.namespace) as again:
        values = await _drain(again.broker, "after-restart", 1)
    assert values == [encode_record(tweet)]


async def test_store_expire_deletes_only_what_came_before(backends: Opened) -> None:
    store = backends.store
    await store.archive(_archived(10, "Chile"))
    assert await store.expire(datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)) == 5
    assert await store.expire(datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)) == 0
    kept = await store.recent("Chile", 100)
    assert [d.tweet.texto for d in kept] == ["t9", "t8", "t7", "t6", "t5"]


async def test_a_kafka_consumer_fetches_at_least_the_largest_record_allowed() -> None:
    url = "kafka://127.0.0.1:1?message.max.bytes=4000000"
    assert consumer_settings(parse_url(url), "g")["fetch.max.bytes"] == 4_000_000
    assert consumer_settings(parse_url("kafka://k:9092"), "g")["fetch.max.bytes"] == 2_097_152
    consumer = KafkaBroker(url).consumer("wt-test")  # librdkafka accepts the settings
    await consumer.close()


def test_the_kafka_url_overrides_the_defaults_but_not_the_guarantees(
    caplog: pytest.LogCaptureFixture,
) -> None:
    options = parse_url(
        "kafka://k:9092?linger.ms=20&acks=1&enable.auto.offset.store=true&fetch.wait.max.ms=5"
        "&auto.offset.reset=latest"
    )
    producer = producer_settings(options)
    assert (producer["linger.ms"], producer["socket.timeout.ms"]) == ("20", 5_000)
    assert (producer["acks"], producer["enable.idempotence"]) == ("all", True)
    consumer = consumer_settings(options, "g")
    assert (consumer["fetch.wait.max.ms"], consumer["enable.auto.offset.store"]) == ("5", False)
    assert (consumer["auto.offset.reset"], consumer["enable.auto.commit"]) == ("earliest", True)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("acks=1" in w for w in warned), warned
    assert any("enable.auto.offset.store=true" in w for w in warned), warned
    assert any("auto.offset.reset=latest" in w for w in warned), warned
    caplog.clear()
    producer_settings(parse_url("kafka://k:9092?acks=-1&enable.idempotence=t"))
    consumer_settings(parse_url("kafka://k:9092?auto.offset.reset=smallest"), "g")
    assert not caplog.records
    aliased = producer_settings(parse_url("kafka://k:9092?request.required.acks=1"))
    assert "request.required.acks" not in aliased and aliased["acks"] == "all"
    assert "request.required.acks=1" in caplog.text


def test_a_kafka_consumer_may_fetch_less_than_the_default_largest_record() -> None:
    settings = consumer_settings(parse_url("kafka://k:9092?fetch.max.bytes=500000"), "g")
    assert settings["fetch.max.bytes"] == 1_000_000
    Producer(producer_settings(parse_url("kafka://127.0.0.1:1?request.required.acks=1")))
    RdConsumer(settings)  # librdkafka accepts both


async def test_a_sqlite_thread_runs_jobs_in_order_and_hands_back_their_errors(
    tmp_path: Path,
) -> None:
    db = SqliteThread(tmp_path / "jobs.db", "CREATE TABLE t (n INTEGER)", "test")
    seen: list[int] = []

    def add(n: int) -> Callable[[sqlite3.Connection], int]:
        def job(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO t VALUES (?)", (n,))
            seen.append(n)
            return n

        return job

    assert await asyncio.gather(*(db.run(add(n)) for n in range(50))) == list(range(50))
    assert seen == list(range(50))
    with pytest.raises(ZeroDivisionError):
        await db.run(lambda conn: 1 // 0)
    with pytest.raises(BackendUnavailable, match="no such table"):  # SQLite's own: retry later
        await db.run(lambda conn: conn.execute("SELECT * FROM missing"))
    assert await db.run(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()[0]) == 50
    busy, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        busy.set()
        release.wait(10)

    holding = asyncio.ensure_future(db.run(hold))
    assert await asyncio.to_thread(busy.wait, 10)
    given_up = asyncio.ensure_future(db.run(add(99)))  # queued behind `hold`
    await asyncio.sleep(0.05)
    given_up.cancel()
    release.set()
    await holding
    assert await db.run(add(100)) == 100
    assert 99 not in seen  # its waiter gave up before it began: it never ran
    await db.close()
    with pytest.raises(RuntimeError, match="closed"):
        await db.run(lambda conn: None)
    assert not any(thread.name == "sqlite-test" for thread in threading.enumerate())


async def test_sqlite_writers_queue_on_the_lock_file_not_in_sqlite_s_busy_handler(
    tmp_path: Path,
) -> None:
    """Two connections stand for two processes (flock locks belong to open files). The second
    has no busy timeout: without the lock file it would fail at once with "database is
    locked"; with it, it waits for the first writer and then writes."""
    first = SqliteThread(tmp_path / "log.db", "CREATE TABLE t (n INTEGER)", "first")
    second = SqliteThread(tmp_path / "log.db", "CREATE TABLE IF NOT EXISTS t (n INTEGER)", "second")
    await first.open()
    await second.run(lambda conn: conn.execute("PRAGMA busy_timeout = 0"))
    writing, release = threading.Event(), threading.Event()

    def slow_write(conn: sqlite3.Connection) -> None:
        with transaction(conn):
            conn.execute("INSERT INTO t VALUES (1)")
            writing.set()
            release.wait(10)

    def write(conn: sqlite3.Connection) -> None:
        with transaction(conn):
            conn.execute("INSERT INTO t VALUES (2)")

    holding = asyncio.ensure_future(first.run(slow_write))
    assert await asyncio.to_thread(writing.wait, 10)
    waiting = asyncio.ensure_future(second.run(write))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # queued on the lock file, not failed
    release.set()
    await asyncio.gather(holding, waiting)
    rows = await second.run(lambda conn: conn.execute("SELECT n FROM t ORDER BY n").fetchall())
    assert rows == [(1,), (2,)]
    await first.close()
    await second.close()
    assert (tmp_path / "log.db-lock").exists()


async def test_a_writer_gives_up_on_a_held_lock_file_as_sqlite_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "LOCK_WAIT", 0.3)
    db = SqliteThread(tmp_path / "log.db", "CREATE TABLE t (n INTEGER)", "held")
    await db.open()
    holder = os.open(tmp_path / "log.db-lock", os.O_RDWR)  # another process's hold, stopped
    fcntl.flock(holder, fcntl.LOCK_EX)

    def write(conn: sqlite3.Connection) -> None:
        with transaction(conn):
            conn.execute("INSERT INTO t VALUES (1)")

    with pytest.raises(BackendUnavailable, match="database is locked"):  # a 503, then retried
        await db.run(write)
    os.close(holder)  # released, as the kernel does for a process that dies
    await db.run(write)
    assert await db.run(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()[0]) == 1
    await db.close()


async def test_vacuum_gives_every_page_asked_for_back(tmp_path: Path) -> None:
    db = SqliteThread(tmp_path / "big.db", "CREATE TABLE t (b BLOB)", "vacuum")

    def fill_and_empty(conn: sqlite3.Connection) -> int:
        with transaction(conn):
            conn.executemany("INSERT INTO t VALUES (?)", [(b"x" * 3000,) for _ in range(2000)])
        with transaction(conn):
            conn.execute("DELETE FROM t")
        return int(conn.execute("PRAGMA freelist_count").fetchone()[0])

    def free_after(pages: int) -> Callable[[sqlite3.Connection], int]:
        def job(conn: sqlite3.Connection) -> int:
            vacuum(conn, pages)
            return int(conn.execute("PRAGMA freelist_count").fetchone()[0])

        return job

    free = await db.run(fill_and_empty)
    assert free > 1500
    assert await db.run(free_after(500)) == free - 500  # one step would have freed one page
    assert await db.run(free_after(0)) == 0
    await db.close()
