"""Retention for the embedded broker's log: old records go, like Kafka's `retention.ms` and
`retention.bytes`, but never one a consumer group has yet to commit (unless told to).

The trim runs in small chunks on the broker's writer thread, so publishes and commits queue
between them instead of behind one long delete; the pages it frees go back to the file system
(`auto_vacuum = INCREMENTAL`, set on every new file). The newest record always stays: offsets
are row ids, and an empty table would hand out offset 1 again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from weathertweets.backends.sqlite import SqliteThread, transaction, vacuum
from weathertweets.metrics import BROKER_TRIMMED
from weathertweets.ports import BackendUnavailable

log = logging.getLogger("weathertweets.broker")

VACUUM_PAGES = 512  # pages given back per step: under the WAL's auto-checkpoint of 1 000


@dataclass(frozen=True)
class Retention:
    """`max_age_s`/`max_bytes`: 0 means no limit of that kind. `force`: trim past groups that
    have not committed (their records are lost to them)."""

    max_age_s: float = 24 * 3600
    max_bytes: int = 1 << 30
    force: bool = False
    interval_s: float = 30.0
    chunk: int = 5000

    @property
    def enabled(self) -> bool:
        return self.max_age_s > 0 or self.max_bytes > 0


@dataclass
class Trimmed:
    records: int = 0
    pages_freed: int = 0
    held_by: str | None = None  # the group whose uncommitted records stopped the trim


class LogTrimmer:
    def __init__(
        self,
        writer: SqliteThread,
        retention: Retention,
        open_groups: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        """`open_groups`: the groups consuming in this process, known before they commit."""
        self._writer = writer
        self.retention = retention
        self._open_groups = open_groups
        self._warned: str | None = None

    async def run(self) -> None:
        """Trim every `interval_s` until cancelled; a failed trim is retried next time."""
        while True:
            await asyncio.sleep(self.retention.interval_s)
            try:
                await self.trim()
            except BackendUnavailable as error:
                log.warning(
                    "broker retention: %s; retrying in %g s", error, self.retention.interval_s
                )
            except Exception:  # retention must outlive a bad pass; the log must not grow silently
                log.exception(
                    "broker retention failed; retrying in %g s", self.retention.interval_s
                )

    async def trim(self) -> Trimmed:
        result = Trimmed()
        while True:
            deleted, held_by = await self._writer.run(self._trim_chunk)
            result.records += deleted
            result.held_by = held_by
            if deleted < self.retention.chunk:
                break
        while (freed := await self._writer.run(_vacuum_step)) > 0:
            result.pages_freed += freed
        if result.records:
            BROKER_TRIMMED.inc(result.records)
            log.info("broker retention: trimmed %d records", result.records)
        self._warn(result.held_by)
        return result

    def _warn(self, group: str | None) -> None:
        if group is not None and group != self._warned:
            log.warning(
                "broker retention: group %r has not committed older records of %s, so they stay"
                " (WT_BROKER_RETENTION_FORCE=1 trims them anyway)",
                group,
                self._writer.path.name,
            )
        self._warned = group

    def _trim_chunk(self, conn: sqlite3.Connection) -> tuple[int, str | None]:
        """Delete up to `chunk` of the oldest records past retention: (deleted, held by).
        The groups' positions are read in the deleting transaction: no commit slips between."""
        with transaction(conn):
            rows = conn.execute(
                "SELECT offset, at_ms FROM log ORDER BY offset LIMIT ?", (self.retention.chunk,)
            ).fetchall()
            newest = conn.execute("SELECT max(offset) FROM log").fetchone()[0]  # from the edge
            cut = self._cut(conn, rows, newest) if rows else None
            if cut is None:
                return 0, None
            held_by = None
            if not self.retention.force:
                positions = dict(conn.execute("SELECT grp, next_offset FROM positions"))
                for group in self._open_groups():
                    positions.setdefault(group, 1)  # open, nothing committed yet
                slowest = min(positions.items(), key=lambda gp: gp[1], default=None)
                committed_below = slowest[1] if slowest else rows[0][0]  # every group is past
                if cut >= committed_below:
                    cut = committed_below - 1
                    held_by = slowest[0] if slowest else "(no group yet)"
            if cut < rows[0][0]:
                return 0, held_by
            deleted = conn.execute("DELETE FROM log WHERE offset <= ?", (cut,)).rowcount
        return int(deleted), held_by

    def _cut(
        self, conn: sqlite3.Connection, rows: list[tuple[int, int | None]], newest: int
    ) -> int | None:
        """The last offset of `rows` retention would delete (never `newest`), or None."""
        over_size = self.retention.max_bytes > 0 and _data_bytes(conn) > self.retention.max_bytes
        oldest_kept_ms = None
        if self.retention.max_age_s > 0:
            oldest_kept_ms = int((time.time() - self.retention.max_age_s) * 1000)
        cut = None
        for offset, at_ms in rows:
            too_old = oldest_kept_ms is not None and (at_ms is None or at_ms < oldest_kept_ms)
            if offset >= newest or not (too_old or over_size):
                break
            cut = offset
        return cut


def _data_bytes(conn: sqlite3.Connection) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def _vacuum_step(conn: sqlite3.Connection) -> int:
    """Give up to VACUUM_PAGES free pages back to the file system; how many went."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        return 0  # a file from before incremental vacuum: its free pages are reused instead
    before = conn.execute("PRAGMA freelist_count").fetchone()[0]
    if not before:
        return 0
    vacuum(conn, VACUUM_PAGES)
    after = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int(before - after)
