"""Sinks that give way to the intake on a shared machine.

`weathertweets stack` runs every service on one machine. While its gateways and ingest are busy
taking tweets in, the archiver and counter would only compete with them for the cores, and the
idle scheduling class alone does not stop that: each batch a sink takes also costs Kafka,
Redis and the archive's server, and the caches the gateways were using. So the stack tells
its sinks when the intake is busy (`SIGUSR1`, renewed while it stays busy) and when it is
not (`SIGUSR2`); in between a sink takes no new batch and the records wait in the broker.

The guarantees do not move: a tweet is acknowledged once the broker has it, whoever reads it
later. What moves is freshness under a full load, with two bounds: a busy signal lapses after
`LEASE` seconds unless renewed (a supervisor that died cannot hold the sinks), and after
`LONGEST` seconds of waiting a sink works for `RUN` seconds whatever it is told.

Both sides live here: `Deferral` in each sink process, `IntakeWatch` in the stack's supervisor
(which imports no asyncio: it stays small).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

BUSY = signal.SIGUSR1
FREE = signal.SIGUSR2
LEASE = 1.0
LONGEST = 5.0
RUN = 1.0
STEP = 0.05  # seconds between looks while waiting
RELEASE = 0.75  # busy until the intake's share falls below this fraction of the threshold


class Deferral:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._busy_until = 0.0
        self._waiting_since: float | None = None
        self._run_until = 0.0

    def busy(self) -> None:
        self._busy_until = self._clock() + LEASE

    def free(self) -> None:
        self._busy_until = 0.0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(BUSY, self.busy)
        loop.add_signal_handler(FREE, self.free)

    def pause(self) -> float:
        """Seconds to wait before taking the next batch; 0: take it now."""
        now = self._clock()
        if now >= self._busy_until or now < self._run_until:
            self._waiting_since = None
            return 0.0
        if self._waiting_since is None:
            self._waiting_since = now
        elif now - self._waiting_since >= LONGEST:
            self._waiting_since = None
            self._run_until = now + RUN
            return 0.0
        return min(STEP, self._busy_until - now)


def ignore_signals() -> None:
    """Before a process's loop takes the two signals and after it is gone: their default
    action would kill it (the stack signals ready sinks only, but a sink may stop by itself)."""
    for signum in (BUSY, FREE):
        signal.signal(signum, signal.SIG_IGN)


def machine_cores(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> float:
    """The CPUs this process may run on, or its cgroup's CPU quota (`cpu.max`) where lower."""
    cores = float(len(os.sched_getaffinity(0)))
    with contextlib.suppress(OSError, ValueError):
        with open(cpu_max) as limits:
            quota, period = limits.read().split()[:2]
        if quota != "max":
            cores = min(cores, int(quota) / int(period))
    return cores


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds a process has used (Linux's /proc); None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class IntakeWatch:
    """The supervisor's side: at each look, the share of the machine's cores the intake's
    processes used since the last one; from `share` on, the sinks are told to wait (again at
    every look, renewing the lease), and once it falls below RELEASE × `share`, to go on."""

    def __init__(
        self,
        share: float,
        cores: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[int], float | None] = cpu_seconds,
        send: Callable[[int, int], None] = os.kill,
    ) -> None:
        self.share, self.cores = share, cores
        self.busy = False
        self._clock, self._cpu, self._send = clock, cpu, send
        self._used: dict[int, float] = {}
        self._at: float | None = None

    def look(self, intake: Iterable[int], sinks: Iterable[int]) -> None:
        now = self._clock()
        used = {pid: seconds for pid in intake if (seconds := self._cpu(pid)) is not None}
        if self._at is not None and now > self._at:
            spent = sum(
                seconds - self._used[pid] for pid, seconds in used.items() if pid in self._used
            )
            load = spent / (now - self._at) / self.cores
            was = self.busy
            self.busy = load >= self.share * (RELEASE if was else 1.0)
            if self.busy or was:
                for pid in sinks:
                    with contextlib.suppress(ProcessLookupError):
                        self._send(pid, BUSY if self.busy else FREE)
        self._used, self._at = used, now
