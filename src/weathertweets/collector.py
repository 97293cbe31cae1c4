"""How the services use Python's cyclic garbage collector.

The request and consume paths make no reference cycles (tests/test_gc.py holds them to it), so
the collector's passes only cost time there: at Python's default (a pass every 700 net
allocations) they took 12 % of a gateway worker's CPU at 1 024 connections (docs/benchmarks.md).
A service freezes what its imports made (and again what starting its services made), runs the
collector's passes rarely, and makes a full pass every second on its event loop:
whatever does make a cycle (a failure path nobody audited, a library's) is freed within about
a second, not after 50 000 allocations. A full pass then walks only what is in flight: 2 ms
at 256 connections, 8 ms at 1 024 in an edge gateway worker.
"""

from __future__ import annotations

import asyncio
import gc

THRESHOLDS = (50_000, 20, 20)
FULL_PASS_EVERY = 1.0  # seconds


_quiet = False


def quiet() -> None:
    """For a service's process, once its imports are done."""
    global _quiet
    _quiet = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


def started() -> None:
    """Once the services started (on their event loop): what they made to start (clients,
    servers, the modules they imported on the way) leaves the passes too, and from then on a
    full pass runs every second, on the loop, where the finalizers of its objects expect to
    run. Nothing in a process that is not `quiet` (a test's)."""
    if not _quiet:
        return
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()

    def full_pass() -> None:
        gc.collect()
        loop.call_later(FULL_PASS_EVERY, full_pass)

    loop.call_later(FULL_PASS_EVERY, full_pass)


def drop_tracebacks(error: BaseException) -> None:
    """Let go of the frames an error crossed, and its causes' and contexts': once it is
    answered they only keep memory alive, and they can hold the error again (a failed future
    the request waited on, a call's state), which makes a cycle."""
    chain, seen = [error], set()
    while chain:
        link = chain.pop()
        if id(link) not in seen:
            seen.add(id(link))
            link.__traceback__ = None
            chain += [e for e in (link.__cause__, link.__context__) if e is not None]
