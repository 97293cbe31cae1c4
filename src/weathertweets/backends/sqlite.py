"""One SQLite connection driven from one worker thread, so the event loop never blocks on disk."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from weathertweets.ports import BackendUnavailable

R = TypeVar("R")


def path_from_url(url: str) -> Path:
    """`sqlite:///relative/file.db` or `sqlite:////absolute/file.db` (SQLAlchemy's spelling)."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r} (expected sqlite:///path/to/file.db)")
    return Path(url.removeprefix("sqlite:///"))


class SqliteThread:
    def __init__(self, path: Path, schema: str, name: str) -> None:
        self.path = path
        self._schema = schema
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{name}")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self.run(lambda _conn: None)

    async def run(self, job: Callable[[sqlite3.Connection], R]) -> R:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._call, job)
        except sqlite3.OperationalError as error:  # locked, disk full, I/O error: retry later
            raise BackendUnavailable(f"sqlite {self.path.name}: {error}") from error

    def _call(self, job: Callable[[sqlite3.Connection], R]) -> R:
        if self._conn is None:
            self._conn = self._connect()
        return job(self._conn)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        # Takes effect on a new file only: deleted rows' pages can go back to the file system.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk before we acknowledge anything that depends on it.
        conn.execute("PRAGMA synchronous = FULL")
        with transaction(conn):
            for statement in _statements(self._schema):
                conn.execute(statement)
        return conn

    async def close(self) -> None:
        def _close(conn: sqlite3.Connection) -> None:
            conn.close()
            self._conn = None

        if self._conn is not None:
            await self.run(_close)
        self._executor.shutdown(wait=True)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]
