"""Idempotency-Keys in the embedded counters file: one row per (caller, key), expiring."""

from __future__ import annotations

import secrets
import sqlite3
import time
from pathlib import Path

from weathertweets.backends.sqlite import SqliteThread, transaction
from weathertweets.ports import Claim

SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
    received_at_us INTEGER NOT NULL, expires_us INTEGER NOT NULL,
    status INTEGER, body BLOB, PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency (expires_us)
"""


class SqliteIdempotency:
    def __init__(self, path: Path, ttl: int = 90_000) -> None:
        self._db = SqliteThread(path, SCHEMA, "idempotency")
        self._ttl_us = ttl * 1_000_000

    async def start(self) -> None:
        await self._db.open()

    async def claim(self, scope: str, key: str, fingerprint: str, received_at_us: int) -> Claim:
        def claim(conn: sqlite3.Connection) -> Claim:
            now = time.time_ns() // 1000
            with transaction(conn):
                if secrets.randbelow(1000) == 0:
                    conn.execute("DELETE FROM idempotency WHERE expires_us < ?", (now,))
                conn.execute(
                    "DELETE FROM idempotency WHERE scope = ? AND key = ? AND expires_us < ?",
                    (scope, key, now),
                )
                conn.execute(
                    "INSERT OR IGNORE INTO idempotency (scope, key, fingerprint, received_at_us,"
                    " expires_us) VALUES (?, ?, ?, ?, ?)",
                    (scope, key, fingerprint, received_at_us, now + self._ttl_us),
                )
                fp, at, status, body = conn.execute(
                    "SELECT fingerprint, received_at_us, status, body FROM idempotency"
                    " WHERE scope = ? AND key = ?",
                    (scope, key),
                ).fetchone()
            return Claim(fp, at, status, body)

        return await self._db.run(claim)

    async def complete(self, scope: str, key: str, status: int, body: bytes) -> None:
        def complete(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute(
                    "UPDATE idempotency SET status = ?, body = ? WHERE scope = ? AND key = ?",
                    (status, body, scope, key),
                )

        await self._db.run(complete)

    async def close(self) -> None:
        await self._db.close()
