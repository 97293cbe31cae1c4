"""The embedded broker's partitions: one file each, every one read by a group's consumer,
positions and dead letters kept in the partition's own file, nothing skipped on a cancel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from weathertweets.backends import sqlite_broker
from weathertweets.backends.sqlite_broker import SqliteBroker, partition_path, partitions_on_disk
from weathertweets.backends.sqlite_retention import Retention
from weathertweets.config import SettingError, Settings
from weathertweets.ports import BackendUnavailable, Message, Record

KEEP = Retention(max_age_s=0, max_bytes=0)


@pytest.fixture
async def brokers(tmp_path: Path) -> AsyncIterator[tuple[SqliteBroker, SqliteBroker]]:
    """Partition 0 (where its consumers run) and partition 2, another process's."""
    here = SqliteBroker(tmp_path / "broker.db", retention=KEEP)
    there = SqliteBroker(tmp_path / "broker.db", retention=KEEP, partition=2)
    for broker in (here, there):
        await broker.start()
    yield here, there
    for broker in (here, there):
        await broker.close()


async def _poll_until(broker: SqliteBroker, group: str, count: int) -> list[Message]:
    consumer = broker.consumer(group)
    got: list[Message] = []
    for _ in range(50):
        got += await consumer.poll(100, 0.2)
        if len(got) >= count:
            break
    await consumer.commit(got)
    await consumer.close()
    return got


def _backup(source: Path, copy: Path) -> None:
    """As `sqlite3 source .backup copy` makes it: whole, the WAL's pages included."""
    with (
        contextlib.closing(sqlite3.connect(source)) as db,
        contextlib.closing(sqlite3.connect(copy)) as to,
    ):
        db.backup(to)


def test_partition_files_sit_beside_the_log(tmp_path: Path) -> None:
    log = tmp_path / "broker.db"
    assert partition_path(log, 0) == log
    assert partition_path(log, 3) == tmp_path / "broker.3.db"
    names = ("broker.3.db", "broker.3.db-wal", "broker.x.db", "broker.12.db", "other.4.db")
    for name in (*names, "broker.01.db", "broker.\u00b2.db", "broker.0.db"):
        (tmp_path / name).touch()
    (tmp_path / "broker.5.db").mkdir()
    assert partitions_on_disk(log) == {0, 3, 12}
    assert partitions_on_disk(tmp_path / "missing" / "broker.db") == {0}


async def test_a_group_reads_every_partition_and_commits_each_in_its_file(
    brokers: tuple[SqliteBroker, SqliteBroker], tmp_path: Path
) -> None:
    here, there = brokers
    await here.publish([Record(b"h%d" % i) for i in range(3)])
    await there.publish(
        [Record(b"t%d" % i, key=b"k", headers=(("trace", b"1"),)) for i in range(4)]
    )

    got = await _poll_until(here, "archiver", 7)
    assert sorted((m.partition, m.offset, m.value) for m in got) == [
        *((0, i + 1, b"h%d" % i) for i in range(3)),
        *((2, i + 1, b"t%d" % i) for i in range(4)),
    ]
    assert all(m.headers == (("trace", b"1"),) for m in got if m.partition == 2)
    for number, committed in ((0, 4), (2, 5)):
        with contextlib.closing(
            sqlite3.connect(partition_path(tmp_path / "broker.db", number))
        ) as db:
            assert db.execute(
                "SELECT next_offset FROM positions WHERE grp = 'archiver'"
            ).fetchone() == (committed,)

    await there.publish([Record(b"later")])
    again = here.consumer("archiver")
    assert await again.lag() == 1
    assert [(m.partition, m.offset) for m in await again.poll(100, 1)] == [(2, 5)]
    await again.close()


async def test_a_partition_begun_after_the_consumer_is_found(tmp_path: Path) -> None:
    here = SqliteBroker(tmp_path / "broker.db", retention=KEEP)
    await here.start()
    consumer = here.consumer("counter")
    assert await consumer.poll(100, 0.1) == []
    late = SqliteBroker(tmp_path / "broker.db", retention=KEEP, partition=1)
    await late.start()
    await late.publish([Record(b"late")])
    got: list[Message] = []
    for _ in range(30):  # found at the next look for new partitions
        if got := await consumer.poll(100, 0.2):
            break
    assert [(m.partition, m.value) for m in got] == [(1, b"late")]
    await consumer.close()
    for broker in (here, late):
        await broker.close()


async def test_a_dead_letter_stays_in_its_record_s_partition(
    brokers: tuple[SqliteBroker, SqliteBroker], tmp_path: Path
) -> None:
    here, there = brokers
    await there.publish([Record(b"not a tweet")])
    (poison,) = await _poll_until(here, "archiver", 1)
    await here.dead_letter("archiver", [poison], "not a tweet")
    with contextlib.closing(sqlite3.connect(tmp_path / "broker.2.db")) as db:
        rows = db.execute("SELECT grp, partition, offset, value FROM dead_letters").fetchall()
    assert rows == [("archiver", 2, 1, b"not a tweet")]


