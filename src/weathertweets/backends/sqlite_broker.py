"""The embedded broker: a durable append-only log in SQLite with consumer-group positions.

One partition (0); offsets are the log's row ids; each row keeps the record's key and headers.
Several processes may share the file (WAL); consumers in the publishing process are woken at
once, others poll. Records a group gives up on go to the `dead_letters` table.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
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


PARTITION = 0
# One aggregate a statement: SQLite answers a lone min() or max() of the key from the B-tree's
# edge, but `SELECT min(offset), max(offset)` scans the whole log.
NEWEST = "SELECT max(offset) FROM log"
OLDEST = "SELECT min(offset) FROM log"
_IDLE_POLL = 0.05  # seconds between looks at the file when another process publishes
# Once a record is there, a consumer waits this long for more: at everyday rates a sink call
# and a commit then carry many records instead of one each (measured: CPU a tweet at 40 % of
# peak 2.4× → 1.2–1.6× that at peak; a publish linger was tried too and cost peak and p99).
LINGER = 0.05


class SqliteBroker:
    """`retention`: trims the log while this process consumes it (the process that reads the
    log knows when it may go)."""

    def __init__(
        self, path: Path, topic: str = "messages", retention: Retention | None = None
    ) -> None:
        self._path = path
        self.topic = topic
        self._writer = SqliteThread(path, SCHEMA, "broker")
        self._appender = Batcher(self._append, max_batch=20_000, max_in_flight=1)
        self._listeners: set[asyncio.Event] = set()
        self._groups: list[str] = []  # of the consumers open in this process
        self.trimmer = LogTrimmer(self._writer, retention or Retention(), lambda: self._groups)
        self._trimming: asyncio.Task[None] | None = None

    async def start(self) -> None:
        def migrate(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                present = {row[1] for row in conn.execute("PRAGMA table_info(log)")}
                for column, kind in LOG_COLUMNS.items():
                    if column not in present:
                        conn.execute(f"ALTER TABLE log ADD COLUMN {column} {kind}")

        await self._writer.run(migrate)

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

        await self._writer.run(append)

    async def dead_letter(self, group: str, messages: Sequence[Message], reason: str) -> None:
        at_us = time.time_ns() // 1000
        rows = [(group, m.partition, m.offset, m.value, reason, at_us) for m in messages]

        def keep(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.executemany(
                    "INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?)", rows
                )

        await self._writer.run(keep)

    def consumer(self, group: str) -> SqliteConsumer:
        if self._trimming is None and self.trimmer.retention.enabled:
            self._trimming = asyncio.get_running_loop().create_task(
                self.trimmer.run(), name="broker-retention"
            )
        self._groups.append(group)
        consumer = SqliteConsumer(self._path, group, self._writer, self._listeners, self.topic)
        consumer.on_close = lambda: self._groups.remove(group)
        return consumer

    async def ping(self) -> None:
        await self._writer.run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        if self._trimming is not None:
            self._trimming.cancel()
            await asyncio.gather(self._trimming, return_exceptions=True)
        await self._appender.close()
        await self._writer.close()


class SqliteConsumer:
    def __init__(
        self,
        path: Path,
        group: str,
        writer: SqliteThread,
        listeners: set[asyncio.Event],
        topic: str = "messages",
    ) -> None:
        self._group = group
        self._topic = topic
        self._db = SqliteThread(path, SCHEMA, f"consumer-{group}")
        # Commits share the publisher's connection: SQLite has one writer, and queueing behind
        # it in one thread beats sleeping in its busy handler.
        self._writer = writer
        self._listeners = listeners
        self._published = asyncio.Event()
        listeners.add(self._published)
        self._next_offset: int | None = None
        self._registered = False
        self.on_close: Callable[[], None] = lambda: None

    async def poll(self, max_records: int, timeout: float) -> list[Message]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not self._registered:
            await self._register()
        while True:
            self._published.clear()
            messages = await self._db.run(lambda conn: self._read(conn, max_records))
            if messages and len(messages) < max_records and LINGER:
                messages += await self._linger(messages[0].offset, max_records - len(messages))
            remaining = deadline - loop.time()
            if messages or remaining <= 0:
                return messages
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._published.wait(), min(remaining, _IDLE_POLL))

    async def _linger(self, first: int, max_records: int) -> list[Message]:
        """What arrives within LINGER after `first`; nothing read is ever dropped: a failed
        read returns none (the next poll reads them), a cancelled one rewinds to `first`."""
        try:
            await asyncio.sleep(LINGER)
            return await self._db.run(partial(self._read, max_records=max_records))
        except BackendUnavailable:
            return []
        except asyncio.CancelledError:
            self._next_offset = first
            raise

    async def _register(self) -> None:
        """A group is known to retention from its first poll: what it has not committed stays."""

        def register(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute(
                    "INSERT OR IGNORE INTO positions (grp, next_offset) VALUES (?, 1)",
                    (self._group,),
                )

        await self._writer.run(register)
        self._registered = True

    def _read(self, conn: sqlite3.Connection, max_records: int) -> list[Message]:
        if self._next_offset is None:
            self._next_offset = self._committed(conn)
        rows = conn.execute(
            "SELECT offset, value, headers FROM log WHERE offset >= ? ORDER BY offset LIMIT ?",
            (self._next_offset, max_records),
        ).fetchall()
        if rows:
            self._next_offset = rows[-1][0] + 1
        return [
            Message(PARTITION, offset, value, self._topic, headers=_unpack(headers))
            for offset, value, headers in rows
        ]

    def _committed(self, conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT next_offset FROM positions WHERE grp = ?", (self._group,))
        found = row.fetchone()
        return int(found[0]) if found else 1

    async def commit(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        next_offset = max(m.offset for m in messages) + 1

        def save(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute(
                    "INSERT INTO positions (grp, next_offset) VALUES (?, ?) ON CONFLICT(grp)"
                    " DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
                    (self._group, next_offset),
                )

        await self._writer.run(save)

    async def lag(self) -> int:
        def measure(conn: sqlite3.Connection) -> int:
            high = conn.execute(NEWEST).fetchone()[0]
            if high is None:
                return 0
            low = conn.execute(OLDEST).fetchone()[0]
            return max(0, int(high) + 1 - max(self._committed(conn), int(low)))  # trimmed: gone

        return await self._db.run(measure)

    async def close(self) -> None:
        self._listeners.discard(self._published)
        self.on_close()
        await self._db.close()
