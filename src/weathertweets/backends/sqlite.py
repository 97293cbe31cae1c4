"""One SQLite connection driven from one worker thread, so the event loop never blocks on disk.

Writers queue on a lock file beside the database (`<file>-lock`, flock) before SQLite's own
write lock: several processes append to one file (the gateway workers of `up --workers N`), and
SQLite's busy handler, once it finds the database locked, sleeps 1, 2, 5 … 100 ms between
looks, far longer than a write holds it. A writer waiting for the lock file looks again
within a millisecond, and gives up after LOCK_WAIT with SQLite's own "database is locked"
(503 to a client, as before); the kernel releases the lock of a process that dies. Writers
that do not take it (the sqlite3 shell) still meet SQLite's lock and its busy timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from weathertweets.ports import BackendUnavailable

R = TypeVar("R")
_EXIT_CHECK = 1.0  # seconds between looks at whether the interpreter is exiting
LOCK_WAIT = 10.0  # seconds a writer waits for the lock file (SQLite's busy timeout is the same)


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
        finally:
            del done  # a failure's traceback holds this frame: it must not hold the failure

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
        try:
            try:
                conn.write_lock = os.open(f"{self.path}-lock", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:  # as SQLite reports a file it cannot open: retry later
                raise sqlite3.OperationalError(f"lock file: {error}") from error
            conn.execute(f"PRAGMA busy_timeout = {int(LOCK_WAIT * 1000)}")
            # Takes effect on a new file only: deleted rows' pages can go back to the file system.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit is on disk before we acknowledge anything that depends on it.
            conn.execute("PRAGMA synchronous = FULL")
            with transaction(conn):
                for statement in _statements(self._schema):
                    conn.execute(statement)
        except BaseException:
            conn.close()  # and its lock file: a failed open is retried at the next job
            raise
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
        try:
            super().close()
        finally:
            if self.write_lock is not None:
                os.close(self.write_lock)
                self.write_lock = None


@contextmanager
def writer_lock(conn: sqlite3.Connection) -> Iterator[None]:
    """Hold the database's lock file (a connection without one: nothing to hold)."""
    lock = getattr(conn, "write_lock", None)
    if lock is None:
        yield
        return
    pause, deadline = 0.0001, time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError("database is locked") from None
            time.sleep(pause)  # without the GIL; the holder's write takes about a millisecond
            pause = min(pause * 2, 0.001)
    try:
        yield
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    with writer_lock(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def vacuum(conn: sqlite3.Connection, pages: int = 0) -> None:
    """Give up to `pages` free pages (0: all) back to the file system, under the writers' lock.
    As a script: `execute` steps this pragma once, and each step frees a single page."""
    with writer_lock(conn):
        try:
            conn.executescript(f"BEGIN IMMEDIATE; PRAGMA incremental_vacuum({pages}); COMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]
