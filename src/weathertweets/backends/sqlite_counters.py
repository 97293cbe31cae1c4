"""The embedded counters: totals per country, per text and per country and text.

Each batch's increments and the broker positions it came from commit in one transaction, so
a replayed record is recognised by its offset and never counted twice.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from weathertweets.backends.sqlite import SqliteThread, transaction
from weathertweets.ports import CountedTweet, Stats

SCHEMA = """
CREATE TABLE IF NOT EXISTS totals (key TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES ('total', 0);
CREATE TABLE IF NOT EXISTS countries (pais TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS texts (texto TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS country_texts (
    pais TEXT NOT NULL, texto TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (pais, texto)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS country_conditions (
    pais TEXT NOT NULL, condition TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (pais, condition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, at_us INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_at ON seen (at_us);
CREATE TABLE IF NOT EXISTS positions (
    grp TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, partition)
)
"""


def _add(conn: sqlite3.Connection, tweets: Counter[tuple[str, str, str]]) -> None:
    """Add (pais, texto, condition) → n to every counter."""
    countries: Counter[str] = Counter()
    texts: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    conditions: Counter[tuple[str, str]] = Counter()
    for (pais, texto, condition), n in tweets.items():
        countries[pais] += n
        texts[texto] += n
        pairs[pais, texto] += n
        conditions[pais, condition] += n
    conn.execute("UPDATE totals SET n = n + ? WHERE key = 'total'", (tweets.total(),))
    conn.executemany(
        "INSERT INTO countries VALUES (?, ?) ON CONFLICT(pais) DO UPDATE SET n = n + excluded.n",
        countries.items(),
    )
    conn.executemany(
        "INSERT INTO texts VALUES (?, ?) ON CONFLICT(texto) DO UPDATE SET n = n + excluded.n",
        texts.items(),
    )
    conn.executemany(
        "INSERT INTO country_texts VALUES (?, ?, ?)"
        " ON CONFLICT(pais, texto) DO UPDATE SET n = n + excluded.n",
        ((pais, texto, n) for (pais, texto), n in pairs.items()),
    )
    conn.executemany(
        "INSERT INTO country_conditions VALUES (?, ?, ?)"
        " ON CONFLICT(pais, condition) DO UPDATE SET n = n + excluded.n",
        ((pais, condition, n) for (pais, condition), n in conditions.items()),
    )


SEEN_TTL_US = 2 * 86_400 * 1_000_000
TEXT_CAP = 5000  # texts kept per country and overall, the most counted


def _first_time(conn: sqlite3.Connection, tweet_id: str | None) -> bool:
    """For a tweet sent with an Idempotency-Key: True the first time its id is seen."""
    if tweet_id is None:
        return True
    now = time.time_ns() // 1000
    if secrets.randbelow(1000) == 0:  # now and then, forget ids older than any live key
        conn.execute("DELETE FROM seen WHERE at_us < ?", (now - SEEN_TTL_US,))
    return conn.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (tweet_id, now)).rowcount == 1


def _prune(conn: sqlite3.Connection, countries: set[str], cap: int) -> None:
    """Keep the `cap` most counted texts per country and overall (totals stay exact)."""
    for pais in countries:
        conn.execute(
            "DELETE FROM country_texts WHERE pais = ?1 AND texto NOT IN (SELECT texto FROM"
            " country_texts WHERE pais = ?1 ORDER BY n DESC LIMIT ?2)",
            (pais, cap),
        )
    conn.execute(
        "DELETE FROM texts WHERE texto NOT IN (SELECT texto FROM texts ORDER BY n DESC LIMIT ?)",
        (cap,),
    )


class SqliteCounters:
    def __init__(self, path: Path, text_cap: int = TEXT_CAP) -> None:
        self._db = SqliteThread(path, SCHEMA, "counters")
        self.text_cap = text_cap

    async def start(self) -> None:
        await self._db.open()

    async def apply(self, group: str, tweets: Sequence[CountedTweet]) -> int:
        def apply(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                positions = dict(
                    conn.execute(
                        "SELECT partition, next_offset FROM positions WHERE grp = ?", (group,)
                    ).fetchall()
                )
                unread = [t for t in tweets if t.offset >= positions.get(t.partition, 0)]
                if not unread:
                    return 0
                fresh = [t for t in unread if _first_time(conn, t.id)]
                _add(conn, Counter((t.pais, t.texto, t.condition) for t in fresh))
                if secrets.randbelow(100) == 0:  # now and then: amortised over many batches
                    _prune(conn, {t.pais for t in fresh}, self.text_cap)
                ends: dict[int, int] = {}
                for t in unread:
                    ends[t.partition] = max(ends.get(t.partition, 0), t.offset + 1)
                conn.executemany(
                    "INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT(grp, partition)"
                    " DO UPDATE SET next_offset = excluded.next_offset",
                    ((group, partition, end) for partition, end in ends.items()),
                )
                return len(fresh)

        return await self._db.run(apply)

    async def increment(
        self, pais: str, texto: str, condition: str, by: int = 1, id: str | None = None
    ) -> None:
        if id is not None and by != 1:
            raise ValueError("an increment with an id counts one tweet")

        def increment(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                if _first_time(conn, id):
                    _add(conn, Counter({(pais, texto, condition): by}))

        await self._db.run(increment)

    async def stats(self, top: int = 10) -> Stats:
        def query(conn: sqlite3.Connection) -> Stats:
            total = conn.execute("SELECT n FROM totals WHERE key = 'total'").fetchone()[0]
            countries = conn.execute("SELECT pais, n FROM countries ORDER BY n DESC, pais")
            texts = conn.execute(
                "SELECT texto, n FROM texts ORDER BY n DESC, texto LIMIT ?", (top,)
            )
            conditions = conn.execute(
                "SELECT condition, sum(n) AS c FROM country_conditions"
                " GROUP BY condition ORDER BY c DESC, condition"
            )
            return Stats(
                int(total),
                dict(countries.fetchall()),
                texts.fetchall(),
                dict(conditions.fetchall()),
            )

        return await self._db.run(query)

    async def country(self, pais: str) -> dict[str, int]:
        def query(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT texto, n FROM country_texts WHERE pais = ? ORDER BY n DESC, texto", (pais,)
            )
            return dict(rows.fetchall())

        return await self._db.run(query)

    async def country_conditions(self) -> dict[str, dict[str, int]]:
        def query(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
            found: dict[str, dict[str, int]] = {}
            for pais, condition, n in conn.execute(
                "SELECT pais, condition, n FROM country_conditions ORDER BY pais, n DESC, condition"
            ):
                found.setdefault(pais, {})[condition] = n
            return found

        return await self._db.run(query)

    async def ping(self) -> None:
        await self._db.run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self._db.close()
