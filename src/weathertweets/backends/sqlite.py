"""One SQLite connection driven from one worker thread, so the event loop never blocks on disk.

Writers queue on a lock file beside the database (`<file>-lock`, flock) before SQLite's own
write lock: several processes append to one file (a stack's gateway workers), and SQLite's busy
handler polls with sleeps of 1, 2, 5 … 100 ms, which under contention costs more than the
write. The kernel wakes the next writer as soon as the lock is free, and releases the lock of a
process that dies. Writers that do not take it (the sqlite3 shell) still meet SQLite's lock and
its busy timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from weathertweets.ports import BackendUnavailable

R = TypeVar("R")
_EXIT_CHECK = 1.0  # seconds between looks at whether the interpreter is exiting


def path_from_url(url: str) -> Path:
    """`sqlite:///relative/file.db` or `sqlite:////absolute/file.db` (SQLAlchemy's spelling)."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r} (expected sqlite:///path/to/file.db)")
    return Path(url.removeprefix("sqlite:///"))


class SqliteThread:
    """Jobs run in order on the connection's own thread; each `run` waits for its job's result.
    (A queue and a callback into the loop: half the CPU of a one-worker ThreadPoolExecutor a
    job, which matters when every batch of tweets makes the trip.)"""

    def __init__(self, path: Path, schema: str, name: str) -> None:
        self.path = path
        self._schema = schema
        self._name = f"sqlite-{name}"
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self.run(lambda _conn: None)

    async def run(self, job: Callable[[sqlite3.Connection], R]) -> R:
        if self._closed:
            raise RuntimeError(f"{self._name} is closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name)
            self._thread.start()
        self._jobs.put((job, done, loop))
        try:
            return await done
        except sqlite3.OperationalError as error:  # locked, disk full, I/O error: retry later
            raise BackendUnavailable(f"sqlite {self.path.name}: {error}") from error

    def _serve(self) -> None:
        """Until closed, or (never closed) once the interpreter exits and the queue is empty:
        like an executor's worker, a job begun is finished."""
        while True:
            try:
                item = self._jobs.get(timeout=_EXIT_CHECK)
            except queue.Empty:
                if threading.main_thread().is_alive():
                    continue
                return
            if item is None:
                return
            job, done, loop = item
            if done.cancelled():  # its waiter gave up before it began: as an executor would
                continue
            try:
                outcome: tuple[object, BaseException | None] = (self._call(job), None)
            except BaseException as error:  # the waiter gets it, whatever it is
                outcome = (None, error)
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(_settle, done, *outcome)

    def _call(self, job: Callable[[sqlite3.Connection], R]) -> R:
        if self._conn is None:
            self._conn = self._connect()
        return job(self._conn)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, factory=LockedConnection
        )
        conn.write_lock = os.open(f"{self.path}-lock", os.O_RDWR | os.O_CREAT, 0o600)
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
        self._closed = True
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()


_Job = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


def _settle(done: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if done.cancelled():
        return
    if error is None:
        done.set_result(result)
    else:
        done.set_exception(error)


class LockedConnection(sqlite3.Connection):
    """A connection that carries its database's writer lock file (closed with it)."""

    write_lock: int | None = None

    def close(self) -> None:
        super().close()
        if self.write_lock is not None:
            os.close(self.write_lock)
            self.write_lock = None


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    lock = getattr(conn, "write_lock", None)
    if lock is not None:
        fcntl.flock(lock, fcntl.LOCK_EX)  # releases the GIL while it waits
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]
