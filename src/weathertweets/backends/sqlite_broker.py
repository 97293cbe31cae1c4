"""The embedded broker: a durable append-only log in SQLite with consumer-group positions.

A partition is a file: 0 is the broker's URL (`broker.db`), partition N sits beside it
(`broker.N.db`). A process appends to one partition, the one it is given: the gateway workers
of `up --workers N` each have their own, so they never wait for each other's commits. Several
processes may still share a file (WAL, the writers' lock file). A consumer reads every
partition it finds beside the URL; each file keeps its own offsets (the log's row ids), the
groups' positions in it and its dead letters. Consumers in the publishing process are woken at
once, others poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import msgspec

from weathertweets.backends.sqlite import SqliteThread, transaction
from weathertweets.backends.sqlite_retention import LogTrimmer, Retention
from weathertweets.batching import Batcher
from weathertweets.ports import BackendUnavailable, Headers, Message, Record

SCHEMA = """
CREATE TABLE IF NOT EXISTS log (offset INTEGER PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS positions (grp TEXT PRIMARY KEY, next_offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    grp TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    value BLOB NOT NULL, reason TEXT NOT NULL, at_us INTEGER NOT NULL,
    PRIMARY KEY (grp, partition, offset)
)
"""
# Columns added after the first release; a log file from before gets them on open.
LOG_COLUMNS = {"key": "BLOB", "headers": "BLOB", "at_ms": "INTEGER"}
_headers_codec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(list[tuple[str, bytes]])


def _pack(headers: Headers) -> bytes | None:
    return _headers_codec[0].encode(list(headers)) if headers else None


def _unpack(raw: bytes | None) -> Headers:
    return tuple(_headers_codec[1].decode(raw)) if raw else ()


log = logging.getLogger("weathertweets.broker")

# One aggregate a statement: SQLite answers a lone min() or max() of the key from the B-tree's
# edge, but `SELECT min(offset), max(offset)` scans the whole log.
NEWEST = "SELECT max(offset) FROM log"
OLDEST = "SELECT min(offset) FROM log"
_IDLE_POLL = 0.05  # seconds between looks at the file when another process publishes
_RESCAN = 1.0  # seconds between looks for partitions another process began
# Once a record is there, a consumer waits this long for more: at everyday rates a sink call
# and a commit then carry many records instead of one each (measured: CPU a tweet at 40 % of
# peak 2.4× → 1.2–1.6× that at peak; a publish linger was tried too and cost peak and p99).
LINGER = 0.05


def partition_path(path: Path, partition: int) -> Path:
    return path if partition == 0 else path.with_name(f"{path.stem}.{partition}{path.suffix}")


def partitions_on_disk(path: Path) -> set[int]:
    """Partition 0 and every file named as a partition beside it (`<stem>.N<suffix>`, N as
    `partition_path` writes it: 1, 2 … not 01 or ²)."""
    found = {0}
    stem, suffix = path.stem, path.suffix
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path.parent):
            name = entry.name
            if name.startswith(f"{stem}.") and name.endswith(suffix):
                middle = name[len(stem) + 1 : len(name) - len(suffix)]
                if _NUMBER.fullmatch(middle) and entry.is_file():
                    found.add(int(middle))
    return found


_NUMBER = re.compile(r"[1-9][0-9]*")


def _schema(partition: int) -> str:
    """A partition file says which one it is: a copy under another partition's name (a backup,
    say) is not read as that partition."""
    return f"{SCHEMA};\nPRAGMA user_version = {partition}" if partition else SCHEMA


def _check_partition(path: Path, number: int) -> None:
    """Raise sqlite3.DatabaseError unless the file at `path` is partition `number`: it says
    so, or says nothing and holds no log yet (being made: `_Unstamped`)."""
    existing = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=rw"  # not made if gone
    try:
        with contextlib.closing(sqlite3.connect(existing, uri=True)) as conn:
            stamp = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if stamp == 0 and not _has_table(conn, "log"):
                raise _Unstamped(f"{path.name} is not (yet) a partition")
    except sqlite3.OperationalError as error:  # a directory, unreadable: say which file
        raise sqlite3.DatabaseError(f"{path.name}: {error}") from error
    if stamp != number:
        raise sqlite3.DatabaseError(
            f"{path.name} says it is partition {stamp}, not {number} (a copy of another"
            " partition's file?)"
        )


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.fetchone() is not None


class _Unstamped(sqlite3.DatabaseError):
    """A file named as a partition, with no log and no number yet: being made."""


# A group not yet in a partition holds it from its first record: what it has not read stays.
_HOLD = "INSERT OR IGNORE INTO positions (grp, next_offset) VALUES (?, 1)"


def _adopt_groups(origin: Path, conn: sqlite3.Connection) -> None:
    """Hold a partition's records for every group partition 0 knows, from its start: a group
    in another process that has not found this file yet is not trimmed past."""
    if not origin.exists():
        return
    with contextlib.closing(sqlite3.connect(origin)) as source:
        if not _has_table(source, "positions"):  # not made yet: no group to hold for
            return
        groups = source.execute("SELECT grp FROM positions").fetchall()
    with transaction(conn):
        conn.executemany(_HOLD, groups)


def _migrate(conn: sqlite3.Connection) -> None:
    with transaction(conn):
        present = {row[1] for row in conn.execute("PRAGMA table_info(log)")}
        for column, kind in LOG_COLUMNS.items():
            if column not in present:
                conn.execute(f"ALTER TABLE log ADD COLUMN {column} {kind}")


@dataclass
class _Partition:
    number: int
    writer: SqliteThread
    trimmer: LogTrimmer
    trimming: asyncio.Task[None] | None = None
    migrated: bool = False


class SqliteBroker:
    """`partition`: where this process appends. `retention`: trims the partitions while this
    process consumes them (the process that reads the log knows when it may go)."""

    def __init__(
        self,
        path: Path,
        topic: str = "messages",
        retention: Retention | None = None,
        partition: int = 0,
    ) -> None:
        self._path = path
        self.topic = topic
        self._retention = retention or Retention()
        self._groups: list[str] = []  # of the consumers open in this process
        self._partitions: dict[int, _Partition] = {}
        self._trimming = False
        self._own = self._add(partition)
        self.trimmer = self._own.trimmer
        self._appender = Batcher(self._append, max_batch=20_000, max_in_flight=1)
        self._listeners: set[asyncio.Event] = set()

    @property
    def partition(self) -> int:
        return self._own.number

    def _add(self, number: int) -> _Partition:
        path = partition_path(self._path, number)
        writer = SqliteThread(path, _schema(number), f"broker-{number}")
        trimmer = LogTrimmer(writer, self._retention, lambda: self._groups)
        self._partitions[number] = added = _Partition(number, writer, trimmer)
        self._trim(added)
        return added

    async def opened(self, number: int) -> _Partition:
        """Partition `number`, its file brought up to date the first time. Another process's
        partition is opened only if its file says it is that partition (sqlite3.DatabaseError
        if not)."""
        if number not in self._partitions and number:
            await asyncio.to_thread(_check_partition, partition_path(self._path, number), number)
        partition = self._partitions.get(number) or self._add(number)
        if not partition.migrated:
            await partition.writer.run(_migrate)
            if number:
                await partition.writer.run(partial(_adopt_groups, self._path))
            partition.migrated = True
        return partition

    def _trim(self, partition: _Partition) -> None:
        if self._trimming and partition.trimming is None:
            partition.trimming = asyncio.get_running_loop().create_task(
                partition.trimmer.run(), name=f"broker-retention-{partition.number}"
            )

    async def start(self) -> None:
        """Open (make and number) the partition this process appends to; a file already there
        under its name must be that partition."""
        number = self._own.number
        path = partition_path(self._path, number)
        if number and path.exists():
            with contextlib.suppress(_Unstamped):  # an empty file: made here, now
                await asyncio.to_thread(_check_partition, path, number)
        await self.opened(number)

    async def publish(self, records: Sequence[Record]) -> None:
        await self._appender.submit(records)
        for listener in self._listeners:
            listener.set()

    async def _append(self, records: list[Record]) -> None:
        at_ms = time.time_ns() // 1_000_000
        if any(r.key is not None or r.headers for r in records):
            sql = "INSERT INTO log (value, key, headers, at_ms) VALUES (?, ?, ?, ?)"
            rows: list[tuple[object, ...]] = [
                (r.value, r.key, _pack(r.headers), at_ms) for r in records
            ]
        else:  # the usual batch: one parameter a row binds a third faster than four
            sql = f"INSERT INTO log (value, at_ms) VALUES (?, {int(at_ms)})"
            rows = [(r.value,) for r in records]

        def append(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.executemany(sql, rows)

        await self._own.writer.run(append)

    async def dead_letter(self, group: str, messages: Sequence[Message], reason: str) -> None:
        at_us = time.time_ns() // 1000
        for number, some in _by_partition(messages).items():
            rows = [(group, m.partition, m.offset, m.value, reason, at_us) for m in some]
            await (await self.opened(number)).writer.run(partial(_keep_dead_letters, rows))

    def consumer(self, group: str) -> SqliteConsumer:
        if not self._trimming and self._retention.enabled:
            self._trimming = True
            for partition in self._partitions.values():
                self._trim(partition)
        self._groups.append(group)
        consumer = SqliteConsumer(self, group)
        consumer.on_close = lambda: self._groups.remove(group)
        return consumer

    @property
    def path(self) -> Path:
        return self._path

    def listen(self, published: asyncio.Event) -> Callable[[], None]:
        """Set `published` whenever this process publishes; returns how to stop."""
        self._listeners.add(published)
        return lambda: self._listeners.discard(published)

    async def ping(self) -> None:
        await self._own.writer.run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        trimming = [p.trimming for p in self._partitions.values() if p.trimming is not None]
        for task in trimming:
            task.cancel()
        await asyncio.gather(*trimming, return_exceptions=True)
        await self._appender.close()
        for partition in self._partitions.values():
            await partition.writer.close()


def _keep_dead_letters(rows: Sequence[tuple[object, ...]], conn: sqlite3.Connection) -> None:
    with transaction(conn):
        conn.executemany("INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?)", rows)


def _by_partition(messages: Iterable[Message]) -> dict[int, list[Message]]:
    grouped: dict[int, list[Message]] = {}
    for message in messages:
        grouped.setdefault(message.partition, []).append(message)
    return grouped


@dataclass
class _Reader:
    """A group's place in one partition: read on its own connection, committed on the
    broker's writer of that file (SQLite has one writer; queueing behind it in one thread
    beats sleeping in its busy handler)."""

    partition: int
    db: SqliteThread
    writer: SqliteThread
    next_offset: int | None = None


class SqliteConsumer:
    def __init__(self, broker: SqliteBroker, group: str) -> None:
        self._broker = broker
        self._group = group
        self._topic = broker.topic
        self._readers: list[_Reader] = []
        self._turn = 0  # which partition is read first: each in turn, so none waits behind
        self._rescan_at = 0.0
        self._refusals: dict[int, str] = {}  # partition: why it was not opened, logged once
        self._published = asyncio.Event()
        self._unlisten = broker.listen(self._published)
        self.on_close: Callable[[], None] = lambda: None

    async def poll(self, max_records: int, timeout: float) -> list[Message]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self._discover(loop.time())
        while True:
            self._published.clear()
            before = [reader.next_offset for reader in self._readers]
            try:
                messages = await self._read(max_records)
                if messages and len(messages) < max_records and LINGER:
                    await asyncio.sleep(LINGER)
                    with contextlib.suppress(BackendUnavailable):  # the next poll reads them
                        messages += await self._read(max_records - len(messages))
            except BaseException:  # cancelled or failed: nothing read is skipped, it is reread
                for reader, offset in zip(self._readers, before, strict=False):
                    reader.next_offset = offset
                raise
            remaining = deadline - loop.time()
            if messages or remaining <= 0:
                return messages
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._published.wait(), min(remaining, _IDLE_POLL))

    async def _discover(self, now: float) -> None:
        """Open the partitions not yet read, once a `_RESCAN`; a group is known to retention
        in a partition from then on: what it has not committed there stays."""
        if now < self._rescan_at and self._readers:
            return
        known = {reader.partition for reader in self._readers}
        wanted = partitions_on_disk(self._broker.path) | {self._broker.partition}
        for number in sorted(wanted - known):
            try:
                writer = (await self._broker.opened(number)).writer
                await writer.run(self._register)
            except (BackendUnavailable, sqlite3.DatabaseError) as error:  # looked at again later
                self._refused(number, error)
                continue
            path = partition_path(self._broker.path, number)
            db = SqliteThread(path, SCHEMA, f"consumer-{self._group}-{number}")  # reads only
            self._readers.append(_Reader(number, db, writer))
        self._rescan_at = now + _RESCAN
        if not self._readers:
            raise BackendUnavailable(f"no partition of {self._broker.path.name} could be opened")

    def _refused(self, number: int, error: Exception) -> None:
        name = partition_path(self._broker.path, number).name
        if str(error) != self._refusals.get(number):
            self._refusals[number] = str(error)
            level = logging.DEBUG if isinstance(error, _Unstamped) else logging.WARNING
            log.log(level, "%s: %s is not read for now: %s", self._group, name, error)

    def _register(self, conn: sqlite3.Connection) -> None:
        with transaction(conn):
            conn.execute(_HOLD, (self._group,))

    async def _read(self, max_records: int) -> list[Message]:
        """Up to `max_records` from the partitions, starting with each in turn. Offsets move on
        in this thread, after each read: a read cancelled or failed moves nothing. A partition
        that fails is passed over while others have records; the next poll tries it again."""
        self._turn = (self._turn + 1) % len(self._readers)
        order = self._readers[self._turn :] + self._readers[: self._turn]
        messages: list[Message] = []
        failure: BackendUnavailable | None = None
        for reader in order:
            if len(messages) >= max_records:
                break
            wanted = max_records - len(messages)
            try:
                start, rows = await reader.db.run(partial(self._rows, reader, wanted))
            except (BackendUnavailable, sqlite3.DatabaseError) as error:
                failure = failure or BackendUnavailable(f"partition {reader.partition}: {error}")
                continue
            if rows:
                reader.next_offset = rows[-1][0] + 1
            elif reader.next_offset is None:
                reader.next_offset = start
            number, topic = reader.partition, self._topic
            messages += [
                Message(number, offset, value, topic, headers=_unpack(headers))
                for offset, value, headers in rows
            ]
        if failure is not None and not messages:
            raise failure
        return messages

    def _rows(
        self, reader: _Reader, max_records: int, conn: sqlite3.Connection
    ) -> tuple[int, list[tuple[int, bytes, bytes | None]]]:
        start = reader.next_offset
        if start is None:
            start = self._committed(conn)
        rows = conn.execute(
            "SELECT offset, value, headers FROM log WHERE offset >= ? ORDER BY offset LIMIT ?",
            (start, max_records),
        ).fetchall()
        return start, rows

    def _committed(self, conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT next_offset FROM positions WHERE grp = ?", (self._group,))
        found = row.fetchone()
        return int(found[0]) if found else 1

    async def commit(self, messages: Sequence[Message]) -> None:
        writers = {reader.partition: reader.writer for reader in self._readers}
        for number, some in _by_partition(messages).items():
            next_offset = max(m.offset for m in some) + 1
            await writers[number].run(partial(self._save, next_offset))

    def _save(self, next_offset: int, conn: sqlite3.Connection) -> None:
        with transaction(conn):
            conn.execute(
                "INSERT INTO positions (grp, next_offset) VALUES (?, ?) ON CONFLICT(grp)"
                " DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
                (self._group, next_offset),
            )

    async def lag(self) -> int:
        await self._discover(asyncio.get_running_loop().time())

        def measure(conn: sqlite3.Connection) -> int:
            high = conn.execute(NEWEST).fetchone()[0]
            if high is None:
                return 0
            low = conn.execute(OLDEST).fetchone()[0]
            return max(0, int(high) + 1 - max(self._committed(conn), int(low)))  # trimmed: gone

        return sum([await reader.db.run(measure) for reader in self._readers])

    async def close(self) -> None:
        self._unlisten()
        self.on_close()
        for reader in self._readers:
            await reader.db.close()