async def test_a_poll_cancelled_while_lingering_skips_nothing(
    brokers: tuple[SqliteBroker, SqliteBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    here, there = brokers
    monkeypatch.setattr(sqlite_broker, "LINGER", 5.0)
    await here.publish([Record(b"a")])
    await there.publish([Record(b"b")])
    consumer = here.consumer("counter")
    polling = asyncio.ensure_future(consumer.poll(100, 10))
    await asyncio.sleep(0.5)  # both partitions read; now lingering
    assert not polling.done()
    polling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await polling
    monkeypatch.setattr(sqlite_broker, "LINGER", 0.0)
    got = await consumer.poll(100, 1)
    assert sorted((m.partition, m.value) for m in got) == [(0, b"a"), (2, b"b")]
    await consumer.close()


async def test_retention_trims_every_partition_the_process_consumes(tmp_path: Path) -> None:
    aged = Retention(max_age_s=0.05, max_bytes=0, interval_s=3600)
    here = SqliteBroker(tmp_path / "broker.db", retention=aged)
    there = SqliteBroker(tmp_path / "broker.db", retention=aged, partition=1)
    for broker in (here, there):
        await broker.start()
    await there.publish([Record(b"%d" % i) for i in range(10)])
    assert len(await _poll_until(here, "archiver", 10)) == 10
    await asyncio.sleep(0.1)
    trimmed = await (await here.opened(1)).trimmer.trim()
    assert trimmed.records == 9  # the newest always stays: offsets never go back
    for broker in (here, there):
        await broker.close()


async def test_files_that_are_not_a_partition_are_not_read_and_stop_nothing(
    brokers: tuple[SqliteBroker, SqliteBroker], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    here, there = brokers
    await here.publish([Record(b"h")])
    await there.publish([Record(b"t")])
    _backup(tmp_path / "broker.db", tmp_path / "broker.20261130.db")  # a backup of 0
    _backup(tmp_path / "broker.2.db", tmp_path / "broker.3.db")  # 2's, renamed
    (tmp_path / "broker.7.db").write_bytes(b"not a database" * 100)
    with caplog.at_level(logging.WARNING, logger="weathertweets.broker"):
        got = await _poll_until(here, "archiver", 2)
    assert sorted((m.partition, m.value) for m in got) == [(0, b"h"), (2, b"t")]
    warned = caplog.text
    for name in ("broker.20261130.db", "broker.3.db", "broker.7.db"):
        assert f"{name} is not read for now" in warned
    counter = here.consumer("counter")  # another group, the same files
    assert len(await counter.poll(100, 0.5)) == 2
    await counter.close()


async def test_a_new_partition_holds_its_records_for_a_group_elsewhere(tmp_path: Path) -> None:
    """The counter registered in partition 0, then stopped (another process, down for a
    while): partition 1 begun after that still keeps what the counter has not read."""
    aged = Retention(max_age_s=0.05, max_bytes=0, interval_s=3600)
    here = SqliteBroker(tmp_path / "broker.db", retention=aged)
    await here.start()
    counter = here.consumer("counter")
    assert await counter.poll(100, 0.1) == []
    await counter.close()
    there = SqliteBroker(tmp_path / "broker.db", retention=aged, partition=1)
    await there.start()
    await there.publish([Record(b"%d" % i) for i in range(10)])
    assert len(await _poll_until(here, "archiver", 10)) == 10
    await asyncio.sleep(0.1)
    trimmed = await (await here.opened(1)).trimmer.trim()
    assert (trimmed.records, trimmed.held_by) == (0, "counter")
    assert len(await _poll_until(here, "counter", 10)) == 10
    for broker in (here, there):
        await broker.close()


async def test_a_poll_that_opens_no_partition_fails_and_the_next_one_reads(
    brokers: tuple[SqliteBroker, SqliteBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    here, there = brokers
    await there.publish([Record(b"t")])
    consumer = here.consumer("counter")
    real = here.opened

    async def locked(number: int) -> object:
        raise BackendUnavailable("sqlite broker.db: database is locked")

    monkeypatch.setattr(here, "opened", locked)
    with pytest.raises(BackendUnavailable, match="no partition"):
        await consumer.poll(100, 0.1)
    monkeypatch.setattr(here, "opened", real)
    got: list[Message] = []
    for _ in range(30):
        if got := await consumer.poll(100, 0.2):
            break
    assert [(m.partition, m.value) for m in got] == [(2, b"t")]
    await consumer.close()


async def test_a_process_does_not_append_to_a_copy_under_its_partition_s_name(
    tmp_path: Path,
) -> None:
    here = SqliteBroker(tmp_path / "broker.db", retention=KEEP)
    await here.start()
    await here.publish([Record(b"h")])
    await here.close()
    _backup(tmp_path / "broker.db", tmp_path / "broker.3.db")
    worker = SqliteBroker(tmp_path / "broker.db", retention=KEEP, partition=3)
    with pytest.raises(sqlite3.DatabaseError, match="says it is partition 0, not 3"):
        await worker.start()
    await worker.close()
    for name in ("broker.3.db", "broker.3.db-wal", "broker.3.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    (tmp_path / "broker.3.db").mkdir()
    worker = SqliteBroker(tmp_path / "broker.db", retention=KEEP, partition=3)
    with pytest.raises(sqlite3.DatabaseError, match=r"broker\.3\.db: unable to open"):
        await worker.start()
    await worker.close()


def test_the_partition_setting_is_bounded() -> None:
    for bad in (-1, 65536):
        with pytest.raises(SettingError, match="WT_BROKER_PARTITION"):
            Settings(broker_partition=bad).checked()
