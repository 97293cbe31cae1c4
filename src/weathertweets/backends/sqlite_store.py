"""The embedded archive: every tweet once, keyed by its id."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from weathertweets.backends.sqlite import SqliteThread, transaction, vacuum
from weathertweets.domain import Tweet
from weathertweets.ports import ArchivedTweet

SCHEMA = """
CREATE TABLE IF NOT EXISTS register (
    id TEXT PRIMARY KEY, texto TEXT NOT NULL, pais TEXT NOT NULL,
    received_at_us INTEGER NOT NULL, archived_at_us INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS register_pais ON register (pais, received_at_us);
CREATE INDEX IF NOT EXISTS register_received_at ON register (received_at_us);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('documents', 0)
"""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _us(moment: datetime) -> int:
    if moment.tzinfo is None:  # a record written without a zone: its time is UTC, as ours are
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND  # exact, and a fifth faster than timestamp()


def _moment(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, UTC)


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self._db = SqliteThread(path, SCHEMA, "store")

    async def start(self) -> None:
        await self._db.open()

    async def archive(self, docs: Sequence[ArchivedTweet]) -> None:
        # A batch is archived at one moment (or a few): each converted once.
        archived = {moment: _us(moment) for moment in {d.archived_at for d in docs}}
        rows = [
            (
                d.tweet.id,
                d.tweet.texto,
                d.tweet.pais,
                _us(d.tweet.received_at),
                archived[d.archived_at],
            )
            for d in docs
        ]

        def insert(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                cursor = conn.executemany(
                    "INSERT OR IGNORE INTO register VALUES (?, ?, ?, ?, ?)", rows
                )
                conn.execute(
                    "UPDATE meta SET value = value + ? WHERE key = 'documents'", (cursor.rowcount,)
                )

        await self._db.run(insert)

    async def recent(self, pais: str | None, limit: int) -> list[ArchivedTweet]:
        def query(conn: sqlite3.Connection) -> list[tuple[str, str, str, int, int]]:
            if pais is None:
                sql, args = "SELECT * FROM register ORDER BY received_at_us DESC LIMIT ?", (limit,)
            else:
                sql = "SELECT * FROM register WHERE pais = ? ORDER BY received_at_us DESC LIMIT ?"
                args = (pais, limit)  # type: ignore[assignment]
            return conn.execute(sql, args).fetchall()

        return [
            ArchivedTweet(Tweet(id_, texto, pais_, _moment(received)), _moment(archived))
            for id_, texto, pais_, received, archived in await self._db.run(query)
        ]

    async def count(self) -> int:
        def query(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT value FROM meta WHERE key = 'documents'").fetchone()[0])

        return await self._db.run(query)

    async def expire(self, received_before: datetime, chunk: int = 5000) -> int:
        """In chunks, so the archiver's inserts queue between them, not behind one delete."""
        cutoff = _us(received_before)

        def delete(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                gone = conn.execute(
                    "DELETE FROM register WHERE id IN (SELECT id FROM register"
                    " WHERE received_at_us < ? ORDER BY received_at_us LIMIT ?)",
                    (cutoff, chunk),
                ).rowcount
                conn.execute("UPDATE meta SET value = value - ? WHERE key = 'documents'", (gone,))
            if gone:
                vacuum(conn)
            return int(gone)

        total = 0
        while (gone := await self._db.run(delete)) > 0:
            total += gone
        return total

    async def ping(self) -> None:
        await self._db.run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self._db.close()
