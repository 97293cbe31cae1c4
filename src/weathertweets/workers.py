"""`--workers N`: N gateway processes sharing one HTTP port (SO_REUSEPORT), watched by their parent.

The kernel spreads new connections over the processes, so the gateway's work, the largest share
of a request, uses every core. Only the gateway is multiplied: the parent keeps running the
services that must run once (ingest, the archiver, the counter), and under `up` the workers
publish straight to the broker (the embedded one gives each worker a partition of its own, so
their commits never queue behind each other; or Kafka); under `serve gateway` they publish as
`WT_GATEWAY_PUBLISH` says. A worker that dies stops the parent, which exits non-zero for its
orchestrator to restart; a stop ends the workers first, so in-flight requests finish before the
consumers drain.

Each worker exports its own `/metrics`; a scrape through the shared port reaches one of them.
A worker whose parent is gone (killed without a chance to stop it) stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import urllib.request

from weathertweets.config import PARENT_PID, Settings

log = logging.getLogger("weathertweets")

STOP_TIMEOUT = 30.0


def worker_environment(settings: Settings, publish: str) -> dict[str, str]:
    worker = {"WT_WORKERS": "1", "WT_REUSE_PORT": "1", "WT_GATEWAY_PUBLISH": publish}
    worker[PARENT_PID] = str(os.getpid())
    return {**os.environ, **settings.environment(), **worker, "PYTHONUNBUFFERED": "1"}


async def stop_when_orphaned(stopping: asyncio.Event, every: float = 1.0) -> None:
    """In a worker: set `stopping` once the parent process is gone."""
    parent = int(os.environ.get(PARENT_PID) or os.getppid())
    while os.getppid() == parent:  # noqa: ASYNC110 - no event tells of a parent's death
        await asyncio.sleep(every)
    log.warning("the parent process %d is gone; stopping", parent)
    stopping.set()


def _ready(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
        return bool(response.status == 200)
    return False


class GatewayWorkers:
    def __init__(self, settings: Settings, count: int, publish: str) -> None:
        self._settings = settings
        self._count = count
        self._publish = publish
        self._processes: list[asyncio.subprocess.Process] = []
        self._stopping = False

    async def start(self) -> None:
        env = worker_environment(self._settings, self._publish)
        command = [sys.executable, "-m", "weathertweets.cli", "serve", "gateway"]
        for number in range(1, self._count + 1):
            own = {"WT_BROKER_PARTITION": str(number)} if self._publish == "broker" else {}
            process = await asyncio.create_subprocess_exec(  # own session: a Ctrl-C reaches
                *command,  # the parent only, which stops the workers first
                env={**env, **own},
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
            self._processes.append(process)
        await self._wait_ready()

    async def _wait_ready(self, timeout: float = 60) -> None:
        host = self._settings.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        host = f"[{host}]" if ":" in host else host
        url = f"http://{host}:{self._settings.port}/readyz"
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(_ready, url):
            if any(p.returncode is not None for p in self._processes):
                await self.stop()
                raise OSError("a gateway worker exited while starting (its log is above)")
            if time.monotonic() > deadline:
                await self.stop()
                raise OSError(f"the gateway workers were not ready within {timeout:.0f} s")
            await asyncio.sleep(0.2)

    async def watch(self, stopping: asyncio.Event) -> None:
        """Return when stopped; raise when a worker exits on its own (not while the process
        stops: a process manager may signal every process of the group at once)."""
        waits = {asyncio.ensure_future(p.wait()): p for p in self._processes}
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiting in pending:
            waiting.cancel()
        if self._stopping or stopping.is_set():
            return
        exited = waits[done.pop()]
        raise RuntimeError(f"gateway worker {exited.pid} exited with code {exited.returncode}")

    async def stop(self) -> None:
        self._stopping = True
        for process in self._processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT  # one deadline for all of them
        for process in self._processes:
            try:
                await asyncio.wait_for(process.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("gateway worker %d did not stop; killing it", process.pid)
                process.kill()
                await process.wait()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]
